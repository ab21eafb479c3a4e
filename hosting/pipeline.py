"""The turn pipeline: one turn of a conversation at a time, all of its state saved or none, replies only after.

``TurnPipeline.run`` is where a checked, authenticated activity becomes a turn:

1. take the in-process lock of the conversation (one turn of a conversation at a time in this process);
2. load every state record the turn can touch (UserState, ConversationState, PrivateConversationState) and the
   conversation's shared lock record in ONE storage read;
3. run the bot (or a proactive turn's callback) with everything it sends buffered: replies, and updates and
   deletions of activities (the adapter's ``send_activities``, ``update_activity`` and ``delete_activity`` never
   send);
4. save every changed state in ONE storage write with e_tags (all-or-nothing where the backend can);
5. hand back what was buffered, in order (``hosting.outgoing``); the caller delivers it. Nothing a user sees
   leaves before its state is stored. The turn's context is then closed (``CLOSED_KEY``): the adapter refuses
   what is sent with it afterwards (from a task the turn left running) instead of buffering it for nobody.

A turn of an activity a channel sent (``remember=True``) also reads and writes the conversation's delivery log
(``hosting.deliveries``) in the same read and write: an activity the log has is a redelivery, answered from the
log (``TurnOutcome.REDELIVERED``) without running the bot or changing any state.

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
import itertools
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ActivityTypes, DeliveryModes
from botframework.connector import Channels

from . import deliveries
from .deliveries import Delivery, DeliveryLog
from .logs import log_text, short_id
from .outgoing import Method, Outgoing, replies_of
from .state_keys import conversation_key
from .states import TurnStates
from .storage import (
    CorruptRecordError,
    ETagConflictError,
    StateStorage,
    StorageError,
    storage_deadline,
    storage_deadline_now,
)

logger = logging.getLogger(__name__)

BUFFER_KEY = "hosting.buffered_replies"
INVOKE_RESPONSE_KEY = "hosting.invoke_response"
NOTICES_KEY = "hosting.notices"
#: Set once the pipeline is done with a turn's context: nothing can be sent with it any more.
CLOSED_KEY = "hosting.closed"

DEFAULT_RETRIES = 3
BACKOFF_SECONDS = 0.01
SHARED_LOCK_SECONDS = 15.0
SHARED_LOCK_WAIT_SECONDS = 10.0
#: A turn's storage budget from its arrival: well under the ~15 s a channel waits for the answer, far over what a
#: turn needs when workers queue for the store (~0.2 s measured with 4 gunicorn workers on one hot conversation).
TURN_DEADLINE_SECONDS = 6.0
#: Giving the shared lock back after the turn gets its own small budget (the turn's may be spent), and so does
#: noting in the delivery log that replies were not delivered.
RELEASE_DEADLINE_SECONDS = 1.0
#: Tries at changing the delivery log after a turn (how much of its replies got through; taking its entry back)
#: when other turns write it meanwhile.
LOG_CHANGE_ATTEMPTS = 3


class TurnOutcome(enum.StrEnum):
    """How a turn ended. The value is the code in logs and error answers."""

    OK = "ok"
    BUSY = "turn_conflict"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    RECORD_DAMAGED = "record_damaged"
    BOT_ERROR = "bot_error"
    #: The activity was applied by an earlier delivery: nothing ran, the answer comes from the delivery log.
    REDELIVERED = "redelivered"


#: Outcomes of turns that saved nothing (a delivery log entry written part-way is taken back).
UNSAVED = frozenset({TurnOutcome.BUSY, TurnOutcome.STORAGE_UNAVAILABLE, TurnOutcome.RECORD_DAMAGED})

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
    outgoing: list[Outgoing]
    attempts: int
    invoke_response: Any = None
    error: BaseException | None = None
    #: The delivery log that remembers this turn's activity (None: not remembered, nothing to note about it).
    log_key: str | None = None
    #: For ``REDELIVERED``: what the first delivery sent and how much of it reached the channel.
    redelivered: Delivery | None = None
    #: For ``REDELIVERED``: how many of what the first delivery could not send this one sent.
    resent: int = 0
    #: e_tag conflicts the turn met (each one ran it again, unless it was the last allowed: ``BUSY``).
    conflicts: int = 0
    #: Set by whoever delivers: how many of what the turn sends to the channel did not get there.
    undelivered: int = 0

    @property
    def replies(self) -> list[Activity]:
        """The new activities the turn sends (its updates and deletions left out)."""
        return replies_of(self.outgoing)


class ConversationLocks:
    """One ``asyncio.Lock`` per conversation, dropped again when nobody holds or waits for it.

    A task that holds a conversation's lock and asks for it again (a turn that calls ``continue_conversation``
    for its own conversation) would wait for itself forever: that is a ``RuntimeError`` at once.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._holders: dict[str, asyncio.Task[Any] | None] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and self._holders.get(key) is task:
            raise RuntimeError(
                "a turn of this conversation is running in this task, and a new turn of it would wait for that "
                "one to end: send with the running turn's TurnContext instead"
            )
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                self._holders[key] = task
                try:
                    yield
                finally:
                    del self._holders[key]
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
    #: How many applied activities each conversation's delivery log remembers (0: no log, no deduplication).
    remembered: int = deliveries.DEFAULT_REMEMBERED
    _locks: ConversationLocks = field(default_factory=ConversationLocks)
    # Names of runs, unique in this process for its life and across processes (a uuid4 per turn is a system call).
    _run_prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    _runs: Iterator[int] = field(default_factory=itertools.count)

    async def run(
        self,
        activity: Activity,
        logic: Logic | None = None,
        new_context: ContextFactory | None = None,
        *,
        remember: bool = False,
    ) -> TurnResult:
        """The turn's outcome, within ``deadline_seconds`` (plus ``RELEASE_DEADLINE_SECONDS`` to give the shared
        lock back) whatever the store does. ``logic`` and ``new_context`` replace the pipeline's own for this turn
        (a proactive turn runs its callback, with its own identity in the context). ``remember``: the activity
        came from a channel, which may deliver it again (see the module docstring)."""
        key = lock_key(activity)
        log_key = key + deliveries.SUFFIX if remember and self.remembered and deliveries.remembered(activity) else None
        with storage_deadline(self.deadline_seconds):
            async with self._locks.hold(key):
                shared = SharedLock(self.states.storage, f"{key}/turn-lock")
                try:
                    run = f"{self._run_prefix}-{next(self._runs)}"
                    conflicts: list[int] = []
                    result = await self._attempts(
                        activity, shared, logic or self.logic, new_context or self.new_context, log_key, run, conflicts
                    )
                    result.conflicts = len(conflicts)
                    if log_key is not None and result.outcome in UNSAVED and not self.states.storage.atomic_writes:
                        await self._withdraw(log_key, activity, run)
                    return result
                finally:
                    with storage_deadline(RELEASE_DEADLINE_SECONDS):
                        await shared.release()

    async def note_delivery(self, result: TurnResult, activity: Activity, sent: int, unsent: list[Outgoing]) -> None:
        """Note in the delivery log that ``sent`` of what the turn sends to the channel got there and ``unsent``
        did not (the log took all of it as delivered), so that a redelivery sends the rest. A failure is logged: a
        redelivery then sends nothing."""
        if result.log_key is not None:
            await self._change_log(
                result.log_key,
                activity,
                lambda log: log.note_delivery(activity, sent, unsent),
                "could not note that its replies were not all delivered (a redelivery will not send them)",
            )

    async def _withdraw(self, log_key: str, activity: Activity, run: str) -> None:
        """Take back the delivery log's entry an attempt of ``run`` wrote before the turn failed on another record
        (only where records are written one by one): a redelivery must apply the activity, not answer from it."""
        await self._change_log(
            log_key,
            activity,
            lambda log: log.withdraw(activity.id, run),
            "failed, and its entry in the delivery log may remain (a redelivery of it would not be applied)",
        )

    async def _change_log(
        self, log_key: str, activity: Activity, change: Callable[[DeliveryLog], bool], failure: str
    ) -> None:
        """Read the delivery log, ``change`` it (False: nothing to write) and write it back, within a budget of its
        own and again when another turn wrote the log meanwhile; a store failure is logged with ``failure``."""
        storage = self.states.storage
        with storage_deadline(RELEASE_DEADLINE_SECONDS):
            for _ in range(LOG_CHANGE_ATTEMPTS):
                try:
                    log = DeliveryLog(log_key, (await storage.read([log_key])).get(log_key), self.remembered)
                    if change(log):
                        await storage.write({log_key: log.record()})
                    return
                except ETagConflictError:
                    continue
                except StorageError as err:
                    logger.warning("turn %s: %s: %s", describe(activity), failure, log_text(err))
                    return

    async def _attempts(
        self,
        activity: Activity,
        shared: SharedLock,
        logic: Logic,
        new_context: ContextFactory,
        log_key: str | None,
        run: str,
        conflicts: list[int],
    ) -> TurnResult:
        """The turn, attempted until it is saved or gives up; ``conflicts`` receives the number of each attempt
        that lost an e_tag race."""
        notices: list[str] = []
        moved_aside: set[str] = set()
        attempts = 0
        extra_keys = [shared.key] if log_key is None else [shared.key, log_key]
        while True:
            attempts += 1
            turn_context = new_context(activity)
            turn_context.turn_state[NOTICES_KEY] = notices
            try:
                records = await self.states.load(turn_context, extra_keys)
                if not shared.held and shared.taken_by_another(records.get(shared.key)):
                    await shared.acquire()
                    attempts -= 1  # waiting for another process is not a failed attempt
                    continue
                log = None
                if log_key is not None:
                    log = DeliveryLog(log_key, records.get(log_key), self.remembered)
                    delivery = log.find(activity, run)
                    if delivery is not None:
                        return TurnResult(
                            TurnOutcome.REDELIVERED,
                            delivery.outgoing or [],
                            attempts,
                            delivery.invoke,
                            log_key=log_key,
                            redelivered=delivery,
                        )
                for notice in notices:
                    await turn_context.send_activity(notice)
                error = await self._run_bot(turn_context, logic)
                if error is not None:
                    return self._bot_error(activity, error, attempts)
                outgoing = buffered(turn_context)
                invoke = invoke_response(turn_context)
                also: dict[str, object] = {}
                if log is not None and not self.states.held(turn_context):
                    expect = activity.delivery_mode == DeliveryModes.expect_replies
                    others = await self._forget_in_logs(activity, turn_context, log)
                    log.add(activity, outgoing, expect_replies=expect, invoke=invoke, run=run)
                    also = {log_key: log.record(), **others}
                else:
                    log = None
                if not await self.states.save(turn_context, also):
                    outgoing.append(_post(reply_to(activity, NOT_COMPACTED_TEXT)))
                return TurnResult(
                    TurnOutcome.OK, outgoing, attempts, invoke, log_key=log_key if log is not None else None
                )
            except ETagConflictError:
                conflicts.append(attempts)
                if len(conflicts) >= self.retries:
                    return self._busy(activity, attempts)
                try:
                    if not shared.held:
                        await shared.acquire()
                except TurnBusyError:
                    return self._busy(activity, attempts)
                except StorageError as err:  # raised here, the handlers below would not see it
                    return self._outage(activity, err, attempts)
                await asyncio.sleep(self.backoff_seconds * len(conflicts) * random.uniform(0.5, 1.5))
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
            finally:
                turn_context.turn_state[CLOSED_KEY] = True

    async def _forget_in_logs(
        self, activity: Activity, turn_context: TurnContext, log: DeliveryLog
    ) -> dict[str, dict[str, Any]]:
        """When the turn deletes its user's records (``forget``): ``log`` forgets what was sent to the user, and so
        do the logs of the other conversations it deletes their records in (read now, returned to be written with
        the turn, each conditional on what was read)."""
        deleted = self.states.deleted_keys(turn_context)
        if not deleted:  # the usual turn
            return {}
        forgotten, others = deliveries.forgotten_by_turn(activity, deleted)
        user = activity.from_property.id if activity.from_property is not None else None
        if not user or not (forgotten or others):
            return {}
        if forgotten:
            log.forget_user(user)
        changed: dict[str, dict[str, Any]] = {}
        for key, record in (await self.states.storage.read(others)).items():
            other = DeliveryLog(key, record, self.remembered)
            if other.forget_user(user):
                changed[key] = other.record()
        return changed

    async def _run_bot(self, turn_context: TurnContext, logic: Logic) -> Exception | None:
        """Run middleware and bot; a storage failure propagates, any other exception is returned."""
        try:
            await self.run_middleware(turn_context, logic)
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
        return TurnResult(TurnOutcome.BUSY, [_post(reply_to(activity, BUSY_TEXT))], attempts)

    def _outage(self, activity: Activity, error: StorageError, attempts: int) -> TurnResult:
        logger.warning("turn %s: %s: %s", describe(activity), TurnOutcome.STORAGE_UNAVAILABLE, log_text(error))
        return TurnResult(
            TurnOutcome.STORAGE_UNAVAILABLE, [_post(reply_to(activity, OUTAGE_TEXT))], attempts, error=error
        )

    def _unreadable(self, activity: Activity, error: CorruptRecordError, attempts: int) -> TurnResult:
        logger.error("turn %s: %s: %s", describe(activity), TurnOutcome.RECORD_DAMAGED, log_text(error))
        return TurnResult(
            TurnOutcome.RECORD_DAMAGED, [_post(reply_to(activity, UNREADABLE_TEXT))], attempts, error=error
        )

    def _bot_error(self, activity: Activity, error: Exception, attempts: int) -> TurnResult:
        logger.error("turn %s: %s; nothing was saved", describe(activity), TurnOutcome.BOT_ERROR, exc_info=error)
        replies = [_post(reply_to(activity, BOT_ERROR_TEXT))]
        if activity.channel_id == Channels.emulator:  # the developer's own Emulator sees what went wrong
            replies.append(
                _post(
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
            )
        return TurnResult(TurnOutcome.BOT_ERROR, replies, attempts, error=error)


def buffered(turn_context: TurnContext) -> list[Outgoing]:
    """What the turn sends, in order. ``TurnContext`` keeps the replies of an expectReplies turn itself,
    unfiltered (they go into the HTTP answer; the turn's updates and deletions still go to the serviceUrl)."""
    outgoing = list(turn_context.turn_state.get(BUFFER_KEY, []))
    for activity in turn_context.buffered_reply_activities:
        if deliverable(activity):
            outgoing.append(_post(activity))
        elif activity.type == ActivityTypes.invoke_response:
            turn_context.turn_state[INVOKE_RESPONSE_KEY] = activity.value
    return outgoing


def _post(activity: Activity) -> Outgoing:
    return Outgoing(Method.POST, activity)


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
