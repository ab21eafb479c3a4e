"""The turn pipeline: one turn of a conversation at a time, all of its state saved or none, replies only after.

``TurnPipeline.run`` is where a checked, authenticated activity becomes a turn:

1. take the in-process lock of the conversation (one turn of a conversation at a time in this process);
2. load every state record the turn can touch (UserState, ConversationState, PrivateConversationState) and the
   conversation's shared lock record in ONE storage read;
3. run the bot with every outgoing activity buffered (the adapter's ``send_activities`` never sends);
4. save every changed state in ONE storage write with e_tags (all-or-nothing where the backend can);
5. hand back the buffered replies; the caller delivers them. Nothing a user sees leaves before its state is
   stored.

When the save loses a race (``ETagConflictError``: another process changed a record since we read it) the whole
turn runs again from fresh state, up to ``retries`` attempts, with a small jittered backoff. After a conflict the
pipeline also takes the conversation's *shared* lock (a record in the store, created only if absent), and every
process that finds that record waits for it instead of racing: a hot conversation spread over several workers or
instances is served in turn instead of starving one of them. A quiet conversation never writes the lock record,
so the usual turn costs nothing extra but one more key in the read.

Outcomes are distinct (``TurnOutcome``): a conflict that survived every attempt answers "busy", an unreachable
store is an outage (503), a record that cannot be decoded is moved aside and the turn goes on, and a bug in the
bot is apologised for with every stored record left as it was.

A turn's storage work has one budget, ``deadline_seconds`` from its arrival (``storage.storage_deadline``): every
read, write, shared-lock attempt and retry of the turn ends by then, waiting for the in-process lock included. A
store that does not answer in time (another process holding SQLite's write lock, say) is an outage answered well
within a channel's patience, instead of each step waiting out the store's whole busy timeout in turn.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from botbuilder.core import BotState, ConversationState, PrivateConversationState, TurnContext, UserState
from botbuilder.core.bot_state import CachedBotState
from botbuilder.schema import Activity, ActivityTypes, ConversationAccount
from botframework.connector import Channels

from storage import (
    CorruptRecordError,
    Delete,
    ETagConflictError,
    StateStorage,
    StorageError,
    codec,
    storage_deadline,
    storage_deadline_now,
)

from .logs import log_text, short_id
from .state_keys import conversation_key, private_conversation_key, user_key

logger = logging.getLogger(__name__)

BUFFER_KEY = "state_bot.buffered_replies"
INVOKE_RESPONSE_KEY = "state_bot.invoke_response"
ERASE_KEY = "state_bot.erase"
HOLD_KEY = "state_bot.hold"
NOTICES_KEY = "state_bot.notices"
STAMPS_KEY = "state_bot.expiry_stamps"
ERASED_STATES_KEY = "state_bot.erased_states"

DEFAULT_RETRIES = 3
BACKOFF_SECONDS = 0.01
SHARED_LOCK_SECONDS = 15.0
SHARED_LOCK_WAIT_SECONDS = 10.0
#: A turn's storage budget from its arrival: well under the ~15 s a channel waits for the answer, far over what a
#: turn needs when workers queue for the store (~0.2 s measured with 4 gunicorn workers on one hot conversation).
TURN_DEADLINE_SECONDS = 6.0
#: Giving the shared lock back after the turn gets its own small budget (the turn's may be spent).
RELEASE_DEADLINE_SECONDS = 1.0


class TurnOutcome(enum.StrEnum):
    """How a turn ended. The value is the code in logs and error answers."""

    OK = "ok"
    BUSY = "turn_conflict"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    RECORD_DAMAGED = "record_damaged"
    BOT_ERROR = "bot_error"


BUSY_TEXT = "I was busy with another message of yours, please send that again."
OUTAGE_TEXT = "I can't reach my memory right now, so I can't answer. Nothing you stored is lost; please try again."
BOT_ERROR_TEXT = "Sorry, something went wrong on my side. What you had stored with me is safe; please try again."
UNREADABLE_TEXT = (
    "Part of what I have stored for this conversation can't be read, so I can't answer. "
    "It has been kept for the bot's operator to look at; please try again later."
)
DAMAGED_TEXT = (
    "Part of what I had stored about you was damaged and could not be read, so I have set it aside and "
    "started it afresh."
)
NOT_COMPACTED_TEXT = (
    "Everything was deleted, but my store could not yet clear old copies of it from its files; "
    "I'll keep trying in the background."
)


@dataclass(slots=True)
class TurnResult:
    outcome: TurnOutcome
    activities: list[Activity]
    attempts: int
    invoke_response: Any = None
    error: BaseException | None = None


class ConversationLocks:
    """One ``asyncio.Lock`` per conversation, dropped again when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class TurnBusyError(Exception):
    """The conversation's shared lock stayed taken by another process for too long."""


class SharedLock:
    """A conversation's lock shared by every process using the store: a record created only if absent.

    The record names its owner and an expiry, so a process that died holding it delays the conversation by at
    most ``SHARED_LOCK_SECONDS``. Only used once a conflict shows that another process is busy with the same
    conversation.
    """

    def __init__(self, storage: StateStorage, key: str, clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.held = False
        self._storage = storage
        self._owner = ""  # chosen when first acquired: most turns never need the lock
        self._clock = clock

    def taken_by_another(self, record: dict[str, Any] | None) -> bool:
        return (
            record is not None and (record.get("owner") != self._owner or not self._owner) and not self._expired(record)
        )

    async def acquire(self, wait_seconds: float = SHARED_LOCK_WAIT_SECONDS) -> None:
        """Take the lock, waiting up to ``wait_seconds`` (less when the storage deadline is nearer) for its holder;
        ``TurnBusyError`` when it stays taken, ``StorageError`` when the store fails."""
        self._owner = self._owner or uuid.uuid4().hex
        deadline = time.monotonic() + wait_seconds
        storage_deadline_at = storage_deadline_now()
        if storage_deadline_at is not None:
            deadline = min(deadline, storage_deadline_at)
        pause = 0.002
        while True:
            record = {"owner": self._owner, "expires_at": self._clock() + SHARED_LOCK_SECONDS}
            try:
                await self._storage.write({self.key: record})
            except ETagConflictError:
                current = (await self._storage.read([self.key])).get(self.key)
                if current is not None and self._expired(current):
                    logger.warning("a shared turn lock expired (its holder stopped?); taking it over")
                    await self._storage.delete([self.key])
                    continue
            else:
                self.held = True
                return
            if time.monotonic() + pause > deadline:
                raise TurnBusyError(f"the shared lock {short_id(self.key)} stayed taken for {wait_seconds:g} s")
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.05)

    async def release(self) -> None:
        """Give the lock up. The turn's outcome is settled: a failure here only delays others until expiry."""
        if self.held:
            self.held = False
            try:
                await self._storage.delete([self.key])
            except StorageError as err:
                logger.warning("a shared turn lock could not be released (it expires by itself): %s", err)

    def _expired(self, record: dict[str, Any]) -> bool:
        expires_at = record.get("expires_at")
        return not isinstance(expires_at, int | float) or expires_at < self._clock()


class TurnStates:
    """The BotStates of a turn, loaded with one storage read and saved with one storage write.

    This replaces ``BotState.load`` / ``save_changes`` (one round trip per state) and ``BotState.delete`` (which
    deletes at once, before the turn is known to succeed): :func:`erase` only marks a state, and its record is
    deleted by the turn's write, on condition that it did not change since the turn read it.

    Expiry slides: a record the turn read but did not change is written again (unchanged) when the store says its
    expiry is due for a refresh (``StateStorage.refresh_due``), so an active user's records never expire.
    """

    def __init__(self, storage: StateStorage, states: Sequence[BotState]) -> None:
        self.storage = storage
        self.states = tuple(states)

    def keys(self, turn_context: TurnContext) -> list[str]:
        return [state.get_storage_key(turn_context) for state in self.states]

    async def load(self, turn_context: TurnContext, extra_keys: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
        """Put every state in the turn's cache; return the records of ``extra_keys`` that exist."""
        keys = self.keys(turn_context)
        stamps: dict[str, int] = {}
        records = await self.storage.read([*keys, *extra_keys], stamps=stamps)
        turn_context.turn_state[STAMPS_KEY] = stamps
        if logger.isEnabledFor(logging.DEBUG):  # the key list is not built on every turn for nothing
            logger.debug("loaded %d of %d records: %s", len(records), len(keys) + len(extra_keys), _shown(records))
        for state, key in zip(self.states, keys, strict=True):
            turn_context.turn_state[_cache_key(state)] = _CachedState(records.get(key) or {})
        return {key: records[key] for key in extra_keys if key in records}

    async def save(self, turn_context: TurnContext) -> None:
        """Write every changed state and delete every erased record in ONE ``storage.write``.

        Deletes are conditional on the e_tag the turn read (``Delete``), so a record that another turn changed
        meanwhile is not deleted behind its back: the write conflicts and the whole turn runs again from fresh
        state. Where the backend cannot write atomically the order matters, so records outside the turn come
        first, then the turn's own states last to first: the first state (the user's record, which holds what the
        others are found by) goes last, and a failure part-way leaves it for the retried turn to find the rest.
        After deleting, the store is compacted (no copy stays in sqlite's WAL); if that fails, the user is told.

        A turn marked with :func:`hold` saves and deletes nothing.
        """
        if turn_context.turn_state.get(HOLD_KEY):
            return
        erased: dict[str, str] = turn_context.turn_state.get(ERASE_KEY, {})
        erased_states: set[str] = turn_context.turn_state.get(ERASED_STATES_KEY, set())
        stamps: dict[str, int] = turn_context.turn_state.get(STAMPS_KEY, {})
        own = list(zip(self.states, self.keys(turn_context), strict=True))
        own_keys = {key for _, key in own}
        changes: dict[str, object] = {key: Delete(e_tag) for key, e_tag in erased.items() if key not in own_keys}
        changes.update({key: Delete(erased[key]) for _, key in reversed(own) if key in erased})
        cached_states: list[CachedBotState] = []
        for state, key in own:
            cached = turn_context.turn_state.get(_cache_key(state))
            if key in erased_states or cached is None:
                continue
            if cached.is_changed or (cached.state and self.storage.refresh_due(key, stamps.get(key))):
                changes[key] = cached.state
                cached_states.append(cached)
        if not changes:
            return
        await self.storage.write(changes)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("saved %s", _shown(changes))
        for cached in cached_states:
            cached.hash = cached.compute_hash(cached.state)
        if erased:
            try:
                await self.storage.compact()  # no copy of what was forgotten stays behind (sqlite's WAL)
            except StorageError as err:
                logger.warning("the store could not be compacted after a deletion (retried later): %s", err)
                self.storage.compact_pending = True
                await turn_context.send_activity(reply_to(turn_context.activity, NOT_COMPACTED_TEXT))


class _CachedState(CachedBotState):
    """The SDK's per-turn cache of a record, with change detection by the stored JSON form (the SDK hashes with
    jsonpickle, a few percent of a turn's CPU)."""

    def compute_hash(self, obj: object) -> str:
        return codec.fingerprint(obj) if isinstance(obj, dict) else repr(obj)


class _LoadedByThePipeline(BotState):
    """A BotState whose record the pipeline has already put in the turn's cache.

    The SDK's ``BotState.load`` reads the record again whenever the cached one is empty (every turn of a user
    with no profile yet), and caches that re-read as ``CachedBotState(None)``, which counts as *changed* (it hashes
    ``None`` against ``{}``): every such turn would write an empty record and race other conversations for it.
    """

    async def load(self, turn_context: TurnContext, force: bool = False) -> None:
        if force or self.get_cached_state(turn_context) is None:
            await super().load(turn_context, force)


class TurnUserState(_LoadedByThePipeline, UserState):
    """UserState: one record per user and channel, under ``bots.state_keys.user_key``."""

    def get_storage_key(self, turn_context: TurnContext) -> str:
        activity = turn_context.activity
        return user_key(_required(activity.channel_id, "channelId"), _required(_user_id(activity), "from.id"))


class TurnConversationState(_LoadedByThePipeline, ConversationState):
    """ConversationState: one record per conversation, shared by its members, under
    ``bots.state_keys.conversation_key``."""

    def get_storage_key(self, turn_context: TurnContext) -> str:
        activity = turn_context.activity
        return conversation_key(
            _required(activity.channel_id, "channelId"), _required(_conversation_id(activity), "conversation.id")
        )


class TurnPrivateConversationState(_LoadedByThePipeline, PrivateConversationState):
    """PrivateConversationState: one record per member of a conversation, under
    ``bots.state_keys.private_conversation_key``."""

    def get_storage_key(self, turn_context: TurnContext) -> str:
        activity = turn_context.activity
        return private_conversation_key(
            _required(activity.channel_id, "channelId"),
            _required(_conversation_id(activity), "conversation.id"),
            _required(_user_id(activity), "from.id"),
            self.namespace,
        )


def _required(value: str | None, name: str) -> str:
    # The SDK's states raise TypeError for a missing id too; bots.http refuses such requests before a turn.
    if not value:
        raise TypeError(f"invalid activity: missing {name}")
    return value


def _user_id(activity: Activity) -> str | None:
    return activity.from_property.id if activity.from_property is not None else None


def _conversation_id(activity: Activity) -> str | None:
    return activity.conversation.id if activity.conversation is not None else None


def _shown(keys: Iterable[str]) -> str:
    return ", ".join(short_id(key) for key in keys) or "none"


def erase(turn_context: TurnContext, state: BotState) -> None:
    """Empty ``state`` for the rest of the turn and delete its record when the turn is saved (if it still is what
    this turn read; a record the turn found absent is left alone)."""
    e_tag = cached_record(turn_context, state).get("e_tag")
    turn_context.turn_state[_cache_key(state)] = _CachedState({})
    erase_records(turn_context, {state.get_storage_key(turn_context): e_tag} if isinstance(e_tag, str) else {})
    turn_context.turn_state.setdefault(ERASED_STATES_KEY, set()).add(state.get_storage_key(turn_context))


def erase_records(turn_context: TurnContext, records: Mapping[str, str]) -> None:
    """Delete records by the turn's write: ``{key: e_tag}``, each only if it still has the e_tag it was read
    with (``"*"``: whatever it holds), then compact the store.

    For records outside the turn's own states (another conversation's, say): nothing is deleted if the turn
    fails or is retried, and a retried turn decides afresh.
    """
    turn_context.turn_state.setdefault(ERASE_KEY, {}).update(records)


def erased(turn_context: TurnContext, state: BotState) -> bool:
    """Whether ``state`` was erased in this turn (its record, if any, is deleted at the end of it)."""
    return state.get_storage_key(turn_context) in turn_context.turn_state.get(ERASED_STATES_KEY, set())


def hold(turn_context: TurnContext) -> None:
    """Save nothing of this turn: no state is written and nothing erased (the replies still go out)."""
    turn_context.turn_state[HOLD_KEY] = True


def storage_key_in(state: BotState, turn_context: TurnContext, conversation_id: str, *, group: bool = False) -> str:
    """The key ``state`` would use for this turn's user and channel in another conversation.

    Asks the state itself (``get_storage_key``) with the activity moved to that conversation, so the key is
    exactly the one the SDK's state builds when the user speaks there.
    """
    activity = Activity(
        channel_id=turn_context.activity.channel_id,
        from_property=turn_context.activity.from_property,
        recipient=turn_context.activity.recipient,
        conversation=ConversationAccount(id=conversation_id, is_group=group or None),
    )
    return state.get_storage_key(TurnContext(turn_context.adapter, activity))


def cached_record(turn_context: TurnContext, state: BotState) -> dict[str, Any]:
    """The record of ``state`` as this turn holds it (loaded by the pipeline, with the turn's changes)."""
    cached = turn_context.turn_state.get(_cache_key(state))
    return cached.state if cached is not None and isinstance(cached.state, dict) else {}


def _cache_key(state: BotState) -> str:
    # The key under which BotState caches its record in the turn (the SDK's class name by default).
    return state._context_service_key


def lock_key(activity: Activity) -> str:
    """The conversation's lock, in this process and (with ``/turn-lock``) in the store: its ConversationState key."""
    return conversation_key(activity.channel_id, activity.conversation.id)


ContextFactory = Callable[[Activity], TurnContext]
Logic = Callable[[TurnContext], Awaitable[None]]
Runner = Callable[[TurnContext, Logic], Awaitable[None]]


@dataclass(slots=True)
class TurnPipeline:
    """Runs turns: lock, load, run with replies buffered, save, retry on conflicts. See the module docstring."""

    states: TurnStates
    logic: Logic
    new_context: ContextFactory
    run_middleware: Runner
    retries: int = DEFAULT_RETRIES
    backoff_seconds: float = BACKOFF_SECONDS
    deadline_seconds: float = TURN_DEADLINE_SECONDS
    _locks: ConversationLocks = field(default_factory=ConversationLocks)

    async def run(self, activity: Activity) -> TurnResult:
        """The turn's outcome, within ``deadline_seconds`` (plus ``RELEASE_DEADLINE_SECONDS`` to give the shared
        lock back) whatever the store does."""
        key = lock_key(activity)
        with storage_deadline(self.deadline_seconds):
            async with self._locks.hold(key):
                shared = SharedLock(self.states.storage, f"{key}/turn-lock")
                try:
                    return await self._attempts(activity, shared)
                finally:
                    with storage_deadline(RELEASE_DEADLINE_SECONDS):
                        await shared.release()

    async def _attempts(self, activity: Activity, shared: SharedLock) -> TurnResult:
        conflicts = 0
        notices: list[str] = []
        moved_aside: set[str] = set()
        attempts = 0
        while True:
            attempts += 1
            turn_context = self.new_context(activity)
            turn_context.turn_state[NOTICES_KEY] = notices
            try:
                records = await self.states.load(turn_context, [shared.key])
                if not shared.held and shared.taken_by_another(records.get(shared.key)):
                    await shared.acquire()
                    attempts -= 1  # waiting for another process is not a failed attempt
                    continue
                for notice in notices:
                    await turn_context.send_activity(notice)
                error = await self._run_bot(turn_context)
                if error is not None:
                    return self._bot_error(activity, error, attempts)
                await self.states.save(turn_context)
                return TurnResult(TurnOutcome.OK, buffered(turn_context), attempts, invoke_response(turn_context))
            except ETagConflictError:
                conflicts += 1
                if conflicts >= self.retries:
                    return self._busy(activity, attempts)
                try:
                    if not shared.held:
                        await shared.acquire()
                except TurnBusyError:
                    return self._busy(activity, attempts)
                except StorageError as err:  # raised here, the handlers below would not see it
                    return self._outage(activity, err, attempts)
                await asyncio.sleep(self.backoff_seconds * conflicts * random.uniform(0.5, 1.5))
            except TurnBusyError:
                return self._busy(activity, attempts)
            except CorruptRecordError as err:
                if err.key in moved_aside:
                    return self._unreadable(activity, err, attempts)
                try:
                    new_key = await self.states.storage.move_aside(err.key)
                except StorageError as failure:
                    return self._outage(activity, failure, attempts)
                moved_aside.add(err.key)
                notices.append(DAMAGED_TEXT)
                logger.warning(
                    "turn %s: record_damaged: a stored record could not be decoded; moved aside to %s",
                    describe(activity),
                    short_id(new_key),
                )
            except StorageError as err:
                return self._outage(activity, err, attempts)

    async def _run_bot(self, turn_context: TurnContext) -> Exception | None:
        """Run middleware and bot; a storage failure propagates, any other exception is returned."""
        try:
            await self.run_middleware(turn_context, self.logic)
        except StorageError:
            raise
        except Exception as error:  # a bug in the bot: reported, never saved
            return error
        return None

    def _busy(self, activity: Activity, attempts: int) -> TurnResult:
        logger.warning(
            "turn %s: %s: its state changed under it %d times in a row; the user was asked to send it again",
            describe(activity),
            TurnOutcome.BUSY,
            attempts,
        )
        return TurnResult(TurnOutcome.BUSY, [reply_to(activity, BUSY_TEXT)], attempts)

    def _outage(self, activity: Activity, error: StorageError, attempts: int) -> TurnResult:
        logger.warning("turn %s: %s: %s", describe(activity), TurnOutcome.STORAGE_UNAVAILABLE, log_text(error))
        return TurnResult(TurnOutcome.STORAGE_UNAVAILABLE, [reply_to(activity, OUTAGE_TEXT)], attempts, error=error)

    def _unreadable(self, activity: Activity, error: CorruptRecordError, attempts: int) -> TurnResult:
        logger.error("turn %s: %s: %s", describe(activity), TurnOutcome.RECORD_DAMAGED, log_text(error))
        return TurnResult(TurnOutcome.RECORD_DAMAGED, [reply_to(activity, UNREADABLE_TEXT)], attempts, error=error)

    def _bot_error(self, activity: Activity, error: Exception, attempts: int) -> TurnResult:
        logger.error("turn %s: %s; nothing was saved", describe(activity), TurnOutcome.BOT_ERROR, exc_info=error)
        replies = [reply_to(activity, BOT_ERROR_TEXT)]
        if activity.channel_id == Channels.emulator:  # the developer's own Emulator sees what went wrong
            replies.append(
                Activity(
                    type=ActivityTypes.trace,
                    name="on_turn_error",
                    label="TurnError",
                    value=f"{type(error).__name__}: {error}",
                    value_type="https://www.botframework.com/schemas/error",
                    reply_to_id=activity.id,
                    conversation=activity.conversation,
                    from_property=activity.recipient,
                    recipient=activity.from_property,
                    service_url=activity.service_url,
                    channel_id=activity.channel_id,
                )
            )
        return TurnResult(TurnOutcome.BOT_ERROR, replies, attempts, error=error)


def buffered(turn_context: TurnContext) -> list[Activity]:
    """The turn's replies. ``TurnContext`` keeps those of an expectReplies turn itself, unfiltered."""
    replies = list(turn_context.turn_state.get(BUFFER_KEY, []))
    for activity in turn_context.buffered_reply_activities:
        if deliverable(activity):
            replies.append(activity)
        elif activity.type == ActivityTypes.invoke_response:
            turn_context.turn_state[INVOKE_RESPONSE_KEY] = activity.value
    return replies


def deliverable(activity: Activity) -> bool:
    """Whether an outgoing activity goes to the channel: traces only to the developer's Emulator."""
    if activity.type in (ActivityTypes.invoke_response, "delay"):
        return False
    return activity.type != ActivityTypes.trace or activity.channel_id == Channels.emulator


def invoke_response(turn_context: TurnContext) -> Any:
    return turn_context.turn_state.get(INVOKE_RESPONSE_KEY)


def reply_to(activity: Activity, text: str) -> Activity:
    """A plain message reply to ``activity``, addressed as the bot's own replies are."""
    reply = activity.create_reply(text)
    reply.input_hint = "acceptingInput"
    return reply


def describe(activity: Activity) -> str:
    """The turn as log lines name it: activity type, channel and conversation id, each escaped and shortened."""
    return f"{short_id(activity.type)}@{short_id(activity.channel_id)}/{short_id(activity.conversation.id)}"
