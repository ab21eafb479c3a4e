"""The conversations a user took part in, kept in the user's own record so that ``forget`` and ``export`` can
find their state in every conversation, not only the current one.

Lives in UserState next to the profile, so it is written in the same turn, with the same e_tag, as anything
else about the user: there is no second index that could drift. It is bounded (``MAX_CONVERSATIONS``, the most
recently added kept), and each entry says whether the conversation is a group, because ``forget`` deletes a
one-to-one conversation's record but only the member's part of a group's.

When a conversation is added (``bots.state_bot``): on the turn the bot first keeps something the user gave in it
(a profile, a name, an answer in a dialog in progress), or on the first turn in it once the user has a record.
A stranger who only said hello gets no user record at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _fields

SCHEMA_VERSION = 1
MAX_CONVERSATIONS = 200


@dataclass(frozen=True, slots=True)
class KnownConversation:
    id: str
    group: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "group": self.group}

    @classmethod
    def from_dict(cls, data: object) -> KnownConversation | None:
        if not isinstance(data, Mapping):
            return None
        conversation_id = _fields.text(data, "id")
        return None if conversation_id is None else cls(conversation_id, _fields.flag(data, "group"))


@dataclass(frozen=True, slots=True)
class ConversationIndex:
    conversations: tuple[KnownConversation, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "conversations": [c.to_dict() for c in self.conversations]}

    @classmethod
    def from_dict(cls, data: object) -> ConversationIndex:
        if not isinstance(data, Mapping) or not isinstance(data.get("conversations"), list):
            return cls()
        entries = (KnownConversation.from_dict(item) for item in data["conversations"])
        return cls(tuple(entry for entry in entries if entry is not None))

    def __contains__(self, conversation_id: object) -> bool:
        return any(entry.id == conversation_id for entry in self.conversations)

    def with_conversation(self, conversation: KnownConversation) -> ConversationIndex:
        """This index with ``conversation`` added (the oldest entries dropped beyond ``MAX_CONVERSATIONS``)."""
        kept = tuple(entry for entry in self.conversations if entry.id != conversation.id)
        return ConversationIndex((*kept, conversation)[-MAX_CONVERSATIONS:])
