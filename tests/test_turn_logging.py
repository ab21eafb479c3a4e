"""What a turn leaves in the log at INFO, through the real app over real HTTP (create_app, sqlite, aiohttp).

One line per turn from ``bots.adapter`` (type, channel, short conversation id, outcome, replies, attempts, time,
status), nothing from third-party libraries, and never what the user wrote.
"""

from __future__ import annotations

import logging
import re

import pytest

from tests.channel import Conversation

TURN_LINE = re.compile(
    r"^turn (message|conversationUpdate)@emulator/conv-[0-9a-f]{8}: "
    r"ok, \d+ repl(y|ies), 1 attempt, [\d.]+ ms -> 20[01]$"
)
SECRET = "my bank PIN is 4711"


async def test_each_turn_logs_exactly_one_info_line_and_never_the_message_text(
    conversation: Conversation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    turns = [
        conversation.join,
        lambda: conversation.say("hello"),
        lambda: conversation.say("Ada Lovelace"),
        lambda: conversation.say(SECRET),
        lambda: conversation.say("profile"),
        lambda: conversation.say("help"),
        lambda: conversation.say("forget"),
        lambda: conversation.say("yes"),
    ]
    for turn in turns:
        caplog.clear()
        await turn()

        records = [record for record in caplog.records if record.levelno >= logging.INFO]
        assert [(record.name, record.levelname) for record in records] == [("bots.adapter", "INFO")]
        message = records[0].getMessage()
        assert TURN_LINE.match(message), message
        for said in (SECRET, "Ada", "hello"):
            assert said not in message


@pytest.mark.parametrize("name", ["aiohttp.access", "azure", "msrest", "botbuilder", "urllib3"])
async def test_third_party_loggers_are_quiet_at_info(bot_url: str, name: str) -> None:
    """``create_app`` (run by the ``bot_url`` fixture) sets them; aiohttp's access log is off where it serves."""
    assert not logging.getLogger(name).isEnabledFor(logging.INFO)
