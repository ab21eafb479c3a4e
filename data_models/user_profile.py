"""The user's profile. Lives in UserState, so every conversation of the same user on a channel shares it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import _fields
from .migrations import MIGRATIONS, stored_version, upgrade

SCHEMA_VERSION = 1
PICTURE_TYPES = ("image/jpeg", "image/png")
#: The longest link to a picture the profile keeps, and the longest picture sent inline as a ``data:`` URL
#: (base64: 64 KiB of text is a picture of about 48 KB). Every conversation's draft may hold one, and ``export``
#: sends them all back, so they are kept small.
MAX_PICTURE_LINK_CHARS = 2048
MAX_PICTURE_DATA_CHARS = 64 * 1024
MAX_PICTURE_NAME_CHARS = 100
_LOOPBACK_HOSTS = ("localhost", "::1")
_DATA_URL = re.compile(r"data:(image/(?:png|jpeg));base64,[A-Za-z0-9+/]*={0,2}")


def picture_url_problem(content_type: str, url: str) -> str | None:
    """Why a picture at ``url`` cannot be kept, or None: an https link (http only on this machine: the Emulator's
    and ``make chat``'s uploads) of at most ``MAX_PICTURE_LINK_CHARS``, or a base64 ``data:`` URL of the same
    image type of at most ``MAX_PICTURE_DATA_CHARS``."""
    if content_type not in PICTURE_TYPES:
        return "it is not a JPEG or PNG picture"
    if url.startswith("data:"):
        if len(url) > MAX_PICTURE_DATA_CHARS:
            return f"it is {len(url) * 3 // 4 // 1024} KB, and an uploaded picture can be at most 48 KB"
        match = _DATA_URL.fullmatch(url)
        if match is None or match.group(1) != content_type:
            return "its data is not a base64 JPEG or PNG picture"
        return None
    if len(url) > MAX_PICTURE_LINK_CHARS:
        return f"its link is longer than {MAX_PICTURE_LINK_CHARS} characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "its link is not a valid URL"
    if not url.isascii() or any(char.isspace() for char in url):
        return "its link is not a plain URL"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and (host in _LOOPBACK_HOSTS or host.startswith("127.")):
        return None
    return "its link must be an https:// address"


@dataclass(frozen=True, slots=True)
class Picture:
    """A reference to the picture the user sent (the channel hosts the bytes; we keep where to find them)."""

    content_type: str
    url: str
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"content_type": self.content_type, "url": self.url, "name": self.name}

    @classmethod
    def from_dict(cls, data: object) -> Picture | None:
        if not isinstance(data, Mapping):
            return None
        content_type, url = _fields.text(data, "content_type"), _fields.text(data, "url")
        if content_type is None or url is None or picture_url_problem(content_type, url):
            return None
        name = _fields.text(data, "name")
        return cls(
            content_type=content_type, url=url, name=name if name and len(name) <= MAX_PICTURE_NAME_CHARS else None
        )


@dataclass(frozen=True, slots=True)
class UserProfile:
    name: str | None = None
    transport: str | None = None
    age: int | None = None
    picture: Picture | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "transport": self.transport,
            "age": self.age,
            "picture": self.picture.to_dict() if self.picture else None,
        }

    @classmethod
    def from_dict(cls, data: object) -> UserProfile:
        """Load any version of a stored profile; unknown fields are ignored, missing ones get defaults."""
        if not isinstance(data, Mapping):
            return cls()
        if stored_version(data) < SCHEMA_VERSION:
            data = upgrade(data, SCHEMA_VERSION, MIGRATIONS)
        return cls(
            name=_fields.text(data, "name"),
            transport=_fields.text(data, "transport"),
            age=_fields.whole_number(data, "age"),
            picture=Picture.from_dict(data.get("picture")),
        )

    @property
    def is_empty(self) -> bool:
        return self == UserProfile()
