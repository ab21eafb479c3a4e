"""Typed access to the models inside UserState / ConversationState.

State holds the models' ``to_dict()`` form, so what is stored is plain JSON. ``get`` returns a fresh model and
``set`` stores it back: changing a model changes nothing in state until it is set, which keeps every write
visible in the code that makes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, Self

from botbuilder.core import BotState, TurnContext

from . import conversation_data, conversation_index, user_profile
from .migrations import newer_than_code

# Property names are part of the stored format: renaming one orphans every saved record.
USER_PROFILE_PROPERTY = "UserProfile"
CONVERSATION_DATA_PROPERTY = "ConversationData"
MEMBER_DATA_PROPERTY = "MemberData"
DIALOG_STATE_PROPERTY = "DialogState"
CONVERSATION_INDEX_PROPERTY = "Conversations"

# The schema version this code writes for each model property; a stored one above it is never rewritten.
SCHEMA_VERSIONS = {
    USER_PROFILE_PROPERTY: user_profile.SCHEMA_VERSION,
    CONVERSATION_INDEX_PROPERTY: conversation_index.SCHEMA_VERSION,
    CONVERSATION_DATA_PROPERTY: conversation_data.SCHEMA_VERSION,
    MEMBER_DATA_PROPERTY: conversation_data.SCHEMA_VERSION,
}


def newer_properties(record: Mapping[str, Any]) -> list[str]:
    """The model properties of a stored state record that a newer version of the code wrote."""
    return [name for name, version in SCHEMA_VERSIONS.items() if newer_than_code(record.get(name), version)]


class Model(Protocol):
    def to_dict(self) -> dict: ...

    @classmethod
    def from_dict(cls, data: object) -> Self: ...


class ModelProperty[M: Model]:
    """A state property that stores one model."""

    def __init__(self, state: BotState, name: str, model: type[M]) -> None:
        self._accessor = state.create_property(name)
        self._model = model

    async def get(self, turn_context: TurnContext) -> M:
        return self._model.from_dict(await self._accessor.get(turn_context))

    async def set(self, turn_context: TurnContext, value: M) -> None:
        await self._accessor.set(turn_context, value.to_dict())
