"""The sample under a channel's retries: a welcome, a profile answer or a name delivered twice counts once.

The real app over HTTP on sqlite (tests/conftest.py's ``bot_url``), the fake channel, and the same activity (same
id) posted again as a channel does after a slow or failed answer. The engine's side is tested in
tests/hosting/test_redelivery.py.
"""

from __future__ import annotations

import aiohttp
import pytest

from config import Settings
from hosting.storage import SqliteStorage
from tests.support import profile, words
from tests.support.channel import Conversation, FakeChannel
from tests.support.scan import scan

NAME = "Philippa"


async def test_a_welcome_delivered_twice_is_sent_once(conversation: Conversation) -> None:
    join = conversation.activity(
        "conversationUpdate",
        membersAdded=[{"id": "bot", "name": "Bot"}, {"id": conversation.user_id, "name": "User"}],
    )

    first = await conversation.post(join)
    again = await conversation.post(join)

    assert [text for text in first.texts if words.is_welcome(text)]
    assert again.activities == (first.activities if conversation.expect_replies else [])


async def test_a_duplicated_profile_answer_does_not_skip_a_question(
    http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel
) -> None:
    user = Conversation(http, bot_url, channel)
    await user.say("hi")
    await user.say("Ada")
    await user.say(profile.START)
    transport = user.activity(text="Bus")

    asked = await user.post(transport)
    duplicate = await user.post(transport)
    after = await user.say("Grace")

    assert profile.asks("name") in asked.text
    assert (duplicate.status, duplicate.activities) == (201, [])
    assert profile.asks("wants_age") in after.text, "the name question was answered by 'Grace', not skipped"


@pytest.mark.parametrize("forgotten_in", ["the same conversation", "another conversation"])
async def test_a_duplicate_after_forget_brings_nothing_back(
    http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel, settings: Settings, forgotten_in: str
) -> None:
    """The name message is delivered again after ``forget`` (said here or in another conversation of the user):
    it is not applied again (the name stays forgotten), and no delivery log holds what the bot said to the
    forgotten user any more."""
    user = Conversation(http, bot_url, channel, expect_replies=True)
    await user.say("hi")
    naming = user.activity(text=NAME)
    assert (await user.post(naming)).texts == [words.thanks(NAME)]

    forgetting = (
        user
        if forgotten_in == "the same conversation"
        else Conversation(http, bot_url, channel, user_id=user.user_id, expect_replies=True)
    )
    await forgetting.say("forget")
    await forgetting.say("yes")
    late = await user.post(naming)
    hello = await user.say("hello")

    assert (late.status, late.activities) == (200, []), "remembered as applied; what was said to them is gone"
    assert hello.texts == [words.stranger()]
    store = await SqliteStorage.open(settings.store.path)
    try:
        assert await store.read([f"{user.channel_id}/users/{user.user_id}"]) == {}
        assert user.deliveries_key in await store.read([user.deliveries_key])
        assert NAME not in await scan(store)
    finally:
        await store.close()
