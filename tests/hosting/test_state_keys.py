"""State keys from request ids (hosting/state_keys.py): no id can make a key that is another record's.

Table-driven checks of the escaping (ordinary ids unchanged, round trip, injective), the states' keys against the
SDK's for ordinary ids, expiry by key shape, and the forgery itself through the real app over real HTTP.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from datetime import timedelta

import aiohttp
import pytest
from botbuilder.core import ConversationState, PrivateConversationState, TurnContext, UserState
from botbuilder.core.adapters import TestAdapter
from botbuilder.schema import Activity, ChannelAccount, ConversationAccount

from bots.commands import STORED_TEXT
from config import Settings
from data_models import UserProfile
from dialogs import describe_profile
from hosting import states
from hosting.pipeline import lock_key
from hosting.state_keys import conversation_key, id_of, key_segment, private_conversation_key, user_key
from hosting.storage import ExpiryPolicy, MemoryStateStorage
from tests.support import words
from tests.support.channel import Conversation, FakeChannel

ORDINARY_IDS = [
    "emulator",
    "msteams",
    "user-1",
    "29:1AbCdEf-gHiJkL",
    "19:abc@thread.tacv2;messageid=1712",
    "a:1xYz_9",
    "8b2d9c1e-ffff-4aaa-9bbb-123456789abc|livechat",
    "ünïcødé 名前 🤖",
    "with space",
    "100%",
    "back\\slash?q#f",
    "2a",
    "*",  # not ordinary: listed so that the table below covers it
]
AWKWARD_IDS = [
    "/",
    "*",
    "//",
    "**",
    "*2f",
    "*2a",
    "/2f",
    "a/b",
    "a*b",
    "a*2fb",
    "a*2f/b",
    "c1/users/u2/",
    "c1/users/u2",
    "/leading",
    "trailing/",
    "*2",
    "2f",
    "x/conversations/y",
    "名/前*🤖",
]


@pytest.mark.parametrize("identifier", [i for i in ORDINARY_IDS if "*" not in i and "/" not in i])
def test_an_ordinary_id_is_its_own_segment(identifier: str) -> None:
    assert key_segment(identifier) == identifier
    assert id_of(identifier) == identifier


@pytest.mark.parametrize(
    ("identifier", "segment"),
    [
        ("/", "*2f"),
        ("*", "*2a"),
        ("a/b", "a*2fb"),
        ("a*b", "a*2ab"),
        ("*2f", "*2a2f"),
        ("c1/users/u2/", "c1*2fusers*2fu2*2f"),
        ("a*2f/b", "a*2a2f*2fb"),
    ],
)
def test_slash_and_the_escape_character_are_escaped(identifier: str, segment: str) -> None:
    assert key_segment(identifier) == segment
    assert "/" not in segment


@pytest.mark.parametrize("identifier", ORDINARY_IDS + AWKWARD_IDS)
def test_every_id_round_trips(identifier: str) -> None:
    assert id_of(key_segment(identifier)) == identifier


def test_different_ids_never_share_a_segment() -> None:
    # Every string of up to four characters over the characters that matter: all of them distinct once escaped.
    alphabet = "*/2af"
    ids = ["".join(chars) for size in range(5) for chars in itertools.product(alphabet, repeat=size)]
    segments = {key_segment(identifier) for identifier in ids}
    assert len(segments) == len(ids)
    assert all("/" not in segment for segment in segments)


@pytest.mark.parametrize("segment", ["*", "*2", "*2b", "a*", "**2a", "a/b", "*2f*"])
def test_text_the_escaping_cannot_have_made_is_refused(segment: str) -> None:
    with pytest.raises(ValueError, match="not an escaped key segment"):
        id_of(segment)


def test_forged_ids_keep_the_key_of_their_own_state() -> None:
    assert conversation_key("emulator", "c1/users/u2/") == "emulator/conversations/c1*2fusers*2fu2*2f"
    assert conversation_key("emulator", "c1/users/u2/") != private_conversation_key("emulator", "c1", "u2")
    assert user_key("emulator", "u2/x") != private_conversation_key("emulator", "c1", "u2")
    assert user_key("a/users", "b") != user_key("a", "users/b")
    assert conversation_key("msteams", "c/turn-lock") != f"{conversation_key('msteams', 'c')}/turn-lock"


def _turn(channel_id: str, conversation_id: str, user_id: str) -> TurnContext:
    activity = Activity(
        channel_id=channel_id,
        from_property=ChannelAccount(id=user_id),
        conversation=ConversationAccount(id=conversation_id),
    )
    return TurnContext(TestAdapter(), activity)


@pytest.mark.parametrize(
    ("channel_id", "conversation_id", "user_id"),
    [("emulator", "conv-1", "user-1"), ("msteams", "19:abc@thread.tacv2;messageid=1", "29:1xYz"), ("名", "c 1", "🤖")],
)
def test_states_keep_the_sdks_keys_for_ordinary_ids(channel_id: str, conversation_id: str, user_id: str) -> None:
    """Records stored before the escaping (by the SDK's own key functions) are found under the same keys."""
    storage = MemoryStateStorage()
    turn = _turn(channel_id, conversation_id, user_id)
    pairs = [
        (states.UserState(storage), UserState(storage)),
        (states.ConversationState(storage), ConversationState(storage)),
        (states.PrivateConversationState(storage), PrivateConversationState(storage)),
    ]
    for ours, sdks in pairs:
        assert ours.get_storage_key(turn) == sdks.get_storage_key(turn)
    assert lock_key(turn.activity) == ConversationState(storage).get_storage_key(turn)


def test_states_escape_the_ids_of_the_turn() -> None:
    storage = MemoryStateStorage()
    turn = _turn("emu/lator", "c1/users/u2/", "u*1")
    assert states.UserState(storage).get_storage_key(turn) == "emu*2flator/users/u*2a1"
    assert states.ConversationState(storage).get_storage_key(turn) == "emu*2flator/conversations/c1*2fusers*2fu2*2f"
    assert (
        states.PrivateConversationState(storage).get_storage_key(turn)
        == "emu*2flator/conversations/c1*2fusers*2fu2*2f/users/u*2a1/"
    )
    assert lock_key(turn.activity) == "emu*2flator/conversations/c1*2fusers*2fu2*2f"


@pytest.mark.parametrize(
    ("channel_id", "conversation_id", "user_id"),
    [
        ("emulator", "c1", "u1"),
        ("a/users", "c/users/x", "u/conversations/y"),
        ("x/conversations", "users", "conversations"),
        ("users", "c*2f", "/"),
    ],
)
def test_expiry_reads_the_shape_each_state_chose(channel_id: str, conversation_id: str, user_id: str) -> None:
    """``ExpiryPolicy.ttl_for`` splits keys by "/": an id cannot move a record into the other lifetime."""
    policy = ExpiryPolicy(conversation_ttl=timedelta(days=30), user_ttl=timedelta(days=400))
    assert policy.ttl_for(user_key(channel_id, user_id)) == timedelta(days=400)
    assert policy.ttl_for(conversation_key(channel_id, conversation_id)) == timedelta(days=30)
    assert policy.ttl_for(private_conversation_key(channel_id, conversation_id, user_id)) == timedelta(days=30)


def _stored(settings: Settings) -> dict[str, tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(settings.store.path)) as db:
        return {
            key: (document, e_tag) for key, document, e_tag in db.execute("SELECT key, document, e_tag FROM bot_state")
        }


async def test_a_conversation_id_cannot_reach_another_users_private_record(
    settings: Settings, bot_url: str, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    """Bob is in the middle of naming himself in c1. Mallory talks in a conversation whose id is
    ``c1/users/bob/``, which the SDK would store exactly where Bob's private record in c1 lives."""
    bob = Conversation(http, bot_url, channel, user_id="bob", conversation_id="c1", expect_replies=True)
    mallory = Conversation(
        http, bot_url, channel, user_id="mallory", conversation_id="c1/users/bob/", expect_replies=True
    )
    await bob.say("hi")
    bobs_record = "emulator/conversations/c1/users/bob/"
    before = _stored(settings)[bobs_record]

    for text in ("hi", "Mallory", "profile"):
        await mallory.say(text)

    stored = _stored(settings)
    assert stored[bobs_record] == before
    assert "emulator/conversations/c1*2fusers*2fbob*2f" in stored
    assert "emulator/conversations/c1*2fusers*2fbob*2f/users/mallory/" in stored
    assert (await bob.say("Bob")).texts == [words.thanks("Bob")]
    shown = (await mallory.say("show")).texts[0]
    assert shown == f"{STORED_TEXT}\n\n{describe_profile(UserProfile(name='Mallory'))}", "Mallory's own profile"
    assert "Bob" not in shown
