"""The conversation a user sees (welcome, name, echo, commands), driven in-process through the TestAdapter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from botbuilder.schema import Activity

from bots.commands import COMMANDS
from hosting.storage import MemoryStateStorage
from tests.support.harness import BOT, BotHarness


@pytest.fixture
def user() -> BotHarness:
    return BotHarness(MemoryStateStorage())


async def named(user: BotHarness, name: str = "Ada") -> BotHarness:
    await user.say("hi")
    await user.say(name)
    return user


async def test_a_stranger_is_welcomed_told_they_will_be_remembered_shown_commands_and_asked_their_name(
    user: BotHarness,
) -> None:
    welcome = await user.join()

    assert "remember" in welcome
    for command in COMMANDS:
        assert f"**{command}**" in welcome
    assert welcome.rstrip().endswith("What's your name?")
    assert "Ada sent" not in await user.say("Ada")
    assert await user.stored(user.user_key) is not None


async def test_the_bot_joining_alone_gets_no_welcome(user: BotHarness) -> None:
    replies = await user.send(Activity(type="conversationUpdate", members_added=[BOT]))

    assert replies == []


async def test_a_known_user_is_welcomed_back_by_name_in_a_new_conversation(user: BotHarness) -> None:
    await named(user, "Ada")

    welcome = await user.elsewhere("conv-2").join()

    assert welcome.startswith("Welcome back, Ada!")
    assert "What's your name?" not in welcome


async def test_a_user_without_a_name_is_asked_and_the_next_message_is_taken_trimmed(user: BotHarness) -> None:
    ask = await user.say("hello")
    assert "name" in ask

    thanks = await user.say("   Grace Hopper  ")

    assert "Thanks, Grace Hopper!" in thanks
    assert (await user.say("ping")).splitlines()[0] == "Grace Hopper sent: ping"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("x" * 51, "at most 50 characters and that one has 51"),
        ("    ", "I need your name as text"),
        (None, "I need your name as text"),
    ],
)
async def test_an_unusable_name_is_refused_with_the_reason_and_asked_again(
    user: BotHarness, answer: str | None, reason: str
) -> None:
    await user.say("hello")

    reply = await user.say(answer)

    assert reason in reply
    assert "What's your name?" in reply
    assert (await user.say("y" * 50)).startswith("Thanks, " + "y" * 50)


async def test_the_name_is_user_state_shared_by_the_users_conversations_on_one_channel(user: BotHarness) -> None:
    await named(user, "Ada")

    same_user = user.elsewhere("conv-2")
    other_user = user.elsewhere("conv-3", user_id="user-2")
    other_channel = user.elsewhere("conv-4", channel_id="other")

    assert (await same_user.say("hi")).startswith("Ada sent: hi")
    assert "name" in await other_user.say("hi")
    assert "name" in await other_channel.say("hi")


async def test_the_echo_states_number_time_and_channel(user: BotHarness) -> None:
    await named(user, "Ada")
    sent = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)

    reply = await user.say("what time is it", timestamp=sent)

    first, *rest = reply.splitlines()
    assert first == "Ada sent: what time is it"
    details = " ".join(rest)
    assert "#3" in details
    assert "2026-03-04 05:06:07 +00:00" in details
    assert "'test'" in details
    assert "#4" in await user.say("again")


async def test_the_echo_shows_the_senders_local_time_when_the_channel_gives_it(user: BotHarness) -> None:
    await named(user, "Ada")
    utc = datetime(2026, 3, 4, 13, 6, 7, tzinfo=UTC)
    local = utc.astimezone(timezone(timedelta(hours=-8)))

    reply = await user.say("hello", timestamp=utc, local_timestamp=local)

    assert "2026-03-04 05:06:07 -08:00" in reply


async def test_the_message_counter_is_per_conversation(user: BotHarness) -> None:
    await named(user, "Ada")
    await user.say("one")

    other = user.elsewhere("conv-2")

    assert "#1 " in await other.say("first here")
    assert "#4 " in await user.say("back here")


@pytest.mark.parametrize("typed", ["help", "HELP", "  Help  "])
async def test_help_lists_every_command_whatever_the_case_and_spacing(user: BotHarness, typed: str) -> None:
    reply = await user.say(typed)

    for command in COMMANDS:
        assert f"**{command}**" in reply


async def test_commands_are_whole_messages_only(user: BotHarness) -> None:
    await named(user, "Ada")

    assert (await user.say("help me")).startswith("Ada sent: help me")


async def test_show_without_a_profile_says_so(user: BotHarness) -> None:
    assert "don't have anything stored" in await user.say("show")


async def test_show_lists_the_stored_name(user: BotHarness) -> None:
    await named(user, "Ada")

    reply = await user.say("show")

    assert "Name: Ada" in reply
    assert "Transport: (not given)" in reply


async def test_cancel_without_a_dialog_says_there_is_nothing_to_cancel(user: BotHarness) -> None:
    assert "nothing to cancel" in await user.say("cancel")


async def test_forget_asks_first_and_no_keeps_everything(user: BotHarness) -> None:
    await named(user, "Ada")

    question = await user.say("forget")
    assert "Are you sure?" in question
    assert "haven't deleted anything" in await user.say("no")

    assert (await user.say("still here?")).startswith("Ada sent: still here?")


async def test_forget_yes_deletes_the_user_and_conversation_records(user: BotHarness) -> None:
    await named(user, "Ada")
    other_conversation = user.elsewhere("conv-2")
    await other_conversation.say("hello from elsewhere")

    await user.say("forget")
    reply = await user.say("yes")

    assert "forgotten everything" in reply
    assert await user.stored(user.user_key) is None
    assert await user.stored(user.conversation_key) is None
    assert "name" in await user.say("hello?")
    assert "name" in await other_conversation.say("and here?")


async def test_forget_with_an_unclear_answer_asks_again(user: BotHarness) -> None:
    await named(user, "Ada")
    await user.say("forget")

    assert "yes or no" in await user.say("perhaps")
    await user.say("yes")
    assert await user.stored(user.user_key) is None


async def test_state_is_saved_as_plain_json_models(user: BotHarness) -> None:
    await named(user, "Ada")

    profile = await user.stored(user.user_key)
    conversation = await user.stored(user.conversation_key)

    assert profile["UserProfile"]["name"] == "Ada"
    assert profile["UserProfile"]["schema_version"] == 1
    member = await user.stored(user.member_key)

    assert conversation["ConversationData"]["message_count"] == 2
    assert member["MemberData"]["asked_for_name"] is False
