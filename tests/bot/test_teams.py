"""The sample in a Teams group chat: every message @mentions the bot, and the mention is not part of what it reads.

The real app over HTTP on sqlite (tests/conftest.py's ``bot_url``) with activities shaped as Teams sends them: channel
``msteams``, a ``19:...@thread.v2`` group conversation, the tenant in ``channelData``, ``<at>State Bot</at>`` in
the text with a ``mention`` entity for the bot.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from dialogs.questions import question
from tests.support import profile, words
from tests.support.channel import BOT_ID, Conversation, FakeChannel

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AT_BOT = "<at>State Bot</at>"


def _teams_chat(http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel, chat_id: str) -> Conversation:
    """A user of Teams in the chat ``chat_id`` with the bot (``expectReplies``, so each answer holds the replies)."""
    return Conversation(http, bot_url, channel, conversation_id=chat_id, channel_id="msteams", expect_replies=True)


def _in_teams(talk: Conversation, text: str) -> dict[str, Any]:
    activity = talk.activity(text=f"{AT_BOT} {text}")
    activity["channelId"] = "msteams"
    activity["conversation"] = {"id": talk.conversation_id, "conversationType": "groupChat", "isGroup": True}
    activity["channelData"] = {"tenant": {"id": TENANT}}
    activity["entities"] = [{"type": "mention", "mentioned": {"id": BOT_ID, "name": "State Bot"}, "text": AT_BOT}]
    return activity


async def test_a_group_chat_in_teams_names_echoes_and_fills_the_profile_without_the_mention(
    http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel
) -> None:
    talk = _teams_chat(http, bot_url, channel, "19:a1b2c3@thread.v2")

    async def say(text: str) -> list[str]:
        reply = await talk.post(_in_teams(talk, text))
        assert reply.status == 200, reply.body
        return reply.texts

    assert await say("hi") == [words.stranger()]
    assert await say("Tessa") == [words.thanks("Tessa")]
    [echo] = await say("good morning")
    assert words.expect_echo(echo, "good morning", "Tessa")
    assert AT_BOT not in echo
    assert profile.asks("transport") in " ".join(await say(profile.START))
    assert profile.asks("name") in " ".join(await say("Bus"))


def _update(talk: Conversation, activity_type: str, *, group: bool, **fields: Any) -> dict[str, Any]:
    activity = talk.activity(activity_type, **fields)
    activity["channelId"] = "msteams"
    activity["conversation"] = {
        "id": talk.conversation_id,
        "conversationType": "groupChat" if group else "personal",
        **({"isGroup": True} if group else {}),
    }
    activity["channelData"] = {"tenant": {"id": TENANT}}
    return activity


async def test_the_bot_added_to_a_personal_chat_welcomes_the_user_once(
    http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel
) -> None:
    talk = _teams_chat(http, bot_url, channel, "a:personal-chat")

    installed = await talk.post(_update(talk, "installationUpdate", group=False, action="add"))
    joined = await talk.post(_update(talk, "conversationUpdate", group=False, membersAdded=[{"id": BOT_ID}]))

    assert len(installed.texts) == 1
    assert words.is_welcome(installed.texts[0])
    assert joined.texts == [], "Teams announces the bot's own arrival too: no second welcome"


async def test_a_group_gets_one_welcome_when_the_bot_arrives_and_none_per_member(
    http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel
) -> None:
    talk = _teams_chat(http, bot_url, channel, "19:team@thread.v2")
    people = [{"id": f"29:member-{i}"} for i in range(50)]

    arrived = await talk.post(
        _update(talk, "conversationUpdate", group=True, membersAdded=[{"id": BOT_ID}, *people[:3]])
    )
    installed = await talk.post(_update(talk, "installationUpdate", group=True, action="add"))
    more = await talk.post(_update(talk, "conversationUpdate", group=True, membersAdded=people[3:]))

    assert len(arrived.texts) == 1
    assert words.is_welcome(arrived.texts[0])
    assert installed.texts == []
    assert more.texts == [], "50 members joining a team are not asked their names"


async def test_every_reply_of_a_whole_session_is_one_teams_can_render(
    http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel
) -> None:
    """Teams shows at most 3 suggested actions, and none on a message that has attachments."""
    talk = _teams_chat(http, bot_url, channel, "19:render@thread.v2")
    said = ["hi", "Tessa", "help", *(str(answer) for answer in profile.answers(age="41")), "show", "export"]
    said += ["forget", "maybe", "yes"]
    replies = []
    for text in said:
        answer = await talk.post(_in_teams(talk, text))
        assert answer.status == 200, answer.body
        replies += answer.activities

    offering = [reply for reply in replies if (reply.get("suggestedActions") or {}).get("actions")]
    assert offering, "the profile and forget questions offer answers to tap"
    for reply in offering:
        assert len(reply["suggestedActions"]["actions"]) <= 3, reply.get("text")
        assert not reply.get("attachments"), reply.get("text")
    assert any(reply.get("attachments") for reply in replies), "export sent its file"


def test_a_question_offering_more_answers_than_teams_shows_is_refused_where_it_is_written() -> None:
    with pytest.raises(ValueError, match="at most 3"):
        question("Which one?", suggestions=("a", "b", "c", "d"))


async def test_in_a_channel_thread_each_member_keeps_their_own_dialog(
    http: aiohttp.ClientSession, bot_url: str, channel: FakeChannel
) -> None:
    """A channel's reply thread is a conversation of its own (``19:...;messageid=...``); what one member answers
    there never lands in another member's dialog (PrivateConversationState: per conversation and user)."""
    thread = "19:general@thread.tacv2;messageid=1733456789012"
    alice, bob = (_teams_chat(http, bot_url, channel, thread) for _ in range(2))

    async def say(talk: Conversation, text: str) -> str:
        reply = await talk.post(_in_teams(talk, text))
        assert reply.status == 200, reply.body
        return " ".join(reply.texts)

    for talk, name in ((alice, "Alice"), (bob, "Bob")):
        await say(talk, "hi")
        await say(talk, name)
    assert profile.asks("transport") in await say(alice, profile.START)
    assert profile.asks("transport") in await say(bob, profile.START)
    assert profile.asks("name") in await say(alice, "Bus")
    assert profile.asks("name") in await say(bob, "Car"), "Bob's first answer is his, not Alice's second"
