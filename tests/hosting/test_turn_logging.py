"""What a turn leaves in the log at INFO, through the real app over real HTTP (create_app, sqlite, aiohttp).

One line per turn from ``hosting.adapter`` (type, channel, short conversation id, outcome, replies, attempts, time,
status), nothing from third-party libraries, and never what the user wrote.
"""

from __future__ import annotations

import logging
import re

import pytest

from hosting.logs import log_text, short_id
from hosting.server import LOG_FORMAT
from tests.support.channel import Conversation

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
        assert [(record.name, record.levelname) for record in records] == [("hosting.adapter", "INFO")]
        message = records[0].getMessage()
        assert TURN_LINE.match(message), message
        for said in (SECRET, "Ada", "hello"):
            assert said not in message


@pytest.mark.parametrize("name", ["aiohttp.access", "azure", "msrest", "botbuilder", "urllib3"])
async def test_third_party_loggers_are_quiet_at_info(bot_url: str, name: str) -> None:
    """``create_app`` (run by the ``bot_url`` fixture) sets them; aiohttp's access log is off where it serves."""
    assert not logging.getLogger(name).isEnabledFor(logging.INFO)


FORGED_TYPE = (
    "message\n2026-01-01 00:00:00,000 WARNING app: forged line\r\x1b[2K\x00\x85\u2028\u2029\x7f\u202eevil\ttab"
)


@pytest.mark.parametrize("activity_type", [FORGED_TYPE, "x\n" * 50_000], ids=["control-characters", "100-KB"])
async def test_an_activity_type_cannot_forge_or_flood_a_log_line(
    conversation: Conversation, caplog: pytest.LogCaptureFixture, activity_type: str
) -> None:
    """The type is the one field of the turn line the request chooses freely (ids are checked as they arrive)."""
    caplog.set_level(logging.INFO)

    reply = await conversation.post(conversation.activity(activity_type))

    assert reply.status in (200, 201)
    lines = [logging.Formatter(LOG_FORMAT).format(record) for record in caplog.records]
    turn_lines = [line for line in lines if "hosting.adapter: turn " in line]
    assert len(turn_lines) == 1, lines
    assert "@emulator/conv-" in turn_lines[0]
    for line in lines:
        assert line.isprintable(), repr(line)  # no line break, escape sequence or other control character
        assert len(line) < 300
    assert not any("forged line" in line and "hosting.adapter" not in line for line in lines)


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("conversationUpdate", "conversationUpdate"),
        ("ünïcødé 名前 🤖", "ünïcødé 名前 🤖"),
        ("a\nb", "a\\x0ab"),
        ("a\r\nINFO forged", "a\\x0d\\x0aINFO forged"),
        ("\x1b[31mred\x00", "\\x1b[31mred\\x00"),
        ("\x85\u2028\u2029", "\\x85\\u2028\\u2029"),
        ("lone \ud800", "lone \\ud800"),
        ("\U000e0001tag", "\\U000e0001tag"),
    ],
)
def test_log_text_escapes_what_is_not_printable(text: str, logged: str) -> None:
    assert log_text(text) == logged


def test_log_text_and_short_id_cut_long_text() -> None:
    assert log_text("x" * 500, limit=40) == "x" * 40 + "…"
    assert log_text("\n" * 500, limit=40) == "\\x0a" * 10 + "…"
    assert short_id("\n" * 500).startswith("?" * 12 + "…")
    assert len(short_id("y" * 60_000)) <= 24
