"""The user's profile. Lives in UserState, so every conversation of the same user on a channel shares it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _fields
from .migrations import MIGRATIONS, stored_version, upgrade

SCHEMA_VERSION = 1


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
        if content_type is None or url is None:
            return None
        return cls(content_type=content_type, url=url, name=_fields.text(data, "name"))


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
