"""The storage contract every backend implements, and the errors it raises.

``StateStorage`` is a ``botbuilder.core.Storage`` (``read`` / ``write`` / ``delete`` of dicts keyed by string)
with the semantics the SDK leaves open pinned down. The public methods live here once; each documents its
contract. A backend implements the private primitives at the bottom of the class, whose docstrings say what each
must do: ``_load_many`` or ``_load``, ``_remove``, ``_move`` and ``_close``; then, where ``atomic_writes`` is true,
``_write_atomic``, and elsewhere ``_insert``, ``_replace``, ``_upsert`` and ``_remove_if``; optionally
``_load_raw``, ``_compact``, ``_heal``, ``_check_record`` and (where ``expiry_cleanup`` is true)
``_remove_expired``.

Summary:

* ``read`` returns fresh dicts carrying the record's ``"e_tag"``; a record that cannot be decoded raises
  ``CorruptRecordError`` naming the key (and ``move_aside`` can take it out of the way).
* ``write`` honours each item's ``"e_tag"`` (concrete: if-match; ``"*"``: create or overwrite; none:
  create-only) and updates it in place after success. An item may also be ``Delete(e_tag)``: the key is deleted
  unless it changed since it was read. Several keys in one call are all-or-nothing where ``atomic_writes`` is
  true, and written one by one in the order given, stopping at the first failure, where it is false.
* ``delete`` of an absent key is not an error; ``compact`` drops old copies of deleted data (sqlite's WAL).
* Under an ``ExpiryPolicy`` records carry an expiry; an expired record reads as absent on every backend, and
  ``refresh_due`` tells a caller when a record it read (unchanged) should be written again to stay alive.
* ``move_aside`` keeps a damaged record's bytes under ``damaged_key(key)`` (the latest copy per key);
  ``read_damaged`` reads such copies as text, so what is kept about a user can be exported and deleted too.
* Service failures surface as ``StorageError`` (cause chained), never as vendor exceptions, and a failed read
  never looks like "absent". One operation takes at most ``operation_timeout`` seconds; a store that
  lost its container or table is repaired by ``_heal`` and the operation tried once more. After ``close()``
  every method raises ``StorageError``.
* Inside ``with storage_deadline(seconds):`` (a turn, a readiness check) every operation also ends by that
  deadline, queueing and waiting for locks included: past it, ``StorageError``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botbuilder.core import Storage, StoreItem
from opentelemetry.trace import SpanKind, StatusCode, Tracer, get_current_span

from . import codec

logger = logging.getLogger(__name__)

E_TAG = "e_tag"
ANY_E_TAG = "*"
#: Where ``move_aside`` keeps damaged records: ``_damaged/<original key>``, the latest copy per key. No channel key
#: starts with an underscore (they are ``<channel>/users/...`` and ``<channel>/conversations/...``).
DAMAGED_PREFIX = "_damaged/"
#: The most of a damaged copy ``read_damaged`` returns, in characters.
MAX_DAMAGED_TEXT = 64 * 1024
#: Reserved top-level field of a stored document: when the record expires, in whole seconds since the epoch (UTC).
#: Written by ``write`` under an ``ExpiryPolicy``, removed again by ``read``; never part of what callers see.
EXPIRES_AT = "$expiresAt"


def in_dropped_trace() -> bool:
    """Whether the current span belongs to a trace the sampler dropped (a valid span that does not record)."""
    span = get_current_span()
    return not span.is_recording() and span.get_span_context().is_valid


def _utc_now() -> datetime:
    return datetime.now(UTC)


# Per task (asyncio copies the context into each task), so one turn's deadline never bounds another's operations.
_DEADLINE: ContextVar[float | None] = ContextVar("storage_deadline", default=None)


@contextmanager
def storage_deadline(seconds: float) -> Iterator[None]:
    """Every storage operation started inside the block (in this task, and in tasks it starts) must end within
    ``seconds`` from now, whatever it waits for: a lock held by another process, operations queued before it,
    retries. One that cannot raises ``StorageError``. Replaces any deadline of an enclosing block.

    A turn is one block: its reads, writes, lock attempts and retries share one budget instead of each getting
    the store's whole timeout.
    """
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def storage_deadline_now() -> float | None:
    """The ``time.monotonic()`` by which storage operations started now must end, or None (no deadline)."""
    return _DEADLINE.get()


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    """How long records live after their last write (sliding expiry), by the shape of their key.

    ``<channel>/conversations/<id>`` (and ``.../conversations/<id>/users/<user>``, private conversation state)
    live ``conversation_ttl``; ``<channel>/users/<id>`` live ``user_ttl``; None means forever, as does any other
    key (heartbeats, damaged records). ``clock`` is for tests. The bot's states escape ``/`` in every id
    (``hosting.state_keys``), so the second segment is always the one the state chose, whatever the ids hold.
    """

    conversation_ttl: timedelta | None = timedelta(days=30)
    user_ttl: timedelta | None = None
    clock: Callable[[], datetime] = _utc_now

    def refresh_interval(self, ttl: timedelta) -> timedelta:
        """How long after its last write a live record is written again when a turn reads it: a tenth of its time
        to live, at most a day. A record read at least that often never expires; one left alone expires between
        ``ttl - refresh_interval`` and ``ttl`` after the last turn that read it."""
        return min(ttl / 10, timedelta(days=1))

    def ttl_for(self, key: str) -> timedelta | None:
        parts = key.split("/")
        if len(parts) >= 3 and parts[1] == "conversations":
            return self.conversation_ttl
        if len(parts) >= 3 and parts[1] == "users":
            return self.user_ttl
        return None


def expires_at_of(document: str) -> int | None:
    """The expiry stamped into a stored document's text, or None (none, or the text is not a JSON object)."""
    if EXPIRES_AT not in document:
        return None
    try:
        parsed = json.loads(document)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse: no expiry to find
        return None
    value = parsed.get(EXPIRES_AT) if isinstance(parsed, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class StorageError(Exception):
    """The state store could not do what was asked. Nothing is known to have been changed."""


class ETagConflictError(StorageError):
    """A write lost a race: the record changed (or appeared) since it was read."""


class CorruptRecordError(StorageError):
    """A stored record exists but cannot be decoded. It is left untouched; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class RecordTooLargeError(StorageError, ValueError):
    """The record is larger than the backend accepts. Refused before any call; nothing was changed."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record as a backend keeps it: the JSON document text and its e_tag."""

    document: str
    e_tag: str


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """One key of a ``write``: the encoded document and the condition (``None`` create-only, ``"*"`` any).

    With ``delete`` the key is deleted instead (``document`` is empty): unless its e_tag changed from ``e_tag``,
    or whatever it holds when ``e_tag`` is ``"*"``.
    """

    key: str
    document: str
    e_tag: str | None
    delete: bool = False


@dataclass(frozen=True, slots=True)
class Delete:
    """A ``write`` item that deletes its key, in the same call as the other items (all-or-nothing where the
    backend writes atomically). With a stored ``e_tag`` the delete happens only if the record still has it
    (``ETagConflictError`` when it changed); a record that is already gone is fine. ``"*"``: delete whatever is
    there."""

    e_tag: str = "*"


def new_e_tag() -> str:
    """A fresh e_tag for backends that do not generate their own.

    128 random bits from ``random`` (seeded from the OS, and re-seeded in each forked worker): as unlikely to
    repeat as a uuid4, without uuid4's system call on every write.
    """
    return f"{random.getrandbits(128):032x}"


def damaged_key(key: str) -> str:
    """The key a damaged record of ``key`` is moved to: ``_damaged/<key>`` (a later move replaces it)."""
    return f"{DAMAGED_PREFIX}{key}"


def _unique_keys(keys: Iterable[str]) -> list[str]:
    """``keys`` once each, in their first order; ``ValueError`` for one that is not a non-empty string."""
    unique: list[str] = []
    for key in keys:
        if not isinstance(key, str) or not key:
            raise ValueError(f"storage keys must be non-empty strings, got {key!r}")
        if key not in unique:
            unique.append(key)
    return unique


def _as_document(key: str, item: object) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, StoreItem):
        return dict(vars(item))
    raise TypeError(f"cannot store {type(item).__name__} under {key!r}: expected a dict or StoreItem")


def _set_e_tag(item: object, e_tag: str) -> None:
    if isinstance(item, MutableMapping):
        item[E_TAG] = e_tag
    elif isinstance(item, StoreItem):
        item.e_tag = e_tag


#: Errors that say something about the data or the race, never about the store's health: not healed, not retried.
_NOT_A_FAULT = (ETagConflictError, CorruptRecordError, RecordTooLargeError)


class StateStorage(Storage):
    """Base class of every backend. The public methods are the contract; the ``_`` methods are what a backend
    provides (see each one's docstring)."""

    #: Short backend name for logs and /readyz ("sqlite", "memory", ...).
    name: str = "storage"
    #: True when a ``write`` of several keys is all-or-nothing (one transaction); False when the keys are written
    #: one by one in the order given and the first failure stops the rest (earlier keys stay written).
    atomic_writes: bool = False
    #: Upper bound in seconds on one storage operation (including the SDK's own retries and a heal), or None
    #: when the backend bounds itself (sqlite's busy timeout). Past it the operation fails with ``StorageError``.
    operation_timeout: float | None = None
    #: When set, ``write`` stamps each record with its expiry and ``read`` treats expired records as absent.
    expiry: ExpiryPolicy | None = None
    #: True when ``remove_expired`` can find expired records (sqlite, memory); elsewhere it removes nothing and
    #: expired records are skipped on read and overwritten by the next write (Cosmos also deletes them itself).
    expiry_cleanup: bool = False
    #: Set by a caller whose ``compact`` failed after a deletion; the app tries again later and clears it.
    compact_pending: bool = False
    #: Set by the app when telemetry is on: each operation is then a span (hosting/telemetry.py).
    tracer: Tracer | None = None
    _closed: bool = False

    # -- the contract ------------------------------------------------------------------------------------------

    async def read(self, keys: list[str], *, stamps: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
        """Return ``{key: document}`` for the keys that exist; absent keys are left out.

        Each document is a fresh dict (mutating it changes nothing stored) carrying the record's ``"e_tag"``.
        Raises ``CorruptRecordError`` (with ``.key``) when a record exists but cannot be decoded, and
        ``StorageError`` when the store fails: a failure is never reported as "absent". ``stamps``, when given,
        receives the expiry stamp of every returned record that has one (for ``refresh_due``).
        """
        self._check_open()
        unique = _unique_keys(keys or [])
        if not unique:
            return {}
        records = await self._run("read", lambda: self._load_many(unique))
        now = self._now_epoch()
        items: dict[str, dict[str, Any]] = {}
        for key, record in records.items():
            try:
                document = codec.loads(record.document)
            except ValueError as err:
                raise CorruptRecordError(
                    key, f"{self.name}: the stored record {key!r} cannot be decoded: {err}"
                ) from err
            expires_at = document.pop(EXPIRES_AT, None)
            if isinstance(expires_at, int) and expires_at <= now:
                continue  # expired: absent to the caller, and replaced by its next create-only write
            if stamps is not None and isinstance(expires_at, int):
                stamps[key] = expires_at
            document[E_TAG] = record.e_tag
            items[key] = document
        return items

    def refresh_due(self, key: str, stamp: int | None) -> bool:
        """Whether a live record of ``key`` that was read with expiry ``stamp`` (None: it has none) should be
        written again, unchanged, to stay alive: sliding expiry means every turn that reads a record extends it.
        Rewritten at most once per ``ExpiryPolicy.refresh_interval``, not on every read."""
        ttl = self.expiry.ttl_for(key) if self.expiry is not None else None
        if ttl is None:
            return False
        if stamp is None:
            return True  # written before this time to live was set
        written = stamp - max(1, int(ttl.total_seconds()))
        return self._now_epoch() - written >= self.expiry.refresh_interval(ttl).total_seconds()

    async def write(self, changes: Mapping[str, object]) -> None:
        """Store every item of ``changes`` (dicts or ``StoreItem``s), honouring each item's ``"e_tag"``.

        * a concrete e_tag replaces the record only if it still has that e_tag, else ``ETagConflictError`` (also
          when the record is gone);
        * ``"*"`` creates or overwrites unconditionally;
        * no e_tag means "this is new": create-only, ``ETagConflictError`` if another writer created it first.

        Every item is encoded before anything is sent, so a value without a JSON form (``StateEncodingError``)
        or a record the backend would refuse (``RecordTooLargeError``) changes nothing.

        Several keys: where ``atomic_writes`` is true, all-or-nothing (on any conflict or failure nothing is
        written); elsewhere written one by one in the order given, stopping at the first failure, so the keys
        before it are written and the ones after it are not. After a successful write of a key its item's
        ``"e_tag"`` is updated in place (on atomic backends only once the whole write committed), so saving the
        same state again does not conflict with itself.

        Under an ``expiry`` policy each record is stamped with ``now + ttl`` (sliding), and a create-only write
        replaces a record that has expired (conditionally on its e_tag, so a concurrent refresh still wins).

        A ``Delete`` item deletes its key as part of the same write (see ``Delete``).
        """
        if changes is None:
            raise TypeError("write() needs a mapping of changes")
        self._check_open()
        pending: list[tuple[object, PendingWrite]] = []
        for key in _unique_keys(changes.keys()):
            item = changes[key]
            if isinstance(item, Delete):
                if not (isinstance(item.e_tag, str) and item.e_tag):
                    raise ValueError(f"invalid e_tag {item.e_tag!r} to delete {key!r}: use a stored e_tag or '*'")
                pending.append((item, PendingWrite(key, "", item.e_tag, delete=True)))
                continue
            document = _as_document(key, item)
            e_tag = document.pop(E_TAG, None)
            if not (e_tag is None or (isinstance(e_tag, str) and e_tag)):
                raise ValueError(f"invalid e_tag {e_tag!r} for {key!r}: use a stored e_tag, '*' or none")
            if EXPIRES_AT in document:
                raise ValueError(f"{EXPIRES_AT!r} is reserved and cannot be a field of stored state ({key!r})")
            ttl = self.expiry.ttl_for(key) if self.expiry is not None else None
            if ttl is not None:
                document[EXPIRES_AT] = self._now_epoch() + max(1, int(ttl.total_seconds()))
            write = PendingWrite(key, codec.dumps(document), e_tag)
            self._check_record(write.key, write.document)
            pending.append((item, write))
        if not pending:
            return
        if self.atomic_writes:
            writes = [write for _, write in pending]
            try:
                new_tags = await self._run("write", lambda: self._write_atomic(writes))
            except ETagConflictError:
                over_expired = await self._over_expired(writes)
                if over_expired == writes:
                    raise
                new_tags = await self._run("write", lambda: self._write_atomic(over_expired))
            for (item, _), new_tag in zip(pending, new_tags, strict=True):
                _set_e_tag(item, new_tag)
            return
        for item, write in pending:
            try:
                new_tag = await self._run("write", lambda write=write: self._write_one(write))
            except ETagConflictError:
                (retry,) = await self._over_expired([write])
                if retry == write:
                    raise
                new_tag = await self._run("write", lambda retry=retry: self._write_one(retry))
            _set_e_tag(item, new_tag)

    async def remove_expired(self, limit: int = 100) -> int:
        """Delete up to ``limit`` records whose expiry has passed; return how many. Bounded, so the app can call
        it in small batches (e.g. every few minutes) without a long pause.

        Only where ``expiry_cleanup`` is true (sqlite, memory); elsewhere it returns 0 and expired records are
        skipped on read and overwritten by the next create-only write (Cosmos also deletes them natively).
        """
        self._check_open()
        if limit < 1 or not self.expiry_cleanup:
            return 0
        now = self._now_epoch()
        return await self._run("remove expired", lambda: self._remove_expired(now, limit))

    async def delete(self, keys: list[str]) -> None:
        """Delete ``keys``; an absent key is not an error. Keys are deleted one by one in the order given."""
        self._check_open()
        for key in _unique_keys(keys or []):
            await self._run("delete", lambda key=key: self._remove(key))

    async def move_aside(self, key: str) -> str | None:
        """Move the record of ``key`` (typically one that raised ``CorruptRecordError``) out of the way.

        Its raw stored bytes are kept, unchanged, under ``damaged_key(key)`` (``_damaged/<key>``, replacing an
        earlier damaged copy of the same key), and ``key`` itself becomes absent, so the next turn starts fresh.
        Returns the new key, or None when ``key`` had no record. Raises ``ETagConflictError`` if the record changed
        while it was being moved.
        """
        self._check_open()
        (key,) = _unique_keys([key])
        new_key = damaged_key(key)
        await self._run("move aside", lambda: self._remove(new_key))
        moved = await self._run("move aside", lambda: self._move(key, new_key))
        if not moved:
            return None
        logger.warning("%s: moved the damaged record %r aside to %r", self.name, key, new_key)
        return new_key

    async def read_damaged(self, keys: list[str]) -> dict[str, str]:
        """The damaged copies ``move_aside`` kept of ``keys``, as ``{key: text}`` for the keys that have one.

        The text is the stored record as the backend keeps it (its envelope included), decoded as UTF-8 with
        undecodable bytes replaced, and cut to ``MAX_DAMAGED_TEXT`` characters: for ``export``, never decoded.
        """
        self._check_open()
        unique = _unique_keys(keys or [])
        texts = await asyncio.gather(
            *(self._run("read", lambda key=key: self._load_raw(damaged_key(key))) for key in unique)
        )
        return {
            key: text if len(text) <= MAX_DAMAGED_TEXT else text[:MAX_DAMAGED_TEXT] + "..."
            for key, text in zip(unique, texts, strict=True)
            if text is not None
        }

    async def compact(self) -> None:
        """Make deleted data unrecoverable from the store's own files where the backend keeps old copies.

        Called after a user asked to be forgotten. sqlite checkpoints and truncates its write-ahead log; the
        services (blob, table, cosmos) and memory keep no copies we can reach, so it does nothing there.
        """
        self._check_open()
        await self._run("compact", self._compact)

    async def close(self) -> None:
        """Release connections and clients. Idempotent; afterwards every other method raises ``StorageError``."""
        if self._closed:
            return
        self._closed = True
        await self._close()

    def describe(self) -> str:
        """Where the state lives, for the start-up log. Never includes secrets."""
        return self.name

    # -- shared machinery --------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.name} storage is closed")

    async def _run[T](self, action: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one operation within ``operation_timeout`` and the caller's ``storage_deadline``; after a fault
        ``_heal`` repairs, try it once more. With a ``tracer`` the operation is a span (``sqlite read``), unless
        it is part of a trace the sampler dropped (its span would be dropped too)."""
        if self.tracer is None or in_dropped_trace():
            return await self._attempt(action, operation)
        with self.tracer.start_as_current_span(
            f"{self.name} {action}",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": self.name, "db.operation.name": action},
            record_exception=False,  # its message may name a key, and keys hold user ids
            set_status_on_exception=False,
        ) as span:
            try:
                return await self._attempt(action, operation)
            except BaseException as err:
                span.set_attribute("error.type", type(err).__name__)
                span.set_status(StatusCode.ERROR)
                raise

    async def _attempt[T](self, action: str, operation: Callable[[], Awaitable[T]]) -> T:
        for attempt in (1, 2):
            limit = self._time_limit(action)
            scope = asyncio.timeout(limit)
            try:
                async with scope:
                    return await operation()
            except TimeoutError as err:
                if not scope.expired():  # not ours: raised by the operation itself
                    raise
                raise StorageError(f"{self.name} {action} gave no answer within {limit:.3g} s") from err
            except _NOT_A_FAULT:
                raise
            except StorageError as err:
                if attempt == 2 or not await self._try_heal(err):
                    raise
                logger.warning("%s: retrying the %s after repairing the store", self.name, action)
        raise AssertionError("unreachable")  # pragma: no cover

    def _time_limit(self, action: str) -> float | None:
        """Seconds the next operation may take: ``operation_timeout``, or less when the deadline is nearer."""
        deadline = storage_deadline_now()
        if deadline is None:
            return self.operation_timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise StorageError(f"{self.name} {action} not started: the time allowed for it had run out")
        return left if self.operation_timeout is None else min(left, self.operation_timeout)

    async def _try_heal(self, err: StorageError) -> bool:
        try:
            async with asyncio.timeout(self.operation_timeout):
                return await self._heal(err)
        except (StorageError, TimeoutError) as heal_err:
            logger.warning("%s: could not repair the store after %s: %s", self.name, err, heal_err)
            return False

    def _now_epoch(self) -> int:
        return int((self.expiry.clock() if self.expiry is not None else _utc_now()).timestamp())

    async def _over_expired(self, writes: list[PendingWrite]) -> list[PendingWrite]:
        """``writes`` with every create-only write whose key holds an expired record turned into a replace of
        that record (its e_tag as the condition). Unchanged when no record in the way has expired."""
        creates = [write.key for write in writes if write.e_tag is None and not write.delete]
        if not creates:
            return writes
        records = await self._run("read", lambda: self._load_many(creates))
        now = self._now_epoch()
        expired = {}
        for key, record in records.items():
            expires_at = expires_at_of(record.document)
            if expires_at is not None and expires_at <= now:
                expired[key] = record.e_tag
        return [
            PendingWrite(write.key, write.document, expired[write.key])
            if write.e_tag is None and write.key in expired
            else write
            for write in writes
        ]

    async def _write_one(self, write: PendingWrite) -> str:
        """One key's write with the primitive its condition calls for; the new e_tag ("" for a delete)."""
        if self.atomic_writes:
            return (await self._write_atomic([write]))[0]
        if write.delete:
            if write.e_tag == ANY_E_TAG:
                await self._remove(write.key)
            else:
                await self._remove_if(write.key, write.e_tag or ANY_E_TAG)
            return ""
        if write.e_tag is None:
            return await self._insert(write.key, write.document)
        if write.e_tag == ANY_E_TAG:
            return await self._upsert(write.key, write.document)
        return await self._replace(write.key, write.document, write.e_tag)

    # -- what a backend provides -------------------------------------------------------------------------------

    async def _load_many(self, keys: list[str]) -> dict[str, StoredRecord]:
        """Fetch the records that exist among ``keys`` (unique, non-empty). Absent keys are left out.

        A record that exists but is not this store's (wrong envelope, another key's) raises
        ``CorruptRecordError``; any other failure ``StorageError``. The default calls ``_load`` concurrently.
        """
        records = await asyncio.gather(*(self._load(key) for key in keys))
        return {key: record for key, record in zip(keys, records, strict=True) if record is not None}

    async def _load(self, key: str) -> StoredRecord | None:
        """Fetch one record, or None when absent. Only needed when ``_load_many`` is not overridden."""
        raise NotImplementedError

    async def _write_atomic(self, writes: list[PendingWrite]) -> list[str]:
        """Only where ``atomic_writes`` is true, and then every write goes through it (one key's too): apply every
        write in one transaction, each with its condition (``e_tag`` None: create-only, ``"*"``: unconditional,
        else only if the record still has that e_tag; ``delete`` as ``Delete``), and return the new e_tags in
        order (``""`` for a delete). On any conflict (``ETagConflictError``) or failure nothing is written."""
        raise NotImplementedError

    async def _insert(self, key: str, document: str) -> str:
        """Only where ``atomic_writes`` is false: create ``key`` with ``document``; ``ETagConflictError`` if it
        exists. Return the new e_tag."""
        raise NotImplementedError

    async def _replace(self, key: str, document: str, e_tag: str) -> str:
        """Only where ``atomic_writes`` is false: overwrite ``key`` if its e_tag is still ``e_tag``, else
        ``ETagConflictError`` (also when absent). Return the new e_tag."""
        raise NotImplementedError

    async def _upsert(self, key: str, document: str) -> str:
        """Only where ``atomic_writes`` is false: create or overwrite ``key`` unconditionally. Return the new
        e_tag."""
        raise NotImplementedError

    @abstractmethod
    async def _remove(self, key: str) -> None:
        """Delete ``key``; absent is fine."""
        raise NotImplementedError

    async def _remove_if(self, key: str, e_tag: str) -> None:
        """Only where ``atomic_writes`` is false (the others delete in ``_write_atomic``): delete ``key`` if its
        e_tag is still ``e_tag``; ``ETagConflictError`` if it changed; absent is fine."""
        raise NotImplementedError

    async def _load_raw(self, key: str) -> str | None:
        """The record of ``key`` exactly as stored (its envelope included; undecodable bytes replaced), or None
        when absent; never checked or decoded. Default: the document text ``_load_many`` returns."""
        record = (await self._load_many([key])).get(key)
        return None if record is None else record.document

    @abstractmethod
    async def _move(self, key: str, new_key: str) -> bool:
        """Rename ``key``'s record to ``new_key`` keeping its stored bytes exactly (no decoding: it may be
        damaged), and remove ``key``. False when ``key`` is absent. If the record changes meanwhile, raise
        ``ETagConflictError`` and leave it in place (a leftover copy under ``new_key`` is acceptable)."""
        raise NotImplementedError

    @abstractmethod
    async def _close(self) -> None:
        """Release connections and clients; called once."""
        raise NotImplementedError

    async def _remove_expired(self, now: int, limit: int) -> int:
        """Only where ``expiry_cleanup`` is true: delete at most ``limit`` records whose ``EXPIRES_AT`` is at or
        before ``now`` (epoch seconds) and return how many were deleted."""
        raise NotImplementedError

    async def _compact(self) -> None:
        """Drop old copies of deleted data the store keeps in its own files. Default: nothing to do."""
        return None

    def _check_record(self, key: str, document: str) -> None:
        """Raise ``RecordTooLargeError`` (or another ``StorageError``) for a record the backend would refuse,
        before anything is sent. Default: every record is acceptable."""
        return None

    async def _heal(self, err: StorageError) -> bool:
        """Repair what caused ``err`` if the backend can (a deleted container or table), rate-limited; True when
        the failed operation is worth one more try. Default: nothing can be repaired."""
        return False
