"""The sample's wording, pinned on purpose: the one place where the tests spell out what the bot says.

Every other test reads the wording from the sample's constants through tests/support/words.py (and
tests/support/profile.py), so rewording a reply fails here, and here only: change the text below with it. The
second half checks those helpers against the real bot, so that a check built with them cannot pass vacuously.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bots.commands import ASK_NAME, HELP_TEXT
from bots.state_bot import ECHO_TEXT, NAME_TAKEN_TEXT, STRANGER_TEXT
from hosting.storage import MemoryStateStorage
from tests.support import words
from tests.support.harness import BotHarness

SENT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture
def user() -> BotHarness:
    return BotHarness(MemoryStateStorage())


# --- the words, pinned --------------------------------------------------------------------------------------------


async def test_the_echo_is_worded_as_pinned_here(user: BotHarness) -> None:
    await user.say_all("hi", "Ada")

    reply = await user.say("what time is it", timestamp=SENT)

    assert reply == (
        "Ada sent: what time is it\n\n"
        "Message #3 in this conversation, received 2026-03-04 05:06:07 +00:00 on channel 'test'."
    )


async def test_the_welcome_and_the_name_question_are_worded_as_pinned_here(user: BotHarness) -> None:
    welcome = await user.join()

    assert welcome.startswith(
        "Hello and welcome! I'm a bot that remembers you: your name and profile stay with me across conversations "
        "until you tell me to forget them.\n\n"
    )
    assert welcome.endswith("\n\nWhat's your name?")
    assert await user.say("hello") == "Hello to you too! What's your name?"
    assert await user.say("Ada") == (
        "Thanks, Ada! I'll remember you. Send me anything and I'll echo it; type 'help' for commands."
    )
    assert await user.elsewhere("conv-2").join() == "Welcome back, Ada! Type 'help' to see what I can do."
    assert (
        await user.elsewhere("conv-3", user_id="user-2").say("hi") == "Hello! I don't know you yet. What's your name?"
    )


# --- the helpers that read the words from the constants -------------------------------------------------------


async def test_an_echo_is_read_back_field_by_field(user: BotHarness) -> None:
    await user.say_all("hi", "Ada")

    reply = await user.say("what time is it", timestamp=SENT)

    assert words.echo_of(reply) == words.Echo("Ada", "what time is it", 3, "2026-03-04 05:06:07 +00:00", "test")
    assert words.expect_echo(reply, "what time is it", "Ada").number == 3
    assert words.echo_number(reply) == 3
    assert words.echo_pattern(name="Ada", text="what time is it").fullmatch(reply)


async def test_the_echo_helpers_refuse_what_is_not_that_echo(user: BotHarness) -> None:
    welcome = await user.join()
    thanked = await user.say("Ada")
    echo = await user.say("ping")

    for text in (welcome, thanked, "", "ping", echo + "\n\nmore", echo[:-1]):
        assert words.echo_of(text) is None, text
    with pytest.raises(AssertionError, match="echo of 'pong'"):
        words.expect_echo(echo, "pong")
    with pytest.raises(AssertionError, match="by Grace"):
        words.expect_echo(echo, "ping", "Grace")
    with pytest.raises(AssertionError, match="not an echo"):
        words.echo_number(thanked)
    assert not words.echo_pattern(name="Grace").search(echo)


async def test_the_first_contact_helpers_are_the_bots_own_replies(user: BotHarness) -> None:
    welcome = await user.join()

    assert words.is_welcome(welcome)
    assert not words.is_welcome(await user.say("hello"))
    assert await user.say("Ada") == words.thanks("Ada")
    assert await user.elsewhere("conv-2").join() == words.welcome_back("Ada")
    assert await user.elsewhere("conv-3", user_id="user-2").say("hi") == words.stranger()
    assert words.stranger() == f"{STRANGER_TEXT} {ASK_NAME}"
    assert HELP_TEXT in welcome


CURLY = "\u2019"


@pytest.mark.parametrize("blank_line", ["\n\n", " "], ids=["kept", "collapsed"])
def test_a_loose_pattern_also_reads_the_echo_as_web_chat_typesets_it(blank_line: str) -> None:
    """Web Chat turns straight apostrophes into curly ones, and its text may collapse the blank line."""
    echo = ECHO_TEXT.format(name="Ada", text="it's me", number=2, time="2026-03-04 05:06:07 +00:00", channel="dl")
    rendered = echo.replace("'", CURLY).replace("\n\n", blank_line)

    read = words.echo_of(rendered, loose=True)

    assert read is not None
    assert (read.name, read.text, read.number) == ("Ada", f"it{CURLY}s me", 2)
    assert words.echo_of(echo) is not None
    assert words.echo_of(rendered) is None, "the strict pattern is strict"
    assert words.template_pattern(NAME_TAKEN_TEXT, loose=True, name="Ada").fullmatch(
        words.thanks("Ada").replace("'", CURLY)
    )
