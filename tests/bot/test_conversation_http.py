"""The real app over real HTTP (sqlite state), in both delivery modes.

Normal mode: the bot answers 201 and POSTs its replies to the activity's serviceUrl, here a local FakeChannel,
as it would to the Emulator. expectReplies: the replies come back in the HTTP response.
"""

from __future__ import annotations

import aiohttp
import pytest

from bots.commands import COMMANDS
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
    assert "name" in reply.text


async def test_a_new_user_is_welcomed_named_and_echoed(conversation: Conversation) -> None:
    welcome = await conversation.join()
    assert "remember" in welcome.text
    assert all(f"**{command}**" in welcome.text for command in COMMANDS)

    assert "Thanks, Ada!" in (await conversation.say("  Ada ")).text

    echo = await conversation.say("hello there")
    first_line, _, rest = echo.text.partition("\n")
    assert first_line == "Ada sent: hello there"
    assert "#2" in rest
    assert "'emulator'" in rest


async def test_the_echo_uses_the_local_timestamp_the_channel_sends(conversation: Conversation) -> None:
    await conversation.say("hi")
    await conversation.say("Ada")

    echo = await conversation.say(
        "when?", timestamp="2026-11-25T18:00:00.000Z", localTimestamp="2026-11-25T19:00:00.000+01:00"
    )

    assert "2026-11-25 19:00:00 +01:00" in echo.text


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

    assert (await later.join()).text.startswith("Welcome back, Ada!")
    assert (await later.say("ping")).text.startswith("Ada sent: ping")


async def test_the_profile_dialog_over_http(conversation: Conversation) -> None:
    await conversation.say("hi")
    await conversation.say("Ada")

    transport = await conversation.say("profile")
    assert "get around" in transport.text
    assert [a["value"] for a in transport.activities[0]["suggestedActions"]["actions"]] == ["Car", "Bus", "Bicycle"]
    await conversation.say("Car")
    await conversation.say("Ada L.")
    await conversation.say("yes")
    await conversation.say("36")
    picture = {"contentType": "image/jpeg", "contentUrl": "http://127.0.0.1:9/ada.jpg", "name": "ada.jpg"}
    summary = await conversation.say(attachments=[picture])
    assert "Shall I save this profile?" in summary.text
    assert "Saved" in (await conversation.say("yes")).text

    shown = await conversation.say("show")
    assert "Name: Ada L." in shown.text
    assert "Age: 36" in shown.text
    assert shown.activities[0]["attachments"][0]["contentUrl"] == picture["contentUrl"]


async def test_forget_over_http(conversation: Conversation) -> None:
    await conversation.say("hi")
    await conversation.say("Ada")

    assert "Are you sure?" in (await conversation.say("forget")).text
    assert "forgotten" in (await conversation.say("yes")).text

    assert "name" in (await conversation.say("who am I?")).text


@pytest.mark.parametrize(("path", "status"), [("/healthz", "ok"), ("/readyz", "ready")])
async def test_health_and_readiness(http: aiohttp.ClientSession, bot_url: str, path: str, status: str) -> None:
    async with http.get(bot_url.replace("/api/messages", path)) as response:
        body = await response.json()

    assert response.status == 200
    assert body["status"] == status
