"""The real app over real HTTP (sqlite state), in both delivery modes.

Normal mode: the bot answers 201 and POSTs its replies to the activity's serviceUrl, here a local FakeChannel,
as it would to the Emulator. expectReplies: the replies come back in the HTTP response.
"""

from __future__ import annotations

import aiohttp
import pytest

from bots.commands import COMMANDS, STORED_TEXT
from data_models import Picture, UserProfile
from dialogs import describe_profile
from dialogs.forget_dialog import FORGET_QUESTION, FORGOTTEN_TEXT
from dialogs.profile_dialog import SAVED_TEXT, SUMMARY_TEXT, TRANSPORT_CHOICES
from tests.support import profile, words
from tests.support.channel import Conversation


async def test_delivery_modes_answer_as_the_bot_framework_expects(conversation: Conversation) -> None:
    reply = await conversation.say("hello")

    if conversation.expect_replies:
        assert reply.status == 200
        assert isinstance(reply.body, dict)
        assert list(reply.body) == ["activities"]
    else:
        assert reply.status == 201
        assert reply.body == ""
        [(method, path, _headers)] = conversation.channel.requests[-1:]
        assert method == "POST"
        assert path == f"/v3/conversations/{conversation.conversation_id}/activities/{reply.activities[0]['replyToId']}"
    assert reply.texts == [words.stranger()]


async def test_a_new_user_is_welcomed_named_and_echoed(conversation: Conversation) -> None:
    welcome = await conversation.join()
    assert words.is_welcome(welcome.text)
    assert all(f"**{command}**" in welcome.text for command in COMMANDS)

    assert (await conversation.say("  Ada ")).texts == [words.thanks("Ada")]

    echo = await conversation.say("hello there")
    read = words.expect_echo(echo.text, "hello there", "Ada")
    assert (read.number, read.channel) == (2, "emulator")


async def test_the_echo_uses_the_local_timestamp_the_channel_sends(conversation: Conversation) -> None:
    await conversation.say("hi")
    await conversation.say("Ada")

    echo = await conversation.say(
        "when?", timestamp="2026-11-25T18:00:00.000Z", localTimestamp="2026-11-25T19:00:00.000+01:00"
    )

    assert words.expect_echo(echo.text, "when?").time == "2026-11-25 19:00:00 +01:00"


async def test_a_known_user_is_welcomed_back_in_a_new_conversation(conversation: Conversation) -> None:
    await conversation.say("hi")
    await conversation.say("Ada")

    later = Conversation(
        conversation.session,
        conversation.bot_url,
        conversation.channel,
        user_id=conversation.user_id,
        expect_replies=conversation.expect_replies,
    )

    assert (await later.join()).texts == [words.welcome_back("Ada")]
    words.expect_echo((await later.say("ping")).text, "ping", "Ada")


async def test_the_profile_dialog_over_http(conversation: Conversation) -> None:
    await conversation.say("hi")
    await conversation.say("Ada")

    picture = {"contentType": "image/jpeg", "contentUrl": "http://127.0.0.1:9/ada.jpg", "name": "ada.jpg"}
    given = {"transport": "Car", "name": "Ada L.", "age": "36", "picture": picture}
    questions = profile.asked(**given)
    *answers, confirmation = profile.answers(**given)
    for answer, question in zip(answers, questions, strict=True):
        reply = (
            await conversation.say(attachments=[answer]) if isinstance(answer, dict) else await conversation.say(answer)
        )
        assert question.asks in reply.text, question.key
        if question.key == "transport":
            suggested = reply.activities[0]["suggestedActions"]["actions"]
            assert [action["value"] for action in suggested] == list(TRANSPORT_CHOICES)
    stored = UserProfile(
        name="Ada L.", transport="Car", age=36, picture=Picture("image/jpeg", picture["contentUrl"], "ada.jpg")
    )
    assert f"{SUMMARY_TEXT}\n\n{describe_profile(stored)}" in reply.texts
    assert (await conversation.say(confirmation)).texts == [SAVED_TEXT]

    shown = await conversation.say("show")
    assert shown.texts == [f"{STORED_TEXT}\n\n{describe_profile(stored)}"]
    assert shown.activities[0]["attachments"][0]["contentUrl"] == picture["contentUrl"]


async def test_forget_over_http(conversation: Conversation) -> None:
    await conversation.say("hi")
    await conversation.say("Ada")

    assert FORGET_QUESTION in (await conversation.say("forget")).text
    assert words.template_pattern(FORGOTTEN_TEXT).fullmatch((await conversation.say("yes")).text)

    assert (await conversation.say("who am I?")).texts == [words.stranger()]


@pytest.mark.parametrize(("path", "status"), [("/healthz", "ok"), ("/readyz", "ready")])
async def test_health_and_readiness(http: aiohttp.ClientSession, bot_url: str, path: str, status: str) -> None:
    async with http.get(bot_url.replace("/api/messages", path)) as response:
        body = await response.json()

    assert response.status == 200
    assert body["status"] == status
