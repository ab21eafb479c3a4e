"""Typed access to the models inside UserState / ConversationState.

State holds the models' ``to_dict()`` form, so what is stored is plain JSON. ``get`` returns a fresh model and
``set`` stores it back: changing a model changes nothing in state until it is set, which keeps every write
visible in the code that makes it.
"""

from __future__ import annotations

from typing import Protocol, Self

from botbuilder.core import BotState, TurnContext

# Property names are part of the stored format: renaming one orphans every saved record.
USER_PROFILE_PROPERTY = "UserProfile"
CONVERSATION_DATA_PROPERTY = "ConversationData"
MEMBER_DATA_PROPERTY = "MemberData"
DIALOG_STATE_PROPERTY = "DialogState"


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
