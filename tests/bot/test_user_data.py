"""forget and export on every backend, driven through the real bot (TestAdapter, load/save like the pipeline).

``storage`` is parametrised over memory, sqlite, blob and table on Azurite, and cosmos on its local peer. The
scan (tests/support/scan.py) reads each store past the contract, so "forgotten" is checked on what is really stored.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
from botbuilder.schema import Attachment

from app import create_app
from bots import create_bot
from bots.commands import EXPORT_FILE_NAME
from bots.state_bot import NEWER_RECORD_TEXT
from bots.user_data import MAX_EXPORT_BYTES
from config import Settings, load_settings
from data_models import ConversationIndex, KnownConversation
from data_models.conversation_index import MAX_CONVERSATIONS
from data_models.user_profile import MAX_PICTURE_DATA_CHARS
from data_models.user_profile import SCHEMA_VERSION as PROFILE_VERSION
from dialogs.forget_dialog import FORGET_QUESTION
from dialogs.profile_dialog import SAVED_TEXT
from hosting.pipeline import NOT_COMPACTED_TEXT
from hosting.storage import Delete, MemoryStateStorage, SqliteStorage, StateStorage, StorageError
from tests.support import profile, words
from tests.support.backends import plant_raw
from tests.support.channel import Conversation, FakeChannel, serving
from tests.support.harness import BotHarness
from tests.support.scan import scan

SECRET_NAME = "Zebulonia"
DRAFT_NAME = "Quentinella"
GROUP_DRAFT_NAME = "Ottoline"
PICTURE_URL = "https://pictures.invalid/zebulonia-secret.png"


async def _profile_with_picture(user: BotHarness) -> None:
    picture = Attachment(content_type="image/png", content_url=PICTURE_URL)
    *answers, confirmation = profile.answers(transport="Bicycle", name=SECRET_NAME, picture=picture)
    await user.say_all(*answers)
    assert await user.say(confirmation) == SAVED_TEXT


def _a_draft(name: str, transport: str = "Car") -> list[object]:
    """A profile dialog left waiting after its name question was answered with ``name``: a draft holding it."""
    return profile.answers(until="wants_age", transport=transport, name=name)


async def test_forget_removes_the_user_everywhere_and_ends_dialogs_elsewhere(storage: StateStorage) -> None:
    alice = BotHarness(storage)
    await alice.say_all("hi", SECRET_NAME)
    await _profile_with_picture(alice)
    elsewhere = alice.elsewhere("conv-2")
    draft = profile.answers(until="confirm", name=DRAFT_NAME, age="71")
    assert profile.asks("confirm") in await elsewhere.say_all(*draft)
    group = BotHarness(storage, conversation_id="group-1", group=True)
    assert profile.asks("name") in await group.say_all(*profile.answers(until="name", transport="Bus"))
    bob = group.member("bob")
    await bob.say_all("hi", "Bob")
    assert SECRET_NAME in await scan(storage)
    assert DRAFT_NAME in await scan(storage)

    assert FORGET_QUESTION in await alice.say("forget")
    reply = await alice.say("yes")

    assert "your profile and your state in 3 conversations" in reply
    stored = await scan(storage)
    for value in (SECRET_NAME, DRAFT_NAME, PICTURE_URL, "conv-2/users/user-1", "group-1/users/user-1"):
        assert value not in stored, f"{value!r} is still stored after forget"
    assert await alice.stored(alice.user_key) is None
    assert await alice.stored(alice.conversation_key) is None
    assert await elsewhere.stored(elsewhere.conversation_key) is None
    assert (await group.stored(group.conversation_key))["ConversationData"]["message_count"] == 4, "the group's own"
    assert await bob.stored(bob.member_key) is not None, "another member's part of the group stays"
    words.expect_echo(await bob.say("still here"), "still here", "Bob")

    # The dialog that was waiting for "yes" in conv-2 is gone: "yes" there is an ordinary message now.
    after = await elsewhere.say("yes")
    assert after == words.stranger()
    assert SAVED_TEXT not in after
    assert await alice.stored(alice.user_key) is None, "the profile was not re-created"
    after = await group.say("Ottoline")  # her dialog in the group is gone too: not taken as her name
    assert after == words.stranger()
    assert profile.asks("name") not in after
    assert await alice.stored(alice.user_key) is None
    assert SECRET_NAME not in await scan(storage)
    assert DRAFT_NAME not in await scan(storage)


async def _export(user: BotHarness) -> tuple[str, dict]:
    [reply] = await user.send_text_activity("export")
    [attachment] = reply.attachments
    assert attachment.name == EXPORT_FILE_NAME
    assert attachment.content_type == "application/json"
    prefix = "data:application/json;base64,"
    assert attachment.content_url.startswith(prefix)
    return reply.text, json.loads(base64.b64decode(attachment.content_url[len(prefix) :]))


async def test_export_returns_what_was_stored(storage: StateStorage) -> None:
    alice = BotHarness(storage)
    await alice.say_all("hi", SECRET_NAME)
    await _profile_with_picture(alice)
    elsewhere = alice.elsewhere("conv-2")
    await elsewhere.say_all(*_a_draft(DRAFT_NAME))
    group = BotHarness(storage, conversation_id="group-1", group=True)
    await group.say_all(*_a_draft(GROUP_DRAFT_NAME, transport="Bus"))
    await alice.elsewhere("conv-other-user", user_id="someone-else").say_all("hi", "Mallory")

    text, exported = await _export(alice)

    assert "3 conversations" in text
    assert (exported["channel"], exported["user_id"]) == ("test", "user-1")
    profile = exported["user_record"]["UserProfile"]
    assert (profile["name"], profile["transport"], profile["picture"]["url"]) == (SECRET_NAME, "Bicycle", PICTURE_URL)
    conversations = {item["id"]: item for item in exported["conversations"]}
    assert set(conversations) == {"conv-1", "conv-2", "group-1"}
    assert conversations["conv-1"]["conversation"]["ConversationData"]["message_count"] >= 7
    assert DRAFT_NAME in json.dumps(conversations["conv-2"]["yours_in_it"]), "the draft of the dialog in progress"
    assert GROUP_DRAFT_NAME in json.dumps(conversations["group-1"]["yours_in_it"])
    assert conversations["group-1"]["group"] is True
    assert "conversation" not in conversations["group-1"]
    assert "Mallory" not in json.dumps(exported), "nobody else's data"
    assert "e_tag" not in json.dumps(exported)


async def test_export_of_a_stranger_lists_only_this_conversation() -> None:
    user = BotHarness(MemoryStateStorage())

    text, exported = await _export(user)

    assert "1 conversation." in text
    assert exported["user_record"] == {}
    assert [item["id"] for item in exported["conversations"]] == ["conv-1"]


async def test_a_stranger_who_only_says_hello_gets_no_user_record() -> None:
    user = BotHarness(MemoryStateStorage())
    await user.join()
    await user.say_all("hello", "hi there")

    assert await user.stored(user.user_key) is None


async def test_a_conversation_joins_the_index_once_the_user_gives_something_there() -> None:
    user = BotHarness(MemoryStateStorage())
    await user.say("hi")
    await user.elsewhere("conv-2").say("profile")

    index = (await user.stored(user.user_key))["Conversations"]["conversations"]

    assert index == [{"id": "conv-2", "group": False}]
    await user.say("Ada")
    assert [entry["id"] for entry in (await user.stored(user.user_key))["Conversations"]["conversations"]] == [
        "conv-2",
        "conv-1",
    ]


# --- the same through the real app over HTTP (sqlite, the turn pipeline) ---------------------------------------


async def test_over_http_forget_ends_a_dialog_in_another_conversation_and_export_arrives_as_a_file(
    http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel
) -> None:
    here = Conversation(http, bot_url, channel, expect_replies=True)
    there = Conversation(http, bot_url, channel, user_id=here.user_id)
    await here.say("hi")
    await here.say(SECRET_NAME)
    for text in profile.answers(until="confirm", name=DRAFT_NAME):
        await there.say(str(text))

    exported = await here.say("export")
    [attachment] = exported.activities[0]["attachments"]
    data = json.loads(base64.b64decode(attachment["contentUrl"].split(",", 1)[1]))
    assert [item["id"] for item in data["conversations"]] == [here.conversation_id, there.conversation_id]
    assert DRAFT_NAME in json.dumps(data["conversations"][1])

    await here.say("forget")
    assert "your profile and your state in 2 conversations" in (await here.say("yes")).text
    after = (await there.say("yes")).texts
    assert after == [words.stranger()], "the dialog there ended: its yes saves nothing"
    assert SAVED_TEXT not in after


async def test_over_http_a_newer_user_record_is_left_intact(
    http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel, settings: Settings
) -> None:
    user = Conversation(http, bot_url, channel)
    key = f"{user.channel_id}/users/{user.user_id}"
    record = {"UserProfile": {"schema_version": PROFILE_VERSION + 1, "name": "Ada", "nickname": "Countess"}}
    store = await SqliteStorage.open(settings.store.path)
    try:
        await store.write({key: dict(record)})

        reply = await user.say("hello")

        assert reply.text == NEWER_RECORD_TEXT
        stored = (await store.read([key]))[key]
        assert {name: value for name, value in stored.items() if name != "e_tag"} == record
    finally:
        await store.close()


def test_the_index_is_bounded_and_keeps_the_most_recent_conversations() -> None:
    index = ConversationIndex()
    for number in range(MAX_CONVERSATIONS + 5):
        index = index.with_conversation(KnownConversation(f"conv-{number}", group=number % 2 == 1))

    assert len(index.conversations) == MAX_CONVERSATIONS
    assert index.conversations[0] == KnownConversation("conv-5", group=True)
    assert ConversationIndex.from_dict(json.loads(json.dumps(index.to_dict()))) == index


# --- damaged copies, conditional deletes, bounded export ---------------------------------------------------------


async def test_forget_and_export_include_the_damaged_copies_of_the_users_records(storage: StateStorage) -> None:
    """A record of the user that was damaged was moved aside (as the pipeline does); export shows its stored text
    and forget deletes it with the rest."""
    alice = BotHarness(storage)
    await alice.say_all("hi", SECRET_NAME)
    elsewhere = alice.elsewhere("conv-2")
    await elsewhere.say_all(*_a_draft(DRAFT_NAME))
    await plant_raw(storage, elsewhere.member_key, '{"damaged draft of ' + DRAFT_NAME)
    await storage.move_aside(elsewhere.member_key)
    await plant_raw(storage, alice.user_key, '{"an old damaged profile of ' + SECRET_NAME)
    await storage.move_aside(alice.user_key)
    await alice.say_all("hi", SECRET_NAME)  # the user record starts afresh
    await elsewhere.say("hello")  # and the index learns conv-2 again

    _, exported = await _export(alice)

    copies = {copy["of"]: copy["stored_text"] for copy in exported["damaged_copies"]}
    assert SECRET_NAME in copies["your user record"]
    assert DRAFT_NAME in copies["your part of another conversation"]
    assert "2 damaged copies" in await alice.say_all("forget", "yes")
    assert await storage.read_damaged([alice.user_key, elsewhere.member_key]) == {}
    stored = await scan(storage)
    assert SECRET_NAME not in stored
    assert DRAFT_NAME not in stored


async def test_export_is_bounded_and_lists_the_conversations_past_the_bound_by_id() -> None:
    user = BotHarness(MemoryStateStorage())
    await user.say_all("hi", "Ada")
    picture = "data:image/png;base64," + "A" * (MAX_PICTURE_DATA_CHARS - 40)
    for number in range(6):
        elsewhere = user.elsewhere(f"conv-big-{number}")
        await elsewhere.say_all(*profile.answers(until="picture"))
        await elsewhere.say(attachments=[Attachment(content_type="image/png", content_url=picture)])

    text, exported = await _export(user)

    assert len(json.dumps(exported).encode()) <= MAX_EXPORT_BYTES + 4096
    omitted = [item["id"] for item in exported["conversations"] if "omitted" in item]
    assert omitted, "some conversations are listed by id only"
    assert f"{len(omitted)} of them are listed without their content" in text
    assert {item["id"] for item in exported["conversations"]} == {"conv-1", *(f"conv-big-{n}" for n in range(6))}


class RaceBeforeDeleting(MemoryStateStorage):
    """Runs ``race`` once, right before the first write that deletes something: another conversation's turn
    landing between what ``forget`` read and what it deletes (two processes, deterministically)."""

    race: Callable[[], Awaitable[object]] | None = None

    async def write(self, changes: Mapping[str, object]) -> None:
        race, self.race = self.race, None
        if race is not None and any(isinstance(item, Delete) for item in changes.values()):
            await race()
        await super().write(changes)


async def test_a_conversation_started_while_forget_runs_is_forgotten_too(
    http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    """Forget read the index; then the same user starts a dialog in a new conversation (their draft is stored and
    the conversation joins the index). The user record's delete is conditional, so forget's write conflicts, the
    turn runs again with the new index, and the new draft goes too."""
    store = RaceBeforeDeleting()
    settings = load_settings({"PORT": "0", "STORAGE": "memory"})
    async with serving(await create_app(settings, bot_factory=lambda _: create_bot(store))) as url:
        here = Conversation(http, url, channel, expect_replies=True)
        there = Conversation(http, url, channel, user_id=here.user_id, expect_replies=True)
        await here.say("hi")
        await here.say(SECRET_NAME)
        await here.say("forget")

        async def race() -> None:
            racer = BotHarness(store, here.user_id, there.conversation_id, here.channel_id)
            await racer.say_all(*_a_draft(DRAFT_NAME))

        store.race = race
        reply = await here.say("yes")

    assert "your profile and your state in 2 conversations" in reply.text
    assert DRAFT_NAME not in await scan(store)
    assert SECRET_NAME not in await scan(store)


async def test_a_failed_compaction_after_forget_is_reported_and_retried_not_an_outage(
    http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    class CannotCompact(MemoryStateStorage):
        async def _compact(self) -> None:
            raise StorageError("memory: compaction failed (simulated)")

    store = CannotCompact()
    settings = load_settings({"PORT": "0", "STORAGE": "memory"})
    async with serving(await create_app(settings, bot_factory=lambda _: create_bot(store))) as url:
        talk = Conversation(http, url, channel, expect_replies=True)
        await talk.say("hi")
        await talk.say(SECRET_NAME)
        await talk.say("forget")

        reply = await talk.say("yes")

    assert reply.status == 200
    assert "forgotten everything" in reply.texts[0]
    assert reply.texts[1] == NOT_COMPACTED_TEXT
    assert store.compact_pending
    assert SECRET_NAME not in await scan(store)
