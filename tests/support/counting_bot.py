"""A minimal bot for the engine's tests: it counts a conversation's messages and remembers a user's name.

Built on ``hosting``'s public surface as any bot is, and served by the real app (``app.create_app`` with
``bot_factory=counting_bot``; under gunicorn, ``tests.support.counting_bot:create_app``). Its words belong to the
tests, so a test of the engine (turn pipeline, worker processes, stores, replies) never depends on how the sample
words anything, and says exactly what it needs:

* ``call me <name>`` stores the name in the user's record (``UserState``) and answers ``named <name>``;
* every message adds one to the conversation's counter (``ConversationState``), and any other message is answered
  ``<name> #<number>: <text>`` (``?`` for a user without a name): ``Ada #3: hello``.

A stranger's message writes the conversation's record only; naming writes the user's record too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from botbuilder.core import ActivityHandler, BotState, TurnContext

import app
from hosting import ConversationState, StateStorage, UserState

NAME_COMMAND = "call me "
NAMED = "named {name}"
ECHO = "{name} #{number}: {text}"
#: The name in the echo of a user the bot does not know.
UNKNOWN = "?"
#: Where it keeps things, as stored records show them: ``record[USER]["name"]``, ``record[COUNTER]["count"]``.
USER = "CountingUser"
COUNTER = "Counter"

_ECHO = re.compile(r"(?P<name>.*?) #(?P<number>\d+): (?P<text>.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Counted:
    """An echo of the counting bot, read back."""

    name: str
    number: int
    text: str


class CountingBot(ActivityHandler):
    """Counts every message of a conversation and echoes it with its number and the sender's name."""

    def __init__(self, user_state: UserState, conversation_state: ConversationState) -> None:
        self._user = user_state.create_property(USER)
        self._counter = conversation_state.create_property(COUNTER)

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        counter: dict[str, Any] = await self._counter.get(turn_context) or {}
        number = int(counter.get("count", 0)) + 1
        await self._counter.set(turn_context, {"count": number})
        text = turn_context.activity.text or ""
        if text.startswith(NAME_COMMAND):
            name = text.removeprefix(NAME_COMMAND).strip()
            await self._user.set(turn_context, {"name": name})
            await turn_context.send_activity(NAMED.format(name=name))
            return
        user: dict[str, Any] = await self._user.get(turn_context) or {}
        await turn_context.send_activity(ECHO.format(name=user.get("name") or UNKNOWN, number=number, text=text))


def counting_bot(storage: StateStorage) -> tuple[CountingBot, tuple[BotState, ...]]:
    """The bot and its states on ``storage`` (a ``hosting.BotFactory``): the user's record is written first."""
    user_state, conversation_state = UserState(storage), ConversationState(storage)
    return CountingBot(user_state, conversation_state), (user_state, conversation_state)


async def create_app() -> web.Application:
    """The real app serving the counting bot, settings from the environment: what gunicorn's aiohttp worker runs as
    ``tests.support.counting_bot:create_app``."""
    return await app.create_app(bot_factory=counting_bot)


def call_me(name: str) -> str:
    """The message that names the sender."""
    return f"{NAME_COMMAND}{name}"


def named(name: str) -> str:
    """The answer to ``call_me(name)``."""
    return NAMED.format(name=name)


def echo(text: str, number: int, name: str = UNKNOWN) -> str:
    """The answer to the ``number``-th message of a conversation, ``text``, from ``name``."""
    return ECHO.format(name=name, number=number, text=text)


def counted(reply: str) -> Counted | None:
    """``reply`` read as an echo of the counting bot, or None."""
    found = _ECHO.fullmatch(reply)
    return None if found is None else Counted(found["name"], int(found["number"]), found["text"])
