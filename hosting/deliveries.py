"""Exactly once under redelivery: the activities a conversation's turns applied, and what each turn sent.

A channel sends an activity again when the bot answered it slowly or with a 5xx (the Bot Connector retries, and
Teams is known to deliver a message twice with the same id). A delivery is identified by (channelId,
conversation.id, activity.id); an activity without an id is never taken for a redelivery.

Each conversation has one delivery log, the record ``{ConversationState key}/deliveries``. It is read with the
turn's other records (the same single read) and written by the turn's single write: on sqlite and memory in the same
transaction as the turn's states, so "applied" and "remembered as applied" cannot disagree. Blob, Table and Cosmos
DB write a turn's records one by one; there the log is written first, so that every turn of the conversation writes
it and two turns racing each other meet at the log before either changed anything else. A turn that wrote its entry
and then failed on another record runs again and replaces its own entry (``add``), or, when it gives up, takes it
back (``withdraw``). It remembers the last ``limit`` activities the conversation's turns applied, each with what the
turn sent (replies, updates, deletions), how many of those reached the channel, and the answer to an invoke. A
redelivered activity is not run again: the pipeline answers it from the log (``hosting.pipeline``), and the adapter
re-sends only what had not been delivered (``hosting.adapter``). The log lives, and expires, with the conversation's
other records.

The record holds two strings: the ids (a JSON list) and the entries (one JSON text per line), so that a turn
decodes only the entry it needs and encodes only the one it adds, and the store's codec walks three fields, not 32
activities. What is kept is bounded: at most ``limit`` entries (``DEFAULT_REMEMBERED``) and ``MAX_LOG_CHARS``
characters in all; an entry whose sent activities are larger than ``MAX_ENTRY_CHARS`` keeps its id only (a
redelivery of it changes nothing and re-sends nothing). A reply is kept without the addressing it shares with the
activity it answers (channel, serviceUrl, conversation, from, recipient, replyToId): the redelivery carries the
same, and it is put back from there.

When a turn deletes a user's records (``forget``), the log of its conversation keeps the ids of that user's
activities (so that a late redelivery still changes nothing) but not what was sent to them, and the logs of the
user's other conversations whose records the turn deletes are deleted with them.

What it cannot promise: replies are remembered as delivered when the turn is saved (noting each delivery would
cost a second write per turn), and corrected only when a delivery fails; a process that dies between saving a turn
and delivering its replies leaves them undelivered for good (never sent twice). On Blob, Table and Cosmos DB, a
process that dies between writing the log and the turn's other records, or a store that fails the write and then
the withdrawal, leaves the activity remembered but not applied: its redelivery is answered from the log.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from botbuilder.core import InvokeResponse
from botbuilder.schema import Activity, ActivityTypes

from .outgoing import Method, Outgoing
from .settings import DEFAULT_REDELIVERY_MEMORY
from .state_keys import conversation_key, key_segment, user_key
from .storage import Delete
from .wire import from_json, to_json

#: The activities a conversation's log remembers by default (``REDELIVERY_MEMORY``); 0 turns the log off.
DEFAULT_REMEMBERED = DEFAULT_REDELIVERY_MEMORY
#: The most characters of entries one log keeps (the record stays far below every backend's record limit:
#: Table Storage's 1 MiB entity, Cosmos DB's 2 MB item).
MAX_LOG_CHARS = 256 * 1024
#: An entry larger than this keeps its id but not what its turn sent.
MAX_ENTRY_CHARS = 64 * 1024
SUFFIX = "/deliveries"
#: The activity types a channel redelivers and whose turns change state or answer: a redelivery of any other
#: (typing, endOfConversation, ...) simply runs again.
TYPES = frozenset(
    {
        ActivityTypes.message,
        ActivityTypes.invoke,
        ActivityTypes.conversation_update,
        ActivityTypes.installation_update,
        ActivityTypes.message_reaction,
        ActivityTypes.event,
    }
)
#: The addressing a reply shares with the activity it answers, as ``TurnContext`` sets it: the reply's attribute
#: and the activity's attribute it is taken from.
_ADDRESSING = (
    ("channel_id", "channel_id"),
    ("service_url", "service_url"),
    ("conversation", "conversation"),
    ("from_property", "recipient"),
    ("recipient", "from_property"),
    ("reply_to_id", "id"),
)
#: Entries and ids are stored with ``"`` and ``'`` swapped: JSON text then needs no escaping inside the record's
#: strings, which halves the time the store's codec spends on the log (measured: 55 -> 25 us per turn).
_SWAP_QUOTES = str.maketrans({'"': "'", "'": '"'})
_VERSION = 1


def log_key(activity: Activity) -> str | None:
    """The key of the delivery log that remembers ``activity``; None when it is not one to remember (no id, or a
    type that is not redelivered to effect)."""
    if not activity.id or activity.type not in TYPES or activity.conversation is None:
        return None
    return conversation_key(activity.channel_id, activity.conversation.id) + SUFFIX


@dataclass(frozen=True, slots=True)
class Delivery:
    """An activity the conversation already applied: what its turn sent, and how much of it reached the channel.

    ``outgoing`` is None when it was too large to keep (or its user was forgotten): nothing is re-sent then.
    ``sent`` counts the items of ``to_channel()`` that were delivered (``expect_replies``: the replies went in
    the HTTP answer, only updates and deletions to the channel).
    """

    activity_id: str
    outgoing: list[Outgoing] | None
    expect_replies: bool
    sent: int
    invoke: InvokeResponse | None

    def to_channel(self) -> list[Outgoing]:
        """What the first delivery sent to the serviceUrl, in order."""
        if self.outgoing is None:
            return []
        if self.expect_replies:
            return [item for item in self.outgoing if item.method != Method.POST]
        return list(self.outgoing)

    def unsent(self) -> list[Outgoing]:
        """What the first delivery tried to send to the serviceUrl and could not."""
        return self.to_channel()[self.sent :]


class DeliveryLog:
    """One conversation's log, as a turn read it (``record`` None: there is none yet); see the module docstring."""

    def __init__(self, key: str, record: Mapping[str, Any] | None, limit: int = DEFAULT_REMEMBERED) -> None:
        self.key = key
        self.limit = limit
        self._e_tag = record.get("e_tag") if record else None
        self._ids, self._texts = _parsed(record) if record else ([], [])

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """The ids of the activities it remembers, oldest first."""
        return list(self._ids)

    def __contains__(self, activity_id: object) -> bool:
        return activity_id in self._ids

    def find(self, activity: Activity, run: str = "") -> Delivery | None:
        """The remembered delivery of ``activity`` (by its id), with its replies addressed as ``activity`` is;
        None when it was not applied yet, or when the entry is the one ``run`` itself wrote in an attempt that
        then failed (see ``add``)."""
        index = self._index(activity.id)
        if index is None:
            return None
        entry = _entry(self._texts[index])
        if run and entry.get("r") == run:
            return None
        return _decode(activity, entry)

    def _index(self, activity_id: str) -> int | None:
        for index in range(len(self._ids) - 1, -1, -1):
            if self._ids[index] == activity_id:
                return index
        return None

    def add(
        self,
        activity: Activity,
        outgoing: list[Outgoing],
        *,
        expect_replies: bool,
        invoke: InvokeResponse | None,
        run: str = "",
    ) -> None:
        """Remember that ``activity`` was applied and what its turn sends (as delivered: ``set_sent`` corrects
        that when it was not), dropping the oldest entries past the bounds.

        ``run`` names the pipeline run (one request) that applies it. Where a backend writes several records one
        by one, the log is written first, and an attempt can write it and then lose the race for another record;
        the run's next attempt finds its own entry (``find`` with the same ``run`` skips it) and replaces it.
        """
        stale = self._index(activity.id)
        if stale is not None:
            del self._ids[stale], self._texts[stale]
        entry = _bare(_user_tag(activity), expect_replies, run)
        changes = any(item.method != Method.POST for item in outgoing)  # provisional ids matter only to those
        entry["o"] = [_encode_item(item, activity, changes) for item in outgoing]
        entry["s"] = sum(1 for item in outgoing if not expect_replies or item.method != Method.POST)
        if invoke is not None:
            entry["i"] = {"status": invoke.status, "body": invoke.body}
        text = _stored(entry)
        if text is None or len(text) > MAX_ENTRY_CHARS:
            text = _stored(_bare(entry.get("u"), expect_replies, run)) or ""
        self._ids.append(activity.id)
        self._texts.append(text)
        self._trim()

    def withdraw(self, activity_id: str, run: str) -> bool:
        """Drop the entry ``run`` wrote for ``activity_id`` (its turn failed after writing it); False when there is
        none."""
        index = self._index(activity_id)
        if index is None or _entry(self._texts[index]).get("r") != run:
            return False
        del self._ids[index], self._texts[index]
        return True

    def set_sent(self, activity_id: str, sent: int) -> bool:
        """Record that ``sent`` items of the delivery's ``to_channel()`` reached the channel; False when the log no
        longer has it."""
        index = self._index(activity_id)
        if index is None:
            return False
        entry = _entry(self._texts[index])
        entry["s"] = sent
        self._texts[index] = _stored(entry) or self._texts[index]
        return True

    def forget_user(self, user_id: str) -> None:
        """Keep the ids of the user's activities but nothing that was sent to them (``forget``)."""
        tag = _tag(user_id)
        for index, text in enumerate(self._texts):
            entry = _entry(text)
            if entry.get("u") == tag and entry.get("o") is not None:
                self._texts[index] = _stored(_bare(tag, entry.get("x"), entry.get("r"))) or ""

    def record(self) -> dict[str, Any]:
        """The record to write (conditional on the e_tag the turn read it with; create-only when there was none)."""
        ids = (_dumps(self._ids) or "[]").translate(_SWAP_QUOTES)
        record: dict[str, Any] = {"v": _VERSION, "ids": ids, "entries": "\n".join(self._texts)}
        if self._e_tag is not None:
            record["e_tag"] = self._e_tag
        return record

    def _trim(self) -> None:
        excess = max(0, len(self._ids) - self.limit)
        size = sum(map(len, self._texts[excess:]))
        while size > MAX_LOG_CHARS and excess < len(self._ids) - 1:
            size -= len(self._texts[excess])
            excess += 1
        if excess:
            del self._ids[:excess], self._texts[:excess]


def deleted_by_turn(activity: Activity, deleted: Iterable[str], log: DeliveryLog | None) -> dict[str, Delete]:
    """What a turn that deletes the records ``deleted`` also does to delivery logs: the logs of the *other*
    conversations those records belong to are deleted with them (returned, to delete in the same write), and when
    the turn's own user's records are among them, ``log`` forgets what was sent to that user."""
    own_conversation = conversation_key(activity.channel_id, activity.conversation.id)
    user = activity.from_property.id if activity.from_property is not None else None
    own_user_keys = (
        (user_key(activity.channel_id, user), f"{own_conversation}/users/{key_segment(user)}/") if user else None
    )
    others: dict[str, Delete] = {}
    forgotten = False
    for key in deleted:
        if own_user_keys is not None and (key == own_user_keys[0] or key.startswith(own_user_keys[1])):
            forgotten = True
        conversation = _conversation_of(key)
        if conversation is not None and conversation != own_conversation:
            others[conversation + SUFFIX] = Delete()
    if forgotten and log is not None and user:
        log.forget_user(user)
    return others


def _conversation_of(key: str) -> str | None:
    """The ConversationState key of the conversation a state record belongs to, or None (a user record, ...)."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[1] == "conversations" and not key.startswith("_"):
        return "/".join(parts[:3])
    return None


def _encode_item(item: Outgoing, activity: Activity, keep_provisional_id: bool) -> dict[str, Any]:
    """``{"m": method, "a": the activity's wire form without the addressing it shares with ``activity``, "s":
    which fields were left out (bits of _ADDRESSING), "p": its provisional id (only when the turn also updates or
    deletes)}``."""
    sent = copy.copy(item.activity)
    shared = 0
    for bit, (attribute, source) in enumerate(_ADDRESSING):
        value = getattr(sent, attribute, None)
        if value is not None and (value is (theirs := getattr(activity, source, None)) or value == theirs):
            setattr(sent, attribute, None)
            shared |= 1 << bit
    encoded: dict[str, Any] = {"m": item.method.value, "a": to_json(sent)}
    if shared:
        encoded["s"] = shared
    if keep_provisional_id and item.provisional_id:
        encoded["p"] = item.provisional_id
    return encoded


def _decode(activity: Activity, entry: dict[str, Any]) -> Delivery:
    """The delivery ``entry`` describes; an entry this code cannot read still says "applied" (nothing re-sent)."""
    try:
        outgoing = None
        if entry.get("o") is not None:
            outgoing = []
            for item in entry["o"]:
                sent = from_json(Activity, item["a"])
                shared = int(item.get("s", 0))
                for bit, (attribute, source) in enumerate(_ADDRESSING):
                    if shared & 1 << bit:
                        setattr(sent, attribute, getattr(activity, source))
                outgoing.append(Outgoing(Method(item["m"]), sent, item.get("p")))
        invoke = entry.get("i")
        return Delivery(
            activity_id=activity.id,
            outgoing=outgoing,
            expect_replies=bool(entry.get("x")),
            sent=int(entry.get("s", 0)),
            invoke=InvokeResponse(status=int(invoke["status"]), body=invoke.get("body")) if invoke else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return Delivery(activity.id, None, bool(entry.get("x")), 0, None)


def _entry(text: str) -> dict[str, Any]:
    try:
        entry = json.loads(text.translate(_SWAP_QUOTES))
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


def _bare(user: object, expect_replies: object, run: object) -> dict[str, Any]:
    """An entry that remembers the activity was applied, and nothing of what its turn sent (``o`` None).

    Fields: ``u`` whose activity it was (``_tag``), ``x`` expectReplies, ``r`` the run that wrote it (kept only
    where a backend writes record by record), ``o`` what the turn sent (``_encode_item``), ``s`` how much of it
    reached the channel, ``i`` the invoke's answer."""
    entry: dict[str, Any] = {"u": user, "o": None, "s": 0}
    if expect_replies:
        entry["x"] = True
    if run:
        entry["r"] = run
    return entry


def _parsed(record: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The ids and entry texts of a stored log; empty for a log in a shape this code did not write."""
    ids, entries = record.get("ids"), record.get("entries")
    if record.get("v") != _VERSION or not isinstance(ids, str) or not isinstance(entries, str):
        return [], []
    try:
        id_list = json.loads(ids.translate(_SWAP_QUOTES))
    except ValueError:
        return [], []
    texts = entries.split("\n") if entries else []
    if not _strings(id_list) or len(id_list) != len(texts):
        return [], []
    return id_list, texts


def _dumps(value: object) -> str | None:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):  # an invoke body the bot made that has no JSON form: keep the id only
        return None


def _stored(entry: dict[str, Any]) -> str | None:
    """An entry as the record keeps it (``_entry`` reads it back)."""
    text = _dumps(entry)
    return None if text is None else text.translate(_SWAP_QUOTES)


def _user_tag(activity: Activity) -> str | None:
    user = activity.from_property.id if activity.from_property is not None else None
    return _tag(user) if user else None


def _tag(user_id: str) -> str:
    """Which user an entry is about, without storing their id again (told apart within one conversation)."""
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def _strings(value: object) -> bool:
    return isinstance(value, list) and set(map(type, value)) <= {str}
