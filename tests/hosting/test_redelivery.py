"""Exactly once under redelivery: an activity a channel sends again is applied once and its replies sent once.

The real app over real HTTP with the counting bot (tests/support/counting_bot.py: its echo carries the
conversation's counter, so "applied twice" shows as a skipped number) and the local fake channel. The channel's
retries are played by posting the same activity (same id) again. Worker processes racing copies of one activity
are in tests/hosting/test_concurrency.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from botbuilder.core import ActivityHandler, BotState, InvokeResponse, TurnContext
from botbuilder.schema import Activity, ChannelAccount, ConversationAccount

from app import create_app
from config import load_settings
from hosting import ConversationState
from hosting.deliveries import (
    MAX_ENTRY_CHARS,
    MAX_LOG_CHARS,
    SUFFIX,
    WITH_REPLIES,
    DeliveryLog,
    _entry,
    forgotten_by_turn,
)
from hosting.outgoing import Method, Outgoing
from hosting.pipeline import TurnOutcome
from hosting.state_keys import conversation_key, private_conversation_key, user_key
from hosting.storage import (
    ETagConflictError,
    ExpiryPolicy,
    MemoryStateStorage,
    StateStorage,
    StorageError,
)
from hosting.storage.base import PendingWrite
from tests.support import counting_bot
from tests.support.azurite import open_scratch_blob_storage
from tests.support.channel import Conversation, FakeChannel, serving
from tests.support.clock import Clock


@pytest_asyncio.fixture
async def memory_store() -> MemoryStateStorage:
    return MemoryStateStorage()


@pytest_asyncio.fixture
async def counting_on_memory(memory_store: MemoryStateStorage) -> AsyncIterator[str]:
    """The counting bot on a memory store the test can look into; yields its messages URL."""
    settings = load_settings({"PORT": "0", "STORAGE": "memory"})
    async with serving(
        await create_app(settings, bot_factory=lambda _: counting_bot.counting_bot(memory_store))
    ) as url:
        yield url


def _texts(activities: list[dict[str, Any]]) -> list[str]:
    return [activity.get("text") or "" for activity in activities]


def _redelivered_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and TurnOutcome.REDELIVERED in r.getMessage()
    ]


async def test_a_message_delivered_twice_is_applied_once_and_answered_as_the_first_time(
    counting_conversation: Conversation, caplog: pytest.LogCaptureFixture
) -> None:
    talk = counting_conversation
    await talk.say("hi")
    message = talk.activity(text="only once please")

    first = await talk.post(message)
    again = await talk.post(message)
    after = await talk.say("next")

    assert first.texts == [counting_bot.echo("only once please", 2)]
    if talk.expect_replies:  # the caller lost the first answer: it gets the same replies again
        assert again.status == 200
        assert again.activities == first.activities
    else:  # the replies reached the channel the first time: nothing is sent again
        assert again.status == 201
        assert again.activities == []
    assert after.texts == [counting_bot.echo("next", 3)], "the counter moved once for the two deliveries"
    [line] = _redelivered_lines(caplog)
    assert talk.conversation_id in line
    assert "only once please" not in line


async def test_a_redelivery_after_the_channel_refused_the_reply_sends_it_once(
    counting_on_memory: str, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    """The first delivery is saved, but the channel answers the echo with a 500: the bot answers 502. The channel
    then delivers the activity again and accepts what the bot sends: exactly one echo arrives, the counter moves
    once, and a third delivery sends nothing."""
    talk = Conversation(http, counting_on_memory, channel)
    await talk.say("hi")
    message = talk.activity(text="are you there")
    channel.fail_next = 1

    refused = await talk.post(message)
    retried = await talk.post(message)
    third = await talk.post(message)
    after = await talk.say("next")

    assert (refused.status, refused.body["error"]["code"], refused.activities) == (502, "reply_not_delivered", [])
    assert (retried.status, retried.texts) == (201, [counting_bot.echo("are you there", 2)])
    assert (third.status, third.activities) == (201, [])
    assert after.texts == [counting_bot.echo("next", 3)]


async def test_an_activity_without_an_id_is_never_taken_for_a_redelivery(counting_conversation: Conversation) -> None:
    talk = counting_conversation
    message = talk.activity(text="no id")
    del message["id"]

    first = await talk.post(message)
    second = await talk.post(message)

    assert first.texts == [counting_bot.echo("no id", 1)]
    assert second.texts == [counting_bot.echo("no id", 2)]


async def test_the_same_id_in_another_conversation_is_another_activity(
    counting_on_memory: str, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    one, two = (Conversation(http, counting_on_memory, channel) for _ in range(2))
    first = await one.post(one.activity(id="shared-id", text="in one"))
    second = await two.post(two.activity(id="shared-id", text="in two"))

    assert first.texts == [counting_bot.echo("in one", 1)]
    assert second.texts == [counting_bot.echo("in two", 1)]


@pytest.mark.parametrize("expect_replies", [False, True], ids=["normal", "expectReplies"])
async def test_concurrent_copies_are_applied_once_and_answered_without_an_error(
    counting_on_memory: str, http: aiohttp.ClientSession, channel: FakeChannel, expect_replies: bool
) -> None:
    """4 copies of each of 8 activities, all at once, in one process: the copies wait for the first (the
    conversation's lock) and are answered from the delivery log."""
    talk = Conversation(http, counting_on_memory, channel, expect_replies=expect_replies)
    messages = [talk.activity(text=f"burst {i}") for i in range(8)]

    async def post(message: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        async with http.post(counting_on_memory, json=message) as answer:
            body = await answer.json() if answer.content_type == "application/json" else None
            return answer.status, (body or {}).get("activities", [])

    channel.take()
    answers = await asyncio.gather(*(post(message) for message in messages for _ in range(4)))

    assert {status for status, _ in answers} == {200 if expect_replies else 201}
    delivered = [a for _, activities in answers for a in activities] if expect_replies else channel.take()
    echoes = [counting_bot.counted(text) for text in _texts(delivered)]
    assert None not in echoes
    if expect_replies:  # every copy is answered with its activity's one echo
        assert sorted(echo.text for echo in echoes) == sorted(f"burst {i}" for i in range(8) for _ in range(4))
        for i in range(8):
            assert len({echo.number for echo in echoes if echo.text == f"burst {i}"}) == 1
    else:
        assert sorted(echo.text for echo in echoes) == sorted(f"burst {i}" for i in range(8))
    assert sorted({echo.number for echo in echoes}) == list(range(1, 9)), "the counter moved exactly 8"


class InvokeCounter(ActivityHandler):
    """Answers each invoke with how many it has seen in the conversation (stored in ConversationState)."""

    def __init__(self, conversation_state: ConversationState) -> None:
        self._seen = conversation_state.create_property("invokes")

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        seen = (await self._seen.get(turn_context) or 0) + 1
        await self._seen.set(turn_context, seen)
        return InvokeResponse(status=200, body={"seen": seen})


async def test_a_redelivered_invoke_gets_the_first_answer_and_changes_nothing(
    http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    def invoke_bot(storage: StateStorage) -> tuple[InvokeCounter, tuple[BotState, ...]]:
        state = ConversationState(storage)
        return InvokeCounter(state), (state,)

    settings = load_settings({"PORT": "0", "STORAGE": "memory"})
    async with serving(await create_app(settings, bot_factory=invoke_bot)) as url:
        talk = Conversation(http, url, channel)
        invoke = talk.activity("invoke", name="count/me", value={})
        answers = [await talk.post(invoke), await talk.post(invoke), await talk.post(talk.activity("invoke", name="x"))]

    assert [(answer.status, answer.body) for answer in answers] == [
        (200, {"seen": 1}),
        (200, {"seen": 1}),
        (200, {"seen": 2}),
    ]


async def test_remembered_activities_expire_with_the_conversation(
    http: aiohttp.ClientSession, channel: FakeChannel, memory_store: MemoryStateStorage
) -> None:
    clock = Clock()
    memory_store.expiry = ExpiryPolicy(conversation_ttl=timedelta(hours=1), user_ttl=None, clock=clock)
    settings = load_settings({"PORT": "0", "STORAGE": "memory"})
    async with serving(
        await create_app(settings, bot_factory=lambda _: counting_bot.counting_bot(memory_store))
    ) as url:
        talk = Conversation(http, url, channel, expect_replies=True)
        message = talk.activity(text="remember me")
        first = await talk.post(message)
        assert memory_store.expiry.ttl_for(talk.deliveries_key) == timedelta(hours=1)
        clock.advance(minutes=59)
        within = await talk.post(message)
        clock.advance(hours=2)  # the conversation expired: its counter and its delivery log with it
        expired = await talk.post(message)

    assert first.texts == within.texts == [counting_bot.echo("remember me", 1)]
    assert expired.texts == [counting_bot.echo("remember me", 1)]  # applied afresh to the fresh conversation
    assert talk.deliveries_key in await memory_store.read([talk.deliveries_key])


async def test_without_a_delivery_log_a_redelivery_is_applied_again(
    http: aiohttp.ClientSession, channel: FakeChannel, memory_store: MemoryStateStorage
) -> None:
    settings = load_settings({"PORT": "0", "STORAGE": "memory", "REDELIVERY_MEMORY": "0"})
    async with serving(
        await create_app(settings, bot_factory=lambda _: counting_bot.counting_bot(memory_store))
    ) as url:
        talk = Conversation(http, url, channel, expect_replies=True)
        message = talk.activity(text="twice")
        answers = [await talk.post(message), await talk.post(message)]

    assert [answer.texts for answer in answers] == [[counting_bot.echo("twice", 1)], [counting_bot.echo("twice", 2)]]
    assert await memory_store.read([talk.deliveries_key]) == {}


@pytest.mark.parametrize(
    "damaged",
    [
        {"v": 1, "ids": "not a list", "entries": ""},
        {"v": 1, "ids": '["a", "b"]', "entries": "{}"},
        {"v": 1, "ids": "[1, 2]", "entries": "3\n4"},
        {"v": 1, "ids": ["a"], "entries": ["{}"]},
        {"v": 99, "ids": "[]", "entries": ""},
    ],
    ids=["ids-not-json", "lengths-differ", "ids-not-strings", "not-strings", "unknown-version"],
)
async def test_a_delivery_log_in_a_shape_this_code_did_not_write_remembers_nothing_and_is_rewritten(
    counting_on_memory: str,
    http: aiohttp.ClientSession,
    channel: FakeChannel,
    memory_store: MemoryStateStorage,
    damaged: dict[str, Any],
) -> None:
    talk = Conversation(http, counting_on_memory, channel, expect_replies=True)
    await memory_store.write({talk.deliveries_key: dict(damaged)})
    message = talk.activity(text="hello")

    first = await talk.post(message)
    again = await talk.post(message)

    assert first.texts == again.texts == [counting_bot.echo("hello", 1)]
    stored = (await memory_store.read([talk.deliveries_key]))[talk.deliveries_key]
    assert DeliveryLog(talk.deliveries_key, stored).ids == [message["id"]]


async def test_an_entry_this_code_cannot_read_still_means_applied(
    counting_on_memory: str, http: aiohttp.ClientSession, channel: FakeChannel, memory_store: MemoryStateStorage
) -> None:
    talk = Conversation(http, counting_on_memory, channel, expect_replies=True)
    message = talk.activity(text="hello")
    await talk.post(message)
    record = (await memory_store.read([talk.deliveries_key]))[talk.deliveries_key]
    record["entries"] = "{not json"
    await memory_store.write({talk.deliveries_key: record})

    again = await talk.post(message)
    after = await talk.say("next")

    assert (again.status, again.activities) == (200, [])
    assert after.texts == [counting_bot.echo("next", 2)]


# --- stores that write record by record ---------------------------------------------------------------------------


class FailingRecord:
    """Makes a store's writes of one key fail ``times`` times (``error``), after the keys before it in the same
    write were written: what a Blob, Table or Cosmos DB write that conflicts or fails part-way leaves."""

    def __init__(self, storage: StateStorage, key: str, error: Exception, times: int) -> None:
        self.key, self.error, self.times = key, error, times
        self._write_one = storage._write_one
        storage._write_one = self  # type: ignore[method-assign]

    async def __call__(self, write: PendingWrite) -> str:
        if write.key == self.key and self.times > 0:
            self.times -= 1
            raise self.error
        return await self._write_one(write)


@pytest_asyncio.fixture
async def blob_store(azurite) -> AsyncIterator[StateStorage]:
    """Azure Blob storage (Azurite): it writes a turn's records one by one, the delivery log first."""
    store = await open_scratch_blob_storage(azurite)
    try:
        yield store
    finally:
        await store.close()


async def test_an_attempt_that_wrote_the_log_and_then_lost_a_race_runs_again_over_its_own_entry(
    http: aiohttp.ClientSession, channel: FakeChannel, blob_store: StateStorage
) -> None:
    settings = load_settings({"PORT": "0", "STORAGE": "memory"})
    async with serving(await create_app(settings, bot_factory=lambda _: counting_bot.counting_bot(blob_store))) as url:
        talk = Conversation(http, url, channel, expect_replies=True)
        counter = conversation_key(talk.channel_id, talk.conversation_id)
        raced = FailingRecord(blob_store, counter, ETagConflictError("changed by another process (simulated)"), 1)
        message = talk.activity(text="hello")

        first = await talk.post(message)
        again = await talk.post(message)

    assert raced.times == 0, "the first attempt wrote the log, then lost the race for the counter"
    assert first.texts == again.texts == [counting_bot.echo("hello", 1)]
    stored = await blob_store.read([counter, talk.deliveries_key])
    assert stored[counter][counting_bot.COUNTER]["count"] == 1
    assert DeliveryLog(talk.deliveries_key, stored[talk.deliveries_key]).ids == [message["id"]]


async def test_a_turn_that_failed_after_writing_the_log_takes_its_entry_back(
    http: aiohttp.ClientSession, channel: FakeChannel, blob_store: StateStorage
) -> None:
    """The log is written, then the store fails the counter's write: 503, and the log does not claim the
    activity, so the channel's retry is applied (not answered from the log)."""
    settings = load_settings({"PORT": "0", "STORAGE": "memory"})
    async with serving(await create_app(settings, bot_factory=lambda _: counting_bot.counting_bot(blob_store))) as url:
        talk = Conversation(http, url, channel, expect_replies=True)
        counter = conversation_key(talk.channel_id, talk.conversation_id)
        FailingRecord(blob_store, counter, StorageError("blob: the service failed (simulated)"), 1)
        message = talk.activity(text="hello")

        failed = await talk.post(message)
        assert (
            DeliveryLog(
                talk.deliveries_key, (await blob_store.read([talk.deliveries_key])).get(talk.deliveries_key)
            ).ids
            == []
        )
        retried = await talk.post(message)

    assert failed.status == 503
    assert retried.texts == [counting_bot.echo("hello", 1)]


# --- the log itself ------------------------------------------------------------------------------------------------


def _activity(activity_id: str, user: str = "ada", conversation: str = "c1") -> Activity:
    return Activity(
        type="message",
        id=activity_id,
        channel_id="test",
        service_url="http://127.0.0.1:1/",
        conversation=ConversationAccount(id=conversation),
        from_property=ChannelAccount(id=user),
        recipient=ChannelAccount(id="bot"),
        text="hi",
    )


def _reply(activity: Activity, text: str) -> Outgoing:
    reply = activity.create_reply(text)
    return Outgoing(Method.POST, reply, "pending-1")


def test_the_log_keeps_the_last_entries_the_newest_with_replies_addressed_as_the_redelivery() -> None:
    log = DeliveryLog("test/conversations/c1" + SUFFIX, None, limit=32)
    for i in range(40):
        activity = _activity(f"a{i}")
        log.add(activity, [_reply(activity, f"echo {i}")], expect_replies=True, invoke=None)

    assert len(log) == 32
    assert "a7" not in log
    assert "a8" in log
    assert log.find(_activity("a31")).outgoing is None, "past the newest WITH_REPLIES: the id only"
    assert log.find(_activity("a32")).outgoing is not None
    found = log.find(_activity("a39"))
    assert found is not None
    assert found.outgoing is not None
    [item] = found.outgoing
    assert (item.method, item.activity.text, item.provisional_id) == (Method.POST, "echo 39", None)  # no update
    assert (item.activity.reply_to_id, item.activity.recipient.id, item.activity.from_property.id) == (
        "a39",
        "ada",
        "bot",
    )
    assert (item.activity.conversation.id, item.activity.service_url) == ("c1", "http://127.0.0.1:1/")
    stored = _entry(log.record()["entries"].split("\n")[-1])
    assert "conversation" not in stored["o"][0]["a"], "the addressing is not stored again with every reply"


def test_the_log_stays_within_its_size_and_a_huge_entry_keeps_its_id_only() -> None:
    log = DeliveryLog("k", None, limit=256)
    big = "x" * (MAX_ENTRY_CHARS // 2)
    for i in range(20):
        activity = _activity(f"a{i}")
        log.add(activity, [_reply(activity, big)], expect_replies=True, invoke=None)
    huge = _activity("huge")
    log.add(huge, [_reply(huge, "y" * MAX_ENTRY_CHARS)], expect_replies=True, invoke=None)

    assert len(log.record()["entries"]) <= MAX_LOG_CHARS
    assert "a0" not in log
    assert "a19" in log
    found = log.find(huge)
    assert found is not None
    assert found.outgoing is None
    assert found.unsent() == []


def test_only_what_did_not_reach_the_channel_is_kept_for_a_redelivery() -> None:
    log = DeliveryLog("k", None)
    activity = _activity("a1")
    outgoing = [_reply(activity, "one"), _reply(activity, "two"), _reply(activity, "three")]
    log.add(activity, outgoing, expect_replies=False, invoke=None)
    found = log.find(activity)
    assert found is not None
    assert found.outgoing is None, "taken as delivered: nothing of it is stored"

    log.note_delivery(activity, 1, outgoing[1:])  # the channel took "one", then failed
    assert [item.activity.text for item in log.find(activity).unsent()] == ["two", "three"]

    log.note_delivery(activity, 1, outgoing[2:])  # the redelivery sent "two", then failed again
    assert [item.activity.text for item in log.find(activity).unsent()] == ["three"]


def test_expect_replies_keeps_the_replies_and_counts_the_changes_that_reached_the_channel() -> None:
    log = DeliveryLog("k", None)
    activity = _activity("a1")
    update = Outgoing(Method.PUT, Activity(id="earlier", text="edited"))
    log.add(activity, [_reply(activity, "one"), update], expect_replies=True, invoke=None)
    assert log.find(activity).unsent() == []

    log.note_delivery(activity, 0, [update])

    found = log.find(activity)
    assert [item.activity.text for item in found.outgoing] == ["one", "edited"]
    assert [item.activity.text for item in found.unsent()] == ["edited"]


def test_forgetting_a_user_keeps_their_ids_but_not_what_was_sent_to_them() -> None:
    log = DeliveryLog("test/conversations/c1" + SUFFIX, None)
    for activity_id, user in (("a1", "ada"), ("a2", "bob"), ("a3", "ada")):
        activity = _activity(activity_id, user)
        log.add(activity, [_reply(activity, f"hello {user}")], expect_replies=True, invoke=None)

    assert log.forget_user("ada")

    assert {"a1", "a2", "a3"} <= set(log.ids)
    assert log.find(_activity("a1", "ada")).outgoing is None
    assert log.find(_activity("a3", "ada")).outgoing is None
    assert [item.activity.text for item in log.find(_activity("a2", "bob")).outgoing] == ["hello bob"]
    assert "hello ada" not in json.dumps(log.record())
    assert not log.forget_user("ada"), "nothing left to forget"


def test_a_turn_deleting_its_users_records_forgets_them_in_every_conversation_it_deletes_records_in() -> None:
    deleted = {
        user_key("test", "ada"),
        private_conversation_key("test", "c1", "ada", "PrivateConversationState"),
        private_conversation_key("test", "c2", "ada", "PrivateConversationState"),
        conversation_key("test", "c3"),
        "_damaged/test/conversations/c4",
    }

    forgotten, others = forgotten_by_turn(_activity("a4", "ada", conversation="c1"), deleted)

    assert forgotten
    assert sorted(others) == [conversation_key("test", "c2") + SUFFIX, conversation_key("test", "c3") + SUFFIX]


def test_a_turn_that_deletes_nothing_of_its_user_forgets_nothing() -> None:
    deleted = {user_key("test", "bob"), "_damaged/test/users/ada"}

    assert forgotten_by_turn(_activity("a2", "ada"), deleted) == (False, [])


async def test_the_log_lives_as_long_as_its_conversation_on_every_backend(storage: StateStorage) -> None:
    """The log's key sits under the conversation's (ids escaped), so it gets the conversation's time to live."""
    policy = ExpiryPolicy(conversation_ttl=timedelta(days=30), user_ttl=timedelta(days=400))
    key = conversation_key("msteams", "19:abc/def@thread.v2") + SUFFIX
    assert policy.ttl_for(key) == timedelta(days=30)
    await storage.write({key: DeliveryLog(key, None).record()})
    assert (await storage.read([key]))[key]["ids"] == "[]"


def test_an_entry_keeps_any_invoke_answer_whole_until_it_ages() -> None:
    log = DeliveryLog("k", None)
    invoke = _activity("invoke-1")
    body = {"o": "x,'o':y", "quotes": "\"'", "n": [1, {"o": None}]}
    log.add(invoke, [], expect_replies=False, invoke=InvokeResponse(status=200, body=body))

    found = log.find(invoke)
    assert found is not None
    assert found.invoke is not None
    assert (found.invoke.status, found.invoke.body) == (200, body)

    for i in range(WITH_REPLIES):
        later = _activity(f"a{i}")
        log.add(later, [_reply(later, "echo")], expect_replies=False, invoke=None)
    aged = log.find(invoke)
    assert aged is not None
    assert (aged.outgoing, aged.invoke) == (None, None), "aged: the id only"
