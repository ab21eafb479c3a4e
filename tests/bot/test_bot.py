"""The conversation a user sees (welcome, name, echo, commands), driven in-process through the TestAdapter.

The replies are matched through tests/support/words.py, built from the sample's own texts: this file checks what
the bot says and keeps, tests/bot/test_wording.py how it words it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from botbuilder.schema import Activity

from bots.commands import ASK_NAME, COMMANDS, NOTHING_STORED_TEXT, NOTHING_TO_CANCEL_TEXT
from data_models.conversation_data import SCHEMA_VERSION as CONVERSATION_VERSION
from data_models.user_profile import SCHEMA_VERSION as PROFILE_VERSION
from dialogs.forget_dialog import FORGET_QUESTION, FORGET_RETRY, FORGOTTEN_TEXT, KEPT_TEXT
from dialogs.profile_dialog import SAVED_TEXT
from hosting.storage import MemoryStateStorage
from tests.support import profile, words
from tests.support.harness import BOT, BotHarness


@pytest.fixture
def user() -> BotHarness:
    return BotHarness(MemoryStateStorage())


async def named(user: BotHarness, name: str = "Ada") -> BotHarness:
    await user.say("hi")
    await user.say(name)
    return user


def forgotten(reply: str) -> bool:
    """Whether ``reply`` is the confirmation that everything about the user was forgotten."""
    return words.template_pattern(FORGOTTEN_TEXT).fullmatch(reply) is not None


async def test_a_stranger_is_welcomed_told_they_will_be_remembered_shown_commands_and_asked_their_name(
    user: BotHarness,
) -> None:
    welcome = await user.join()

    assert words.is_welcome(welcome)
    for command in COMMANDS:
        assert f"**{command}**" in welcome
    assert welcome.rstrip().endswith(ASK_NAME)
    answer = await user.say("Ada")
    assert answer == words.thanks("Ada"), "the answer to the welcome is the name, not a message to echo"
    assert words.echo_of(answer) is None
    assert await user.stored(user.user_key) is not None


async def test_the_bot_joining_alone_gets_no_welcome(user: BotHarness) -> None:
    replies = await user.send(Activity(type="conversationUpdate", members_added=[BOT]))

    assert replies == []


async def test_a_known_user_is_welcomed_back_by_name_in_a_new_conversation(user: BotHarness) -> None:
    await named(user, "Ada")

    welcome = await user.elsewhere("conv-2").join()

    assert welcome == words.welcome_back("Ada")
    assert ASK_NAME not in welcome


async def test_a_user_without_a_name_is_asked_and_the_next_message_is_taken_trimmed(user: BotHarness) -> None:
    ask = await user.say("hello")
    assert ask == words.stranger()

    thanks = await user.say("   Grace Hopper  ")

    assert thanks == words.thanks("Grace Hopper")
    words.expect_echo(await user.say("ping"), "ping", "Grace Hopper")


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
    assert reply.endswith(ASK_NAME)
    assert await user.say("y" * 50) == words.thanks("y" * 50)


async def test_the_name_is_user_state_shared_by_the_users_conversations_on_one_channel(user: BotHarness) -> None:
    await named(user, "Ada")

    same_user = user.elsewhere("conv-2")
    other_user = user.elsewhere("conv-3", user_id="user-2")
    other_channel = user.elsewhere("conv-4", channel_id="other")

    words.expect_echo(await same_user.say("hi"), "hi", "Ada")
    assert await other_user.say("hi") == words.stranger()
    assert await other_channel.say("hi") == words.stranger()


async def test_the_echo_states_number_time_and_channel(user: BotHarness) -> None:
    await named(user, "Ada")
    sent = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)

    reply = await user.say("what time is it", timestamp=sent)

    echo = words.expect_echo(reply, "what time is it", "Ada")
    assert echo.number == 3
    assert echo.time == "2026-03-04 05:06:07 +00:00"
    assert echo.channel == "test"
    assert words.echo_number(await user.say("again")) == 4


async def test_the_echo_shows_the_senders_local_time_when_the_channel_gives_it(user: BotHarness) -> None:
    await named(user, "Ada")
    utc = datetime(2026, 3, 4, 13, 6, 7, tzinfo=UTC)
    local = utc.astimezone(timezone(timedelta(hours=-8)))

    reply = await user.say("hello", timestamp=utc, local_timestamp=local)

    assert words.expect_echo(reply, "hello", "Ada").time == "2026-03-04 05:06:07 -08:00"


async def test_the_message_counter_is_per_conversation(user: BotHarness) -> None:
    await named(user, "Ada")
    await user.say("one")

    other = user.elsewhere("conv-2")

    assert words.echo_number(await other.say("first here")) == 1
    assert words.echo_number(await user.say("back here")) == 4


@pytest.mark.parametrize("typed", ["help", "HELP", "  Help  "])
async def test_help_lists_every_command_whatever_the_case_and_spacing(user: BotHarness, typed: str) -> None:
    reply = await user.say(typed)

    for command in COMMANDS:
        assert f"**{command}**" in reply


async def test_commands_are_whole_messages_only(user: BotHarness) -> None:
    await named(user, "Ada")

    words.expect_echo(await user.say("help me"), "help me", "Ada")


async def test_show_without_a_profile_says_so(user: BotHarness) -> None:
    assert await user.say("show") == NOTHING_STORED_TEXT


async def test_show_lists_the_stored_name(user: BotHarness) -> None:
    await named(user, "Ada")

    reply = await user.say("show")

    assert "Name: Ada" in reply
    assert "Transport: (not given)" in reply


async def test_cancel_without_a_dialog_says_there_is_nothing_to_cancel(user: BotHarness) -> None:
    assert await user.say("cancel") == NOTHING_TO_CANCEL_TEXT


async def test_forget_asks_first_and_no_keeps_everything(user: BotHarness) -> None:
    await named(user, "Ada")

    question = await user.say("forget")
    assert FORGET_QUESTION in question
    assert await user.say("no") == KEPT_TEXT

    words.expect_echo(await user.say("still here?"), "still here?", "Ada")


async def test_forget_yes_deletes_the_user_and_conversation_records(user: BotHarness) -> None:
    await named(user, "Ada")
    other_conversation = user.elsewhere("conv-2")
    await other_conversation.say("hello from elsewhere")

    await user.say("forget")
    reply = await user.say("yes")

    assert forgotten(reply), reply
    assert await user.stored(user.user_key) is None
    assert await user.stored(user.conversation_key) is None
    assert await user.say("hello?") == words.stranger()
    assert await other_conversation.say("and here?") == words.stranger()


async def test_forget_with_an_unclear_answer_asks_again(user: BotHarness) -> None:
    await named(user, "Ada")
    await user.say("forget")

    assert FORGET_RETRY in await user.say("perhaps")
    await user.say("yes")
    assert await user.stored(user.user_key) is None


async def test_in_a_group_each_member_has_their_own_dialog_and_forget() -> None:
    """Alice and Bob share a group conversation. Bob's "yes" cannot save Alice's profile draft into his own
    profile, nor confirm Alice's forget; each member's answers reach only their own dialog: Bob sends each of
    Alice's answers just before she does, and his are echoed."""
    store = MemoryStateStorage()
    alice = BotHarness(store, "alice", "team-chat", group=True)
    bob = alice.member("bob")
    for member, name in ((alice, "Alice"), (bob, "Bob")):
        await member.say("hi")
        assert await member.say(name) == words.thanks(name)

    start, *answers, confirmation = profile.answers(transport="Bus", name="Alice Liddell")
    await alice.say(start)
    reply = ""
    for answer in answers:
        words.expect_echo(await bob.say(answer), answer, "Bob")  # Bob is not in Alice's dialog
        reply = await alice.say(answer)
    assert profile.asks("confirm") in reply
    words.expect_echo(await bob.say(confirmation), confirmation, "Bob")
    assert (await bob.stored(bob.user_key))["UserProfile"]["name"] == "Bob"
    assert (await alice.stored(alice.user_key))["UserProfile"]["name"] == "Alice"
    assert await alice.say(confirmation) == SAVED_TEXT
    assert (await alice.stored(alice.user_key))["UserProfile"]["transport"] == "Bus"
    assert (await bob.stored(bob.user_key))["UserProfile"]["transport"] is None

    assert FORGET_QUESTION in await alice.say("forget")
    words.expect_echo(await bob.say("yes"), "yes", "Bob")
    assert await alice.stored(alice.user_key) is not None
    assert forgotten(await alice.say("yes"))
    assert await alice.stored(alice.user_key) is None
    assert await alice.stored(alice.member_key) is None
    assert (await bob.stored(bob.user_key))["UserProfile"]["name"] == "Bob"
    assert (await bob.stored(bob.conversation_key))["ConversationData"]["message_count"] > 0
    words.expect_echo(await bob.say("still here"), "still here", "Bob")


async def test_state_is_saved_as_plain_json_models(user: BotHarness) -> None:
    await named(user, "Ada")

    profile_record = await user.stored(user.user_key)
    conversation = await user.stored(user.conversation_key)

    assert profile_record["UserProfile"]["name"] == "Ada"
    assert profile_record["UserProfile"]["schema_version"] == PROFILE_VERSION
    member = await user.stored(user.member_key)

    assert conversation["ConversationData"]["message_count"] == 2
    assert conversation["ConversationData"]["schema_version"] == CONVERSATION_VERSION
    assert member["MemberData"]["asked_for_name"] is False
