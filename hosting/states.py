"""The states a bot keeps, loaded and saved with its turn: ``UserState``, ``ConversationState``,
``PrivateConversationState``, and ``TurnStates``, which reads all of a turn's records in one storage call and
writes them in one.

The three classes are botbuilder's, with what a turn pipeline needs: a bot creates and uses them exactly as the
SDK documents (``UserState(storage)``, ``create_property``, ``get``/``set`` through accessors), and

* ``load`` does nothing for a record the pipeline already loaded (the SDK's re-reads every empty record, and
  caches the re-read as *changed*, so every stranger's turn would write an empty user record);
* ``save_changes`` does nothing inside a turn: the pipeline saves every state at the end of the turn, in one write,
  before any reply leaves;
* ``delete`` does not delete at once (the SDK deletes before the turn is known to succeed): the record is deleted
  by the turn's write, and only if it did not change since the turn read it;
* keys escape ``/`` in ids (``hosting.state_keys``), so no id can name another user's record;
* change detection compares the stored JSON form (the SDK hashes with jsonpickle, a few percent of a turn's CPU).

``delete_with_turn`` deletes records outside the turn's own states (another conversation's) the same way, and
``hold`` saves nothing of a turn at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from botbuilder.core import BotState, TurnContext
from botbuilder.core import ConversationState as SdkConversationState
from botbuilder.core import PrivateConversationState as SdkPrivateConversationState
from botbuilder.core import UserState as SdkUserState
from botbuilder.core.bot_state import CachedBotState
from botbuilder.schema import Activity

from .logs import short_id
from .settings import ConfigError
from .state_keys import conversation_key, private_conversation_key, user_key
from .storage import Delete, StateStorage, StorageError, codec

logger = logging.getLogger(__name__)

DELETE_KEY = "hosting.delete"
DELETED_STATES_KEY = "hosting.deleted_states"
HOLD_KEY = "hosting.hold"
STAMPS_KEY = "hosting.expiry_stamps"
#: Set by ``TurnStates.load``: the states of this turn are the pipeline's to load and save.
LOADED_KEY = "hosting.loaded"


class TurnStates:
    """The states of a turn, loaded with one storage read and saved with one storage write.

    Expiry slides: a record the turn read but did not change is written again (unchanged) when the store says its
    expiry is due for a refresh (``StateStorage.refresh_due``), so an active user's records never expire.
    """

    def __init__(self, storage: StateStorage, states: Sequence[BotState]) -> None:
        self.storage = storage
        self.states = tuple(states)

    @classmethod
    def of(cls, states: Sequence[BotState]) -> TurnStates:
        """The turn states of ``states``, on the storage they were created with (one for all of them)."""
        stores = {id(state._storage): state._storage for state in states}
        if len(stores) != 1:
            raise ConfigError([f"the bot's states must all be created on one storage, not on {len(stores)}"])
        (storage,) = stores.values()
        if not isinstance(storage, StateStorage):
            raise ConfigError(["the bot's states must be created on the StateStorage bot_factory is given"])
        return cls(storage, states)

    def keys(self, turn_context: TurnContext) -> list[str]:
        return [key for _, key in self._keyed(turn_context)]

    def _keyed(self, turn_context: TurnContext) -> list[tuple[BotState, str]]:
        """The states this turn has a record of, with their keys. A turn without a user (a proactive turn whose
        reference names none, the first turn of a conversation the bot created) has no UserState and no
        PrivateConversationState: using them in it raises ``MissingIdError``."""
        keyed = []
        for state in self.states:
            try:
                keyed.append((state, state.get_storage_key(turn_context)))
            except MissingIdError:
                continue
        return keyed

    async def load(self, turn_context: TurnContext, extra_keys: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
        """Put every state in the turn's cache; return the records of ``extra_keys`` that exist."""
        keyed = self._keyed(turn_context)
        stamps: dict[str, int] = {}
        records = await self.storage.read([*(key for _, key in keyed), *extra_keys], stamps=stamps)
        turn_context.turn_state[STAMPS_KEY] = stamps
        turn_context.turn_state[LOADED_KEY] = True
        if logger.isEnabledFor(logging.DEBUG):  # the key list is not built on every turn for nothing
            logger.debug("loaded %d of %d records: %s", len(records), len(keyed) + len(extra_keys), _shown(records))
        for state, key in keyed:
            turn_context.turn_state[_cache_key(state)] = _CachedState(records.get(key) or {})
        return {key: records[key] for key in extra_keys if key in records}

    async def save(self, turn_context: TurnContext, also: Mapping[str, object] | None = None) -> bool:
        """Write every changed state and delete every deleted record in ONE ``hosting.storage.write``; False when that
        succeeded but compacting the store afterwards did not (the caller tells the user; it is retried later).
        ``also``: records the pipeline keeps with the turn (its delivery log), first in the same write.

        Deletes are conditional on the e_tag the turn read (``Delete``), so a record that another turn changed
        meanwhile is not deleted behind its back: the write conflicts and the whole turn runs again from fresh
        state. Where the backend cannot write atomically the order matters, so records outside the turn come
        first, then the turn's own states last to first: the first state (the user's record, which holds what the
        others are found by) goes last, and a failure part-way leaves it for the retried turn to find the rest.
        After deleting, the store is compacted, so no copy stays in sqlite's write-ahead log.

        A turn marked with :func:`hold` saves and deletes nothing (``also`` included).
        """
        if self.held(turn_context):
            return True
        deleted: dict[str, str] = turn_context.turn_state.get(DELETE_KEY, {})
        deleted_states: set[str] = turn_context.turn_state.get(DELETED_STATES_KEY, set())
        stamps: dict[str, int] = turn_context.turn_state.get(STAMPS_KEY, {})
        own = self._keyed(turn_context)
        own_keys = {key for _, key in own}
        changes: dict[str, object] = dict(also or {})
        changes.update({key: Delete(e_tag) for key, e_tag in deleted.items() if key not in own_keys})
        changes.update({key: Delete(deleted[key]) for _, key in reversed(own) if key in deleted})
        for state, key in own:
            cached = turn_context.turn_state.get(_cache_key(state))
            if key in deleted_states or cached is None:
                continue
            if cached.is_changed or (cached.state and self.storage.refresh_due(key, stamps.get(key))):
                changes[key] = cached.state
        if not changes:
            return True
        await self.storage.write(changes)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("saved %s", _shown(changes))
        if not deleted:
            return True
        try:
            await self.storage.compact()
        except StorageError as err:
            logger.warning("the store could not be compacted after a deletion (retried later): %s", err)
            self.storage.compact_pending = True
            return False
        return True

    @staticmethod
    def held(turn_context: TurnContext) -> bool:
        """Whether the turn was marked with :func:`hold` (nothing of it is saved)."""
        return bool(turn_context.turn_state.get(HOLD_KEY))

    @staticmethod
    def deleted_keys(turn_context: TurnContext) -> set[str]:
        """The records the turn's write will delete: its own deleted states and what ``delete_with_turn`` named."""
        return set(turn_context.turn_state.get(DELETE_KEY, {})) | turn_context.turn_state.get(DELETED_STATES_KEY, set())


class _CachedState(CachedBotState):
    """The SDK's per-turn cache of a record, with change detection by the stored JSON form."""

    def compute_hash(self, obj: object) -> str:
        return codec.fingerprint(obj) if isinstance(obj, dict) else repr(obj)


class _TurnState(BotState):
    """What the three states share; see the module docstring."""

    async def load(self, turn_context: TurnContext, force: bool = False) -> None:
        if force or self.get_cached_state(turn_context) is None:
            await super().load(turn_context, force)

    async def save_changes(self, turn_context: TurnContext, force: bool = False) -> None:
        """Nothing to do inside a turn: the pipeline saves every state when the turn ends, in one write."""
        if not turn_context.turn_state.get(LOADED_KEY):
            await super().save_changes(turn_context, force)

    async def delete(self, turn_context: TurnContext) -> None:
        """Empty this state for the rest of the turn; its record is deleted by the turn's write, if it still is
        what this turn read (a record the turn found absent is left alone)."""
        if not turn_context.turn_state.get(LOADED_KEY):
            await super().delete(turn_context)
            return
        key = self.get_storage_key(turn_context)
        e_tag = (self.get(turn_context) or {}).get("e_tag")
        turn_context.turn_state[_cache_key(self)] = _CachedState({})
        delete_with_turn(turn_context, {key: e_tag} if isinstance(e_tag, str) else {})
        turn_context.turn_state.setdefault(DELETED_STATES_KEY, set()).add(key)

    def is_deleted(self, turn_context: TurnContext) -> bool:
        """Whether ``delete`` was called for this state in this turn."""
        return self.get_storage_key(turn_context) in turn_context.turn_state.get(DELETED_STATES_KEY, set())

    def get(self, turn_context: TurnContext) -> dict[str, Any]:
        """The record as this turn holds it (with the turn's changes); empty when there is none."""
        cached = self.get_cached_state(turn_context)
        state = getattr(cached, "state", None)
        return state if isinstance(state, dict) else {}


class UserState(_TurnState, SdkUserState):
    """botbuilder's UserState: one record per user and channel (``hosting.state_keys.user_key``)."""

    def get_storage_key(self, turn_context: TurnContext) -> str:
        activity = turn_context.activity
        return user_key(_required(activity.channel_id, "channelId"), _required(_user_id(activity), "from.id"))


class ConversationState(_TurnState, SdkConversationState):
    """botbuilder's ConversationState: one record per conversation, shared by its members
    (``hosting.state_keys.conversation_key``)."""

    def get_storage_key(self, turn_context: TurnContext) -> str:
        activity = turn_context.activity
        return self.key_in(turn_context, _required(_conversation_id(activity), "conversation.id"))

    def key_in(self, turn_context: TurnContext, conversation_id: str) -> str:
        """This state's key for the turn's channel in another conversation."""
        return conversation_key(_required(turn_context.activity.channel_id, "channelId"), conversation_id)


class PrivateConversationState(_TurnState, SdkPrivateConversationState):
    """botbuilder's PrivateConversationState: one record per member of a conversation
    (``hosting.state_keys.private_conversation_key``)."""

    def get_storage_key(self, turn_context: TurnContext) -> str:
        activity = turn_context.activity
        return self.key_in(turn_context, _required(_conversation_id(activity), "conversation.id"))

    def key_in(self, turn_context: TurnContext, conversation_id: str) -> str:
        """This state's key for the turn's user and channel in another conversation."""
        activity = turn_context.activity
        return private_conversation_key(
            _required(activity.channel_id, "channelId"),
            conversation_id,
            _required(_user_id(activity), "from.id"),
            self.namespace,
        )


TURN_STATE_CLASSES = (UserState, ConversationState, PrivateConversationState)


def check_states(bot: object, states: Sequence[BotState]) -> None:
    """Refuse, at start-up, states a turn could not load and save as one: a state of botbuilder's own classes
    (it would read and write its record by itself, outside the turn's one read and one write, and before the
    replies), or a state the bot keeps as an attribute that is not among ``states`` (never loaded nor saved).
    ``ConfigError`` says what to change."""
    problems = [
        f"{_named(bot, state)} is botbuilder.core's {type(state).__name__}, which reads and writes its record by "
        f"itself, outside the turn's one read and one write: create it as hosting.{_turn_class(state)} (the same "
        "class, loaded and saved with the turn)"
        for state in states
        if not isinstance(state, _TurnState)
    ]
    for name, value in vars(bot).items():
        if isinstance(value, BotState) and not any(value is state for state in states):
            problems.append(
                f"{type(bot).__name__}.{name} is a {type(value).__name__} that bot_factory does not return with the "
                "bot's states, so no turn would load or save it: return it with the others"
            )
    if problems:
        raise ConfigError(problems)


def _named(bot: object, state: BotState) -> str:
    names = [name for name, value in vars(bot).items() if value is state]
    return f"{type(bot).__name__}.{names[0]}" if names else f"a {type(state).__name__} among the bot's states"


def _turn_class(state: BotState) -> str:
    # PrivateConversationState first: it is no subclass of the others, but be exact anyway.
    for sdk_class, name in (
        (SdkPrivateConversationState, "PrivateConversationState"),
        (SdkConversationState, "ConversationState"),
        (SdkUserState, "UserState"),
    ):
        if isinstance(state, sdk_class):
            return name
    return "UserState, ConversationState or PrivateConversationState"


def delete_with_turn(turn_context: TurnContext, records: Mapping[str, str]) -> None:
    """Delete records outside the turn's own states by the turn's write: ``{key: e_tag}``, each only if it still
    has the e_tag it was read with (``"*"``: whatever it holds), then compact the store.

    Nothing is deleted if the turn fails or is retried; a retried turn decides afresh.
    """
    turn_context.turn_state.setdefault(DELETE_KEY, {}).update(records)


def hold(turn_context: TurnContext) -> None:
    """Save nothing of this turn: no state is written and nothing deleted (the replies still go out)."""
    turn_context.turn_state[HOLD_KEY] = True


class MissingIdError(TypeError):
    """The turn's activity lacks an id a state's key is made of (the SDK's states raise TypeError too)."""


def _required(value: str | None, name: str) -> str:
    # hosting.http refuses such requests before a turn; only a proactive turn can lack an id (its reference's).
    if not value:
        raise MissingIdError(f"this turn's activity has no {name}, so it has no record of this state")
    return value


def _user_id(activity: Activity) -> str | None:
    return activity.from_property.id if activity.from_property is not None else None


def _conversation_id(activity: Activity) -> str | None:
    return activity.conversation.id if activity.conversation is not None else None


def _shown(keys: Iterable[str]) -> str:
    return ", ".join(short_id(key) for key in keys) or "none"


def _cache_key(state: BotState) -> str:
    # The key under which BotState caches its record in the turn (the SDK's class name by default).
    return state._context_service_key
