"""Everything the bot keeps about one user, across conversations: the index, ``forget`` and ``export``.

What is stored about a user on a channel:

* their UserState record: the profile and the index of their conversations (``data_models.conversation_index``);
* in each conversation, their PrivateConversationState record (a dialog in progress with its draft answers, and
  whether the bot asked their name);
* in a one-to-one conversation, also the ConversationState record (the message counter), which is theirs alone.
  A group's counter belongs to the group and is neither exported nor deleted;
* the copies of any of these records that were damaged and moved aside (``hosting.damaged_key``).

The index is kept as part of the turn (the same write as the profile), and only once there is something to keep
(see ``remember_conversation``). ``forget`` deletes every record above with the turn's own write (``delete`` on
the states, ``hosting.delete_with_turn`` for other conversations' records), each only if it did not change since
``forget`` read it: if the user meanwhile started a conversation elsewhere (which adds it to the index in their
record), the turn runs again with the new index instead of leaving that conversation's records behind. A dialog
in progress in another conversation therefore ends: its next turn finds no stack and no draft. ``export`` is
bounded (``MAX_EXPORT_BYTES``): past it, conversations are listed by id only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from botbuilder.core import TurnContext

from data_models import ConversationIndex, KnownConversation, UserProfile
from data_models.accessors import (
    CONVERSATION_INDEX_PROPERTY,
    DIALOG_STATE_PROPERTY,
    ModelProperty,
    newer_properties,
)
from hosting import ConversationState, PrivateConversationState, UserState, damaged_key, delete_with_turn, plain_json

logger = logging.getLogger(__name__)

# Bookkeeping fields a store adds to a record; not the user's data.
_STORE_FIELDS = frozenset({"e_tag"})
#: The most an export file holds, in bytes of JSON; conversations past it are listed by id only.
MAX_EXPORT_BYTES = 128 * 1024
#: Where a record's damaged copy is listed in an export, by which of the user's records it was.
_DAMAGED_LABELS = ("your user record", "your part of a conversation", "a one-to-one conversation")


class RecordReader(Protocol):
    """Reads records outside the turn's own states (other conversations', damaged copies): ``StateStorage``."""

    async def read(self, keys: list[str]) -> dict[str, dict[str, Any]]: ...

    async def read_damaged(self, keys: list[str]) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What ``forget`` removed, as the reply states it."""

    profile: bool
    conversations: int
    damaged_copies: int = 0

    def __str__(self) -> str:
        parts = ["your profile"] if self.profile else []
        if self.conversations:
            plural = "" if self.conversations == 1 else "s"
            parts.append(f"your state in {self.conversations} conversation{plural}")
        if self.damaged_copies:
            plural = "y" if self.damaged_copies == 1 else "ies"
            parts.append(f"{self.damaged_copies} damaged cop{plural} set aside earlier")
        return " and ".join(parts) or "nothing was stored"


class UserData:
    """The user's records in every conversation, found through the index in their UserState record."""

    def __init__(
        self,
        user_state: UserState,
        conversation_state: ConversationState,
        private_state: PrivateConversationState,
        profile: ModelProperty[UserProfile],
        read: RecordReader,
    ) -> None:
        """``read`` reads records outside the turn's own states (other conversations', damaged copies)."""
        self._user_state = user_state
        self._conversation_state = conversation_state
        self._private_state = private_state
        self._profile = profile
        self._index = ModelProperty(user_state, CONVERSATION_INDEX_PROPERTY, ConversationIndex)
        self._read = read

    def newer_than_code(self, turn_context: TurnContext) -> list[str]:
        """The properties of this turn's records that a newer version of the bot wrote (never to be rewritten)."""
        found: list[str] = []
        for state in (self._user_state, self._conversation_state, self._private_state):
            found += newer_properties(state.get(turn_context))
        return found

    async def remember_conversation(self, turn_context: TurnContext) -> None:
        """Add this conversation to the user's index when the bot keeps something of theirs in it.

        That is: the user has a record already (a profile), or a dialog of theirs is in progress here (its
        answers are theirs). A stranger who only said hello is not given a user record for it: the counter and
        the "asked for your name" flag of such a conversation hold nothing the user gave, and expire.
        """
        if self._user_state.is_deleted(turn_context):
            return
        conversation = turn_context.activity.conversation
        index = await self._index.get(turn_context)
        if conversation.id in index:
            return
        has_profile = not (await self._profile.get(turn_context)).is_empty
        dialog = self._private_state.get(turn_context).get(DIALOG_STATE_PROPERTY)
        in_dialog = bool(getattr(dialog, "dialog_stack", None))
        if has_profile or in_dialog:
            entry = KnownConversation(conversation.id, bool(conversation.is_group))
            await self._index.set(turn_context, index.with_conversation(entry))

    async def forget(self, turn_context: TurnContext) -> Forgotten:
        """Mark every record about the user on this channel for deletion by the turn's write.

        Other conversations' records are read first, and each is deleted only if it is still what was read (one
        that was absent: whatever is there by then); the turn's own records likewise (the states' ``delete``). A
        record that cannot be decoded makes the read fail: the pipeline moves it aside and runs the turn again,
        which then deletes the damaged copy with the rest.
        """
        profile = not (await self._profile.get(turn_context)).is_empty
        conversations = await self._conversations(turn_context)
        here = turn_context.activity.conversation.id
        others = [
            key
            for entry in conversations
            if entry.id != here
            for key in self._keys_in(turn_context, entry)
            if key is not None
        ]
        records = await self._read.read(others) if others else {}
        own = self._own_keys(turn_context)
        damaged = await self._read.read_damaged([*own, *others])
        await self._user_state.delete(turn_context)
        await self._private_state.delete(turn_context)
        if not turn_context.activity.conversation.is_group:
            await self._conversation_state.delete(turn_context)
        delete_with_turn(turn_context, {key: (records.get(key) or {}).get("e_tag") or "*" for key in others})
        delete_with_turn(turn_context, {damaged_key(key): "*" for key in damaged})
        logger.debug("erasing a user's records in %d conversations", len(conversations))
        return Forgotten(profile, len(conversations), len(damaged))

    async def export(self, turn_context: TurnContext) -> dict[str, Any]:
        """Everything stored about the user on this channel, as plain JSON (this turn's changes included)."""
        conversations = await self._conversations(turn_context)
        current = turn_context.activity.conversation.id
        keys = {entry.id: self._keys_in(turn_context, entry) for entry in conversations if entry.id != current}
        wanted = [key for pair in keys.values() for key in pair if key is not None]
        records = await self._read.read(wanted) if wanted else {}
        own = self._own_keys(turn_context)
        damaged = await self._read.read_damaged([*own, *wanted])
        budget = MAX_EXPORT_BYTES
        listed = []
        for entry in conversations:
            if entry.id == current:
                mine = self._private_state.get(turn_context)
                shared = self._conversation_state.get(turn_context)
            else:
                private_key, conversation_key = keys[entry.id]
                mine = records.get(private_key) or {}
                shared = records.get(conversation_key or "") or {}
            item: dict[str, Any] = {"id": entry.id, "group": entry.group, "yours_in_it": _as_plain_json(mine)}
            if not entry.group:
                item["conversation"] = _as_plain_json(shared)
            size = _size(item)
            if size > budget:
                item = {"id": entry.id, "group": entry.group, "omitted": "too large to fit in this file"}
                size = _size(item)
            budget -= size
            listed.append(item)
        user_record = {
            key: value
            for key, value in self._user_state.get(turn_context).items()
            if key != CONVERSATION_INDEX_PROPERTY
        }
        kinds = dict(zip(own, _DAMAGED_LABELS, strict=False))
        damaged_copies = []
        for key, text in damaged.items():
            kept = text[: max(0, budget)]
            budget -= _size(kept)
            damaged_copies.append({"of": kinds.get(key, "your part of another conversation"), "stored_text": kept})
        return {
            "exported_at": datetime.now(UTC).isoformat(),
            "channel": turn_context.activity.channel_id,
            "user_id": turn_context.activity.from_property.id,
            "user_record": _as_plain_json(user_record),
            "conversations": listed,
            "damaged_copies": damaged_copies,
        }

    def _own_keys(self, turn_context: TurnContext) -> list[str]:
        """This turn's records of the user: their user record, their part of this conversation, and this
        conversation's own record when it is one-to-one."""
        keys = [
            self._user_state.get_storage_key(turn_context),
            self._private_state.get_storage_key(turn_context),
        ]
        if not turn_context.activity.conversation.is_group:
            keys.append(self._conversation_state.get_storage_key(turn_context))
        return keys

    def _keys_in(self, turn_context: TurnContext, entry: KnownConversation) -> tuple[str, str | None]:
        """The user's record in a conversation, and the conversation's own record when it is one-to-one."""
        private_key = self._private_state.key_in(turn_context, entry.id)
        if entry.group:
            return private_key, None
        return private_key, self._conversation_state.key_in(turn_context, entry.id)

    async def _conversations(self, turn_context: TurnContext) -> list[KnownConversation]:
        """The indexed conversations, and this one (it holds at least this turn's state) first."""
        conversation = turn_context.activity.conversation
        here = KnownConversation(conversation.id, bool(conversation.is_group))
        index = await self._index.get(turn_context)
        return [here, *(entry for entry in index.conversations if entry.id != here.id)]


def _size(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def _as_plain_json(record: dict[str, Any] | None) -> dict[str, Any]:
    """A state record as plain JSON (dialog objects in their stored, tagged form), without store bookkeeping."""
    if not record:
        return {}
    document = {key: value for key, value in record.items() if key not in _STORE_FIELDS}
    return plain_json(document)
