"""How a state key becomes a name the Azure services accept: one escaping scheme for blob, table and Cosmos.

Bot state keys are free text (``"{channel}/conversations/{conversation id}"``), but each service forbids some
characters and limits the length:

* Azure Table ``PartitionKey`` / ``RowKey``: no ``/ \\ # ?`` and no control characters (U+0000-U+001F,
  U+007F-U+009F), at most 1 KiB. ``%`` and ``'`` are allowed but break point operations on some service and
  emulator versions (they travel inside the entity's URL), so they are escaped too.
* Blob names: at most 1024 characters and 254 path segments; no segment may end with a dot, the name must not
  end with a dot or a slash, and empty segments confuse tools.
* Cosmos DB ids: no ``/ \\ ? #``; 255 characters for compatibility with older containers; an id of only dots
  would be read as a path step in the item's URL.

The scheme
----------
A character that is not allowed is written as ``*`` followed by two lowercase hex digits of its code point
(``/`` -> ``*2f``, tab -> ``*09``); ``*`` itself is always escaped (``*2a``), so every ``*`` in a name starts a
three-character escape and a name can be turned back into its key without ambiguity (tests/hosting/test_keys.py
does that for every name it checks). Different keys never share a name.

A name that would still be too long is cut to fit and ends with ``*h`` and the sha256 of the full key in hex
(``*h`` is never produced by escaping, so a shortened name cannot equal any other key's name, and two shortened
names differ unless sha256 collides). Shortened names cannot be reversed; they do not need to be, because every
backend stores the original key next to the data (``realId``) and reads records by name.

Lengths are counted in UTF-16 code units, the unit the services count in; a key is refused (``ValueError``)
only if it is not valid Unicode text (a lone surrogate).

Compatibility with botbuilder-azure
-----------------------------------
* Cosmos DB: JS/.NET ``CosmosDbKeyEscape`` writes ``*`` + hex for ``\\ ? / # * \\t \\n \\r``. For keys whose
  escaped characters are among ``\\ ? / # *`` (all ordinary bot keys: ``/`` is the only one they contain) and
  that fit in 255 characters, :func:`escape_cosmos_key` gives the same id (``emulator*2fusers*2fu1``). Tab,
  newline and CR differ (we always write two digits: ``*09``, theirs ``*9``), and so do shortened ids (theirs
  end with a bare sha256 of the escaped key, which another key can imitate). Python botbuilder-azure 4.x writes
  decimal code points (``/`` -> ``*47``), a scheme that is not reversible (``"\\t2"`` and ``"\\\\"`` both give
  ``*92``), so its ids are not reproduced.
* Blob: Python botbuilder-azure ``BlobStorage`` names each blob with the raw key (the SDK percent-encodes it
  only in the request URL). :func:`escape_blob_name` keeps ``/`` between non-empty segments, so ordinary keys
  get exactly the same blob name (``emulator/users/u1``). botbuilder-js names blobs with the percent-encoded
  key (``emulator%2Fusers%2Fu1``), which we do not reproduce.
* Table: botbuilder-js ``TableStorage`` escapes with ``%`` + hex, does not escape ``%`` (so two keys can share a
  name) and spreads one record over several rows; our table layout is different (see ``hosting.storage.table``).
"""

from __future__ import annotations

import hashlib

ESCAPE_CHAR = "*"
HASH_MARKER = ESCAPE_CHAR + "h"

TABLE_KEY_MAX_UNITS = 512  # 1 KiB of UTF-16
BLOB_NAME_MAX_UNITS = 1024
BLOB_NAME_MAX_SEGMENTS = 254
COSMOS_ID_MAX_UNITS = 255

_CONTROL_CHARACTERS = frozenset(chr(code) for code in [*range(0x00, 0x20), *range(0x7F, 0xA0)])
#: Escaped everywhere: the escape character, what Table and Cosmos forbid, and control characters.
RESERVED = frozenset({ESCAPE_CHAR, "/", "\\", "?", "#"}) | _CONTROL_CHARACTERS
#: Escaped in table keys on top of RESERVED.
TABLE_RESERVED = RESERVED | {"%", "'"}


def _check(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError(f"storage keys must be non-empty strings, got {key!r}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"storage key {key!r} is not valid Unicode text: {err.reason}") from err


def _escape_char(char: str) -> str:
    return f"{ESCAPE_CHAR}{ord(char):02x}"


def _escape(text: str, reserved: frozenset[str]) -> str:
    return "".join(_escape_char(char) if char in reserved else char for char in text)


def utf16_units(text: str) -> int:
    """Length in UTF-16 code units (what Azure services count)."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def _fit(key: str, escaped: str, max_units: int) -> str:
    """``escaped`` if it fits in ``max_units``, else a prefix of it plus ``*h`` and the sha256 of ``key``."""
    if utf16_units(escaped) <= max_units:
        return escaped
    suffix = HASH_MARKER + hashlib.sha256(key.encode("utf-8")).hexdigest()
    budget = max_units - len(suffix)
    end = used = 0
    for char in escaped:
        size = 2 if ord(char) > 0xFFFF else 1
        if used + size > budget:
            break
        used += size
        end += 1
    prefix = escaped[:end]
    # Do not leave half an escape ("*" or "*2") in front of the marker.
    if prefix.endswith(ESCAPE_CHAR):
        prefix = prefix[:-1]
    elif len(prefix) >= 2 and prefix[-2] == ESCAPE_CHAR:
        prefix = prefix[:-2]
    return prefix + suffix


def escape_table_key(key: str) -> str:
    """The PartitionKey / RowKey for ``key``: escaped, at most 1 KiB."""
    _check(key)
    return _fit(key, _escape(key, TABLE_RESERVED), TABLE_KEY_MAX_UNITS)


def escape_cosmos_key(key: str) -> str:
    """The Cosmos DB item id for ``key``: no ``/ \\ ? #``, at most 255 characters."""
    _check(key)
    escaped = _escape(key, RESERVED)
    if not escaped.strip("."):
        # "." and ".." would be read as path steps in the item's URL.
        escaped = escaped[:-1] + _escape_char(".")
    return _fit(key, escaped, COSMOS_ID_MAX_UNITS)


def escape_blob_name(key: str) -> str:
    """The blob name for ``key``: readable paths, valid for Azure, at most 1024 characters.

    ``/`` stays a path separator where it separates two non-empty segments (up to 254 segments); a leading,
    trailing or doubled ``/`` is escaped, and so is a dot that ends a segment.
    """
    _check(key)
    segments = key.split("/")
    parts: list[str] = []
    separators = 0
    for index, segment in enumerate(segments):
        text = _escape(segment, RESERVED)
        if text.endswith("."):
            text = text[:-1] + _escape_char(".")
        if index > 0:
            keep = bool(segments[index - 1]) and bool(segment) and separators < BLOB_NAME_MAX_SEGMENTS - 1
            separators += keep
            parts.append("/" if keep else _escape_char("/"))
        parts.append(text)
    return _fit(key, "".join(parts), BLOB_NAME_MAX_UNITS)
