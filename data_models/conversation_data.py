"""What the bot keeps about a conversation and about each member in it.

``ConversationData`` lives in ConversationState: it belongs to the conversation, shared by everyone in it.
``MemberData`` lives in PrivateConversationState (keyed by conversation *and* user): in a group, what the bot is
waiting for from one member (their name) must not be answered by another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _fields

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class ConversationData:
    message_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "message_count": self.message_count}

    @classmethod
    def from_dict(cls, data: object) -> ConversationData:
        """Load any version of stored conversation data; unknown fields are ignored, missing ones defaulted."""
        if not isinstance(data, Mapping):
            return cls()
        count = _fields.whole_number(data, "message_count", 0) or 0
        return cls(message_count=max(count, 0))


@dataclass(frozen=True, slots=True)
class MemberData:
    asked_for_name: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "asked_for_name": self.asked_for_name}

    @classmethod
    def from_dict(cls, data: object) -> MemberData:
        if not isinstance(data, Mapping):
            return cls()
        return cls(asked_for_name=_fields.flag(data, "asked_for_name"))
