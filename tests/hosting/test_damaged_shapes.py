"""Damaged and foreign records, one shape at a time on every backend, through the real app: nothing wedges a user.

A record is data from the past: a damaged disk, another writer, or a rollback to an older version of the bot can
leave any shape in it. For each shape below, on every backend, a user named Ada talks to the real app over HTTP;
the shape is planted into one of her records past the codec (``tests.support.backends.plant_raw``), and then:

* her next message is answered (no 5xx, no traceback or bot-error apology, nothing logged with a traceback) and
  she is told what happened;
* the shape is handled as its row says:

  - ``MOVED``: the record cannot be decoded. It is kept exactly as stored under ``_damaged/<key>/...``, the user
    hears ``DAMAGED_TEXT`` and the turn goes on with that record started afresh;
  - ``ENDED``: the record decodes, but its dialog stack cannot be resumed by this code (what a rollback leaves).
    The stack is dropped with ``LOST_TRACK_TEXT`` and nothing else;
  - ``TOLERATED``: read tolerantly (``data_models``' readers, the profile dialog's draft): an ordinary answer;

* her other record (the profile when the shape is in her conversation record) is untouched;
* and the message after that gets its ordinary answer: nothing is wedged.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from app import create_app
from bots import create_bot
from bots.commands import CANCELLED_TEXT, NOTHING_STORED_TEXT
from bots.state_bot import LOST_TRACK_TEXT, STRANGER_TEXT
from config import load_settings
from data_models.conversation_data import SCHEMA_VERSION as MEMBER_VERSION
from data_models.user_profile import SCHEMA_VERSION as PROFILE_VERSION
from dialogs.profile_dialog import NAME_QUESTION, TRANSPORT_QUESTION
from hosting.pipeline import BOT_ERROR_TEXT, DAMAGED_TEXT, UNREADABLE_TEXT
from hosting.storage import StateStorage
from tests.support import words
from tests.support.backends import kept, plant_bytes, plant_raw
from tests.support.channel import Conversation, FakeChannel, Reply, serving


class Handling(enum.Enum):
    MOVED = "moved aside"
    ENDED = "dialog ended"
    TOLERATED = "read tolerantly"


# -- the stored shapes, built from the tagged JSON hosting/storage/codec.py writes ------------------------------------


def activity(text: str) -> dict[str, Any]:
    return {"$type": "schema.Activity", "value": {"type": "message", "text": text, "inputHint": "expectingInput"}}


def options(**fields: Any) -> dict[str, Any]:
    return {
        "$type": "PromptOptions",
        "prompt": activity(TRANSPORT_QUESTION),
        "retryPrompt": None,
        "choices": ["Car", "Bus", "Bicycle"],
        "style": None,
        "validations": None,
        "numberOfAttempts": 0,
        **fields,
    }


def frame(dialog_id: Any, state: Any) -> dict[str, Any]:
    return {"$type": "DialogInstance", "id": dialog_id, "state": state}


def stack(*frames: Any) -> dict[str, Any]:
    return {"$type": "DialogState", "dialogStack": list(frames)}


PROMPT = {"options": options(), "state": {}}
WATERFALL = {"options": None, "values": {"draft": {}}, "instanceId": "i-1", "stepIndex": 0}


def profile_at_transport(prompt: Any = PROMPT, waterfall: Any = WATERFALL, prompt_id: str = "profile.transport") -> Any:
    """The profile dialog waiting for the transport answer (ids as dialogs/profile_dialog.py registers them)."""
    return stack(frame("profile", {"dialogs": stack(frame(prompt_id, prompt), frame("profile.steps", waterfall))}))


def member_record(dialog_state: Any) -> str:
    """Ada's record in the conversation (PrivateConversationState): her dialog stack and the name flag."""
    return json.dumps({"DialogState": dialog_state, "MemberData": MEMBER_DATA})


def user_record(profile: Any) -> str:
    return json.dumps({"UserProfile": profile})


NESTED_1000 = "[" * 1000 + "]" * 1000
MEMBER_DATA = {"schema_version": MEMBER_VERSION, "asked_for_name": False}


def said(text: str) -> re.Pattern[str]:
    """A reply that contains ``text``."""
    return re.compile(re.escape(text))


ADA_ECHOED_HELLO = words.echo_pattern(name="Ada", text="hello")  # the sample's echo (tests/support/words.py)
ADA_ECHOED_AGAIN = words.echo_pattern(name="Ada", text="again")


@dataclass(frozen=True, slots=True)
class Shape:
    record: str  # "member" (her record in the conversation) or "user" (her profile)
    document: str
    handling: Handling
    say: str = "hello"
    # Found in the reply to ``say`` (for ENDED the reply is the apology alone): by default, Ada's echo of it.
    answer: re.Pattern[str] = ADA_ECHOED_HELLO
    # The next message and what its reply holds.
    then: tuple[str, re.Pattern[str]] = ("again", ADA_ECHOED_AGAIN)


SHAPES: dict[str, Shape] = {
    # Not decodable: moved aside.
    "undecodable JSON": Shape("member", '{"DialogState": {"$type": "Dialo', Handling.MOVED),
    "JSON that is not an object": Shape("member", '["DialogState", "MemberData"]', Handling.MOVED),
    "unknown $type": Shape("member", member_record({"$type": "DialogStack", "frames": []}), Handling.MOVED),
    "$type not a string": Shape("member", member_record({"$type": ["DialogState"], "dialogStack": []}), Handling.MOVED),
    "DialogState missing dialogStack": Shape("member", member_record({"$type": "DialogState"}), Handling.MOVED),
    "dialogStack not a list": Shape(
        "member", member_record({"$type": "DialogState", "dialogStack": {"0": frame("profile", {})}}), Handling.MOVED
    ),
    "DialogInstance missing state": Shape(
        "member", member_record(stack({"$type": "DialogInstance", "id": "profile"})), Handling.MOVED
    ),
    "DialogInstance state not an object": Shape("member", member_record(stack(frame("profile", "x"))), Handling.MOVED),
    "DialogInstance id not a string": Shape("member", member_record(stack(frame(7, {}))), Handling.MOVED),
    "PromptOptions field of the wrong type": Shape(
        "member", member_record(profile_at_transport({"options": options(prompt="How?"), "state": {}})), Handling.MOVED
    ),
    "schema.Activity msrest cannot read": Shape(
        "member",
        member_record(
            profile_at_transport(
                {"options": options(retryPrompt={"$type": "schema.Activity", "value": {"timestamp": "x"}}), "state": {}}
            )
        ),
        Handling.MOVED,
    ),
    "nesting 1,000 deep": Shape(
        "member",
        '{"MemberData": ' + json.dumps(MEMBER_DATA) + ', "deep": ' + NESTED_1000 + "}",
        Handling.MOVED,
    ),
    # Decodable, but not a dialog stack this code can resume: the dialog ends.
    "dialog stack naming an unknown dialog": Shape(
        "member", member_record(stack(frame("profile.v0", {"dialogs": stack()}))), Handling.ENDED
    ),
    "component naming an unknown inner dialog": Shape(
        "member", member_record(profile_at_transport(prompt_id="profile.transport.v2")), Handling.ENDED
    ),
    "waterfall stepIndex beyond its steps": Shape(
        "member", member_record(profile_at_transport(waterfall={**WATERFALL, "stepIndex": 7})), Handling.ENDED
    ),
    "waterfall stepIndex not an int": Shape(
        "member", member_record(profile_at_transport(waterfall={**WATERFALL, "stepIndex": "0"})), Handling.ENDED
    ),
    "prompt frame without options": Shape(
        "member", member_record(profile_at_transport(prompt={"state": {}})), Handling.ENDED
    ),
    "component without its inner dialogs": Shape("member", member_record(stack(frame("profile", {}))), Handling.ENDED),
    "dialog state that is not a DialogState": Shape("member", member_record("profile"), Handling.ENDED),
    # Read tolerantly.
    "profile that is not an object": Shape(
        "user",
        user_record("x"),
        Handling.TOLERATED,
        say="show",
        answer=said(NOTHING_STORED_TEXT),
        then=("again", said(STRANGER_TEXT)),
    ),
    "profile age of the wrong type": Shape(
        "user",
        user_record({"schema_version": PROFILE_VERSION, "name": "Ada", "transport": "Bus", "age": "old"}),
        Handling.TOLERATED,
        say="show",
        answer=said("- Age: (not given)"),
    ),
    "profile draft missing from the waterfall": Shape(
        "member",
        member_record(profile_at_transport(waterfall={**WATERFALL, "values": {}})),
        Handling.TOLERATED,
        say="Bus",
        answer=said(NAME_QUESTION),
        then=("cancel", said(CANCELLED_TEXT)),
    ),
}


# -- driving the real app --------------------------------------------------------------------------------------

Planter = Callable[[StateStorage, str], Awaitable[None]]


@dataclass
class Ada:
    """A user named Ada in one conversation with the real app, whose state lives in ``storage``."""

    talk: Conversation
    storage: StateStorage
    moves: list[tuple[str, str | None]]

    @property
    def keys(self) -> dict[str, str]:
        user, conversation = self.talk.user_id, self.talk.conversation_id
        return {"user": f"emulator/users/{user}", "member": f"emulator/conversations/{conversation}/users/{user}/"}


async def check_shape(ada: Ada, record: str, plant: Planter, shape: Shape, caplog: pytest.LogCaptureFixture) -> None:
    """Plant a shape into Ada's ``record`` and check how the next two messages are answered (module docstring)."""
    key = ada.keys[record]
    (other,) = set(ada.keys.values()) - {key}
    await plant(ada.storage, key)
    planted = await kept(ada.storage, key)
    other_before = await kept(ada.storage, other)
    caplog.clear()

    reply = await ada.talk.say(shape.say)

    assert_answered(reply, caplog)
    if shape.handling is Handling.MOVED:
        assert reply.texts[0] == DAMAGED_TEXT
        assert shape.answer.search("\n".join(reply.texts[1:])), reply.texts
        [(moved, damaged_key)] = ada.moves
        assert moved == key
        assert damaged_key is not None
        assert damaged_key == f"_damaged/{key}"
        assert await kept(ada.storage, damaged_key) == planted
    else:
        assert ada.moves == []
        if shape.handling is Handling.ENDED:
            assert reply.texts == [LOST_TRACK_TEXT]
        else:
            assert shape.answer.search(reply.text), reply.texts
            assert LOST_TRACK_TEXT not in reply.texts
    assert await kept(ada.storage, other) == other_before

    said, answer = shape.then
    moves = len(ada.moves)
    after = await ada.talk.say(said)

    assert_answered(after, caplog)
    assert answer.search(after.text), after.texts
    assert not {DAMAGED_TEXT, LOST_TRACK_TEXT} & set(after.texts)
    assert len(ada.moves) == moves


def assert_answered(reply: Reply, caplog: pytest.LogCaptureFixture) -> None:
    """An ordinary turn as the channel sees it: accepted, no error apology, no trace, no traceback in the log."""
    assert reply.status in (200, 201)
    assert not {BOT_ERROR_TEXT, UNREADABLE_TEXT} & set(reply.texts)
    assert [activity for activity in reply.activities if activity.get("type") != "message"] == []
    assert [line.getMessage() for line in caplog.records if line.exc_info or line.levelno >= logging.ERROR] == []


@pytest.fixture
async def ada(
    storage: StateStorage, http: aiohttp.ClientSession, channel: FakeChannel, monkeypatch: pytest.MonkeyPatch
):
    """Ada, named in a first conversation turn, on the real app over ``storage``; every move aside is recorded."""
    moves: list[tuple[str, str | None]] = []
    move_aside = storage.move_aside

    async def recorded_move_aside(key: str) -> str | None:
        new_key = await move_aside(key)
        moves.append((key, new_key))
        return new_key

    monkeypatch.setattr(storage, "move_aside", recorded_move_aside)
    settings = load_settings({"PORT": "0", "STORAGE": "memory"})
    async with serving(await create_app(settings, bot_factory=lambda _: create_bot(storage))) as url:
        talk = Conversation(http, url, channel)
        await talk.say("hi")
        assert (await talk.say("Ada")).texts == [words.thanks("Ada")]
        yield Ada(talk, storage, moves)


@pytest.mark.parametrize("name", SHAPES)
async def test_a_damaged_or_foreign_record_never_wedges_the_user(
    ada: Ada, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    shape = SHAPES[name]

    async def plant(storage: StateStorage, key: str) -> None:
        await plant_raw(storage, key, shape.document)

    await check_shape(ada, shape.record, plant, shape, caplog)


@pytest.mark.parametrize("storage", ["sqlite", "blob"], indirect=True)
async def test_a_record_that_is_not_utf8_is_moved_aside_not_an_outage(
    ada: Ada, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are not UTF-8 in one record: that record is damaged (moved aside byte for byte), the store is not
    down. Only sqlite and blob can hold such bytes (a TEXT column keeps any bytes; a blob is bytes): memory, table
    and cosmos keep text or JSON, which cannot be invalid UTF-8, so they are not part of this test."""
    document = b'{"MemberData": {"schema_version": 1, "asked_for_name": false}, "note": "caf\xe9 \xff"}'

    async def plant(storage: StateStorage, key: str) -> None:
        await plant_bytes(storage, key, document)

    await check_shape(ada, "member", plant, Shape("member", "", Handling.MOVED), caplog)
