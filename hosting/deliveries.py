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
back (``withdraw``). It remembers the last ``limit`` activities the conversation's turns applied, and for each what
a redelivery must answer: with ``expectReplies`` the turn's replies (the caller retries because it lost the answer
that carried them) and how many of its updates and deletions reached the channel; otherwise only what did not reach
the channel (noted after a failed delivery, ``note_delivery``: in the usual case nothing the bot said is stored);
and an invoke's answer. A redelivered activity is not run again: the pipeline answers it from the log
(``hosting.pipeline``), and the adapter sends only what had not been delivered (``hosting.adapter``). The log lives,
and expires, with the conversation's other records.

The record holds two strings: the ids (a JSON list) and the entries (one JSON text per line), so that a turn decodes
only the entry it needs and encodes only the one it adds, and the store's codec walks three fields, not 32
activities. What is kept is bounded: at most ``limit`` entries (``DEFAULT_REMEMBERED``), of which only the newest
``WITH_REPLIES`` keep what their turns sent, and ``MAX_LOG_CHARS`` characters in all; an entry whose sent activities
are larger than ``MAX_ENTRY_CHARS`` keeps its id only (a redelivery of such an entry changes nothing and re-sends
nothing). A reply is kept without the addressing it shares with the activity it answers (channel, serviceUrl,
conversation, from, recipient, replyToId): the redelivery carries the same, and it is put back from there.

When a turn deletes a user's records (``forget``), the logs of its conversation and of the other conversations
whose records it deletes keep the ids of that user's activities (so that a late redelivery still changes nothing)
but not what was sent to them (``forgotten_by_turn``, ``DeliveryLog.forget_user``), in the same write.

What it cannot promise: what goes to the channel is taken as delivered when the turn is saved (noting each delivery
would cost a second write per turn), and corrected only when a delivery fails; a process that dies between saving a turn
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
from .wire import from_json, to_json

#: The activities a conversation's log remembers by default (``REDELIVERY_MEMORY``); 0 turns the log off.
DEFAULT_REMEMBERED = DEFAULT_REDELIVERY_MEMORY
#: The most characters of entries one log keeps (the record stays far below every backend's record limit:
#: Table Storage's 1 MiB entity, Cosmos DB's 2 MB item).
MAX_LOG_CHARS = 256 * 1024
#: An entry larger than this keeps its id but not what its turn sent.
MAX_ENTRY_CHARS = 64 * 1024
#: Only the newest entries keep what their turns sent; older ones keep their ids (a redelivery of them changes
#: nothing and sends nothing). Channels retry within seconds, and every turn reads and writes the whole log: with
#: the replies of all 32 it was a 7 KB record and ~150 us of encoding per turn, with 8 about 1.2 KB and 60 us.
WITH_REPLIES = 8
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
#: The fields of an entry that hold what its turn sent (``o``) and an invoke's answer (``i``): stored after its bare
#: part (``_bare``), whose fields (a hex tag, numbers, booleans, a run name) cannot contain their stored names, so
#: the first of those is where an entry is cut to keep its id only (``_without_sent``).
_SENT_FIELDS = ("o", "i")
_SENT_PARTS = tuple(f",'{name}':" for name in _SENT_FIELDS)
_VERSION = 1


def remembered(activity: Activity) -> bool:
    """Whether ``activity`` is one to remember: it has an id and a type that is redelivered to effect. Its log is
    ``{ConversationState key}`` + ``SUFFIX``."""
    return bool(activity.id) and activity.type in TYPES


@dataclass(frozen=True, slots=True)
class Delivery:
    """An activity the conversation already applied, and what is kept of what its turn sent.

    ``outgoing``: with ``expect_replies`` everything (the replies go in the HTTP answer, updates and deletions to
    the channel); otherwise only what had not reached the channel when that was last noted. None when nothing is
    kept (all of it was delivered, it aged, was too large, or its user was forgotten): nothing is sent then.
    ``sent`` counts the items of ``to_channel()`` that were delivered.
    """

    activity_id: str
    outgoing: list[Outgoing] | None
    expect_replies: bool
    sent: int
    invoke: InvokeResponse | None

    def to_channel(self) -> list[Outgoing]:
        """What is kept of what goes to the serviceUrl, in order."""
        if self.outgoing is None:
            return []
        if self.expect_replies:
            return [item for item in self.outgoing if item.method != Method.POST]
        return list(self.outgoing)

    def unsent(self) -> list[Outgoing]:
        """What was to go to the serviceUrl and has not got there: what a redelivery sends."""
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
        """Remember that ``activity`` was applied, dropping the oldest entries past the bounds, and what a
        redelivery must answer: for ``expect_replies`` the replies (the caller may have lost the answer that
        carried them), and an invoke's answer. What goes to the channel is taken as delivered, so it is not kept:
        ``note_delivery`` keeps what did not get there.

        ``run`` names the pipeline run (one request) that applies it. Where a backend writes several records one
        by one, the log is written first, and an attempt can write it and then lose the race for another record;
        the run's next attempt finds its own entry (``find`` with the same ``run`` skips it) and replaces it.
        """
        stale = self._index(activity.id)
        if stale is not None:
            del self._ids[stale], self._texts[stale]
        entry = _bare(_user_tag(activity), expect_replies, run)
        if expect_replies:
            entry["o"] = _encoded(outgoing, activity)
            entry["s"] = sum(1 for item in outgoing if item.method != Method.POST)
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

    def note_delivery(self, activity: Activity, sent: int, unsent: list[Outgoing]) -> bool:
        """Record how sending to the channel went for ``activity``: ``sent`` of the delivery's ``to_channel()`` got
        there, ``unsent`` (the rest, in order) did not; a redelivery sends those. False when the log no longer has
        the activity."""
        index = self._index(activity.id)
        if index is None:
            return False
        entry = _entry(self._texts[index])
        if entry.get("x") and entry.get("o") is not None:  # it keeps everything: only the count changes
            entry["s"] = sent
        else:
            entry["o"], entry["s"] = _encoded(unsent, activity), 0
        self._texts[index] = _stored(entry) or self._texts[index]
        return True

    def forget_user(self, user_id: str) -> bool:
        """Keep the ids of the user's activities but nothing that was sent to them (``forget``); False when there
        was nothing to forget."""
        tag = _tag(user_id)
        changed = False
        for index, text in enumerate(self._texts):
            entry = _entry(text)
            if entry.get("u") == tag and any(entry.get(name) is not None for name in _SENT_FIELDS):
                self._texts[index] = _without_sent(text)
                changed = True
        return changed

    def record(self) -> dict[str, Any]:
        """The record to write (conditional on the e_tag the turn read it with; create-only when there was none)."""
        ids = _swap_quotes(_dumps(self._ids) or "[]")
        record: dict[str, Any] = {"v": _VERSION, "ids": ids, "entries": "\n".join(self._texts)}
        if self._e_tag is not None:
            record["e_tag"] = self._e_tag
        return record

    def _trim(self) -> None:
        aged = len(self._texts) - WITH_REPLIES - 1  # the entry that just left the newest WITH_REPLIES: its id only
        if aged >= 0:
            self._texts[aged] = ""
        excess = max(0, len(self._ids) - self.limit)
        size = sum(map(len, self._texts[excess:]))
        while size > MAX_LOG_CHARS and excess < len(self._ids) - 1:
            size -= len(self._texts[excess])
            excess += 1
        if excess:
            del self._ids[:excess], self._texts[:excess]


def forgotten_by_turn(activity: Activity, deleted: Iterable[str]) -> tuple[bool, list[str]]:
    """What a turn that deletes the records ``deleted`` means for delivery logs: whether they include its own
    user's records (the user is being forgotten: the turn's own log must forget what was sent to them), and the
    logs of the *other* conversations whose records are among them (to forget it there too)."""
    own_conversation = conversation_key(activity.channel_id, activity.conversation.id)
    user = activity.from_property.id if activity.from_property is not None else None
    own_user_keys = (
        (user_key(activity.channel_id, user), f"{own_conversation}/users/{key_segment(user)}/") if user else None
    )
    others: dict[str, None] = {}  # in order, once each
    forgotten = False
    for key in deleted:
        if own_user_keys is not None and (key == own_user_keys[0] or key.startswith(own_user_keys[1])):
            forgotten = True
        conversation = _conversation_of(key)
        if conversation is not None and conversation != own_conversation:
            others[conversation + SUFFIX] = None
    return forgotten, list(others)


def _conversation_of(key: str) -> str | None:
    """The ConversationState key of the conversation a state record belongs to, or None (a user record, ...)."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[1] == "conversations" and not key.startswith("_"):
        return "/".join(parts[:3])
    return None


def _encoded(outgoing: list[Outgoing], activity: Activity) -> list[dict[str, Any]]:
    changes = any(item.method != Method.POST for item in outgoing)  # provisional ids matter only to those
    return [_encode_item(item, activity, changes) for item in outgoing]


def _encode_item(item: Outgoing, activity: Activity, keep_provisional_id: bool) -> dict[str, Any]:
    """``{"m": method, "a": the activity's wire form without the addressing it shares with ``activity``, "s":
    which fields were left out (bits of _ADDRESSING), "p": its provisional id (only when the turn also updates or
    deletes)}``."""
    sent = copy.copy(item.activity)
    sent.timestamp = sent.local_timestamp = None  # the channel stamps what it receives; a re-sent reply gets new ones
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
        entry = json.loads(_swap_quotes(text))
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


def _bare(user: object, expect_replies: object, run: object) -> dict[str, Any]:
    """An entry that remembers the activity was applied, and nothing of what its turn sent (no ``o``).

    Fields: ``u`` whose activity it was (``_tag``), ``x`` expectReplies, ``r`` the run that wrote it (kept only
    where a backend writes record by record), ``o`` what the turn sent (``_encode_item``), ``s`` how much of it
    reached the channel, ``i`` the invoke's answer."""
    entry: dict[str, Any] = {"u": user, "s": 0}
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
        id_list = json.loads(_swap_quotes(ids))
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
    """An entry as the record keeps it (``_entry`` reads it back): its bare fields first, then ``o`` (what was
    sent) and ``i`` (the invoke's answer) when kept, with ``"`` and ``'`` swapped (``_swap_quotes``)."""
    bare = _dumps({name: value for name, value in entry.items() if name not in _SENT_FIELDS})
    if bare is None:
        return None
    kept = {name: entry[name] for name in _SENT_FIELDS if entry.get(name) is not None}
    if not kept:
        return _swap_quotes(bare)
    sent = _dumps(kept)
    if sent is None:  # an invoke answer the bot made that has no JSON form: keep the id only
        return _swap_quotes(bare)
    return _swap_quotes(f"{bare[:-1]},{sent[1:]}")


def _without_sent(text: str) -> str:
    """A stored entry without what its turn sent (its id only is remembered)."""
    cuts = [cut for cut in (text.find(part) for part in _SENT_PARTS) if cut >= 0]
    return text[: min(cuts)] + "}" if cuts else text


def _swap_quotes(text: str) -> str:
    """``text`` with ``"`` and ``'`` swapped. JSON stored this way inside a JSON string needs no escaping, which
    halves what the store's codec spends on the log (measured: 55 -> 25 us per turn); three passes of
    ``str.replace`` are ten times faster than ``str.translate`` (NUL is never in JSON text)."""
    return text.replace("'", "\0").replace('"', "'").replace("\0", '"')


def _user_tag(activity: Activity) -> str | None:
    user = activity.from_property.id if activity.from_property is not None else None
    return _tag(user) if user else None


def _tag(user_id: str) -> str:
    """Which user an entry is about, without storing their id again (told apart within one conversation)."""
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def _strings(value: object) -> bool:
    return isinstance(value, list) and set(map(type, value)) <= {str}
