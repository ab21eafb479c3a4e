"""What turns and requests may say in the log: shortened ids, never message text or secrets.

Whatever a request chose (ids, the activity type, the path, an error quoting its serviceUrl) goes through
``short_id`` or ``log_text`` before it reaches a log line: escaped to one printable line and cut.
"""

from __future__ import annotations

import hashlib

SHORT_ID_LENGTH = 12


def short_id(identifier: object) -> str:
    """An id as it may appear in a log line: printable, at most ~24 characters, still telling ids apart.

    Ids are chosen by whoever sends the request (a 60 KB conversation id, control characters, lone surrogates),
    so they are never logged whole: long or odd ones become their first characters plus a short hash.
    """
    text = str(identifier)
    safe = "".join(char if char.isprintable() and not 0xD800 <= ord(char) <= 0xDFFF else "?" for char in text)
    if safe == text and len(text) <= 2 * SHORT_ID_LENGTH:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe[:SHORT_ID_LENGTH]}…{digest}"


LOG_TEXT_LIMIT = 200


def log_text(value: object, limit: int = LOG_TEXT_LIMIT) -> str:
    """Text a request chose (an activity type, a path, an error that quotes a URL) as it may appear in a log line.

    One line whatever it holds: a character that is not printable (newline, carriage return, escape, a lone
    surrogate, U+2028) is written as its code (``\\x0a``, ``\\u2028``), so it can neither end the line nor start a
    forged one; past ``limit`` characters the text is cut and ends with "…".
    """
    text = str(value)
    if text.isprintable() and len(text) <= limit:  # lone surrogates are not printable either
        return text
    escaped = "".join(char if char.isprintable() else _code(char) for char in text)
    return escaped if len(escaped) <= limit else f"{escaped[:limit]}…"


def _code(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
