"""What turns and requests may say in the log: shortened ids, never message text or secrets."""

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
