"""Teams-shaped activities: the bot's own @mention never reaches the bot, and ALLOWED_TENANTS keeps other tenants out.

The real app over real HTTP with the counting bot (tests/support/counting_bot.py) on a memory store the tests look
into, and activities shaped as Teams sends them (channel ``msteams``, ``19:...@thread.v2`` conversations, the tenant
in ``channelData``, ``<at>...</at>`` in the text with a ``mention`` entity). Replies go to the local fake channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from botbuilder.schema import Activity, ChannelAccount, Entity

from app import create_app
from config import load_settings
from hosting import ConfigError
from hosting.channels import strip_own_mentions, tenant_problem
from hosting.storage import MemoryStateStorage
from hosting.wire import from_json
from tests.support import counting_bot
from tests.support.channel import BOT_ID, Conversation, FakeChannel, serving

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
BOT_NAME = "Counting Bot"


def _mention(user_id: str, name: str, text: str | None = None) -> dict[str, Any]:
    mention: dict[str, Any] = {"type": "mention", "mentioned": {"id": user_id, "name": name}}
    if text is not None:
        mention["text"] = text
    return mention


def _teams(talk: Conversation, text: str, *, tenant: str | None = TENANT, mentions: list | None = None) -> dict:
    """A Teams group-chat message from ``talk``'s user, the bot @mentioned (unless ``mentions`` says otherwise)."""
    activity = talk.activity(text=text)
    activity["channelId"] = "msteams"
    activity["conversation"] = {"id": talk.conversation_id, "conversationType": "groupChat", "isGroup": True}
    activity["entities"] = mentions if mentions is not None else [_mention(BOT_ID, BOT_NAME, f"<at>{BOT_NAME}</at>")]
    if tenant is not None:
        activity["channelData"] = {"tenant": {"id": tenant}}
        activity["conversation"]["tenantId"] = tenant
    return activity


@pytest_asyncio.fixture
async def store() -> MemoryStateStorage:
    return MemoryStateStorage()


async def _serve(store: MemoryStateStorage, **variables: str) -> AsyncIterator[str]:
    settings = load_settings({"PORT": "0", "STORAGE": "memory", **variables})
    async with serving(await create_app(settings, bot_factory=lambda _: counting_bot.counting_bot(store))) as url:
        yield url


@pytest_asyncio.fixture
async def teams_bot(store: MemoryStateStorage) -> AsyncIterator[str]:
    async for url in _serve(store):
        yield url


@pytest_asyncio.fixture
async def one_tenant_bot(store: MemoryStateStorage) -> AsyncIterator[str]:
    async for url in _serve(store, ALLOWED_TENANTS=f" {TENANT.upper()} "):
        yield url


# --- the bot's own mention -----------------------------------------------------------------------------------------


async def test_the_bots_mention_is_gone_before_the_bot_reads_the_text(
    teams_bot: str, http: aiohttp.ClientSession, channel: FakeChannel, store: MemoryStateStorage
) -> None:
    talk = Conversation(http, teams_bot, channel, conversation_id="19:group-chat@thread.v2", expect_replies=True)

    named = await talk.post(_teams(talk, f"<at>{BOT_NAME}</at> {counting_bot.call_me('Tessa')}"))
    echoed = await talk.post(_teams(talk, f"hello <at>{BOT_NAME}</at> there"))

    assert named.texts == [counting_bot.named("Tessa")]
    assert echoed.texts == [counting_bot.echo("hello there", 2, "Tessa")]
    stored = await store.read([f"msteams/users/{talk.user_id}"])
    assert stored[f"msteams/users/{talk.user_id}"][counting_bot.USER]["name"] == "Tessa"


def _activity(text: str, *mentions: dict[str, Any]) -> Activity:
    entities = []
    for mention in mentions:
        entity = Entity(type=mention["type"])
        entity.additional_properties = {key: value for key, value in mention.items() if key != "type"}
        entities.append(entity)
    return Activity(type="message", text=text, entities=entities, recipient=ChannelAccount(id="bot-id"))


@pytest.mark.parametrize(
    ("text", "mentions", "expected"),
    [
        ("<at>State Bot</at> Tessa", [_mention("bot-id", "State Bot", "<at>State Bot</at>")], "Tessa"),
        ("Tessa <at>State Bot</at>", [_mention("bot-id", "State Bot", "<at>State Bot</at>")], "Tessa"),
        ("hi <at>State Bot</at> there", [_mention("bot-id", "State Bot", "<at>State Bot</at>")], "hi there"),
        ("<at>State Bot</at> Tessa", [_mention("bot-id", "State Bot")], "Tessa"),  # no text: from the name
        (
            "ask <at>Grace</at> about it",
            [_mention("grace-id", "Grace", "<at>Grace</at>")],
            "ask <at>Grace</at> about it",
        ),
        ("<at>A.*</at> keep all of this", [_mention("bot-id", "A.*", "<at>A.*</at>")], "keep all of this"),
        (
            "<at>Bot</at> hi",
            [{"type": "mention", "mentioned": "not an object", "text": "<at>Bot</at>"}],
            "<at>Bot</at> hi",
        ),
        ("<at>Bot</at> hi", [{"type": "mention", "mentioned": {"id": ["bot-id"]}, "text": 7}], "<at>Bot</at> hi"),
        (
            "<at>Bot</at> hi",
            [{"type": "clientInfo", "mentioned": {"id": "bot-id"}, "text": "<at>Bot</at>"}],
            "<at>Bot</at> hi",
        ),
    ],
    ids=[
        "first",
        "last",
        "middle",
        "name-only",
        "someone-else",
        "regex-like-name",
        "mentioned-not-an-object",
        "wrong-types",
        "not-a-mention",
    ],
)
def test_only_the_recipients_mentions_are_removed_as_written(text: str, mentions: list, expected: str) -> None:
    activity = _activity(text, *mentions)

    strip_own_mentions(activity)

    assert activity.text == expected


# --- ALLOWED_TENANTS -----------------------------------------------------------------------------------------------


async def test_another_tenants_activity_is_refused_with_a_json_403_and_nothing_is_stored(
    one_tenant_bot: str, http: aiohttp.ClientSession, channel: FakeChannel, store: MemoryStateStorage
) -> None:
    talk = Conversation(http, one_tenant_bot, channel, conversation_id="19:group@thread.v2")

    refused = await talk.post(_teams(talk, counting_bot.call_me("Mallory"), tenant=OTHER_TENANT))
    unnamed = await talk.post(_teams(talk, counting_bot.call_me("Mallory"), tenant=None))

    for answer in (refused, unnamed):
        assert answer.status == 403
        assert answer.body["error"]["code"] == "tenant_not_allowed"
        assert answer.activities == []
    assert store._records == {}, "nothing was read into a turn or stored"


async def test_the_allowed_tenant_is_served_in_any_case_and_other_channels_without_a_tenant_too(
    one_tenant_bot: str, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    teams = Conversation(http, one_tenant_bot, channel, conversation_id="19:group@thread.v2", expect_replies=True)
    emulator = Conversation(http, one_tenant_bot, channel, expect_replies=True)

    served = await teams.post(_teams(teams, counting_bot.call_me("Tessa"), tenant=TENANT.upper()))
    local = await emulator.say("hello")

    assert served.texts == [counting_bot.named("Tessa")]
    assert local.texts == [counting_bot.echo("hello", 1)]


def test_the_tenant_is_read_from_channel_data_or_from_the_conversation() -> None:
    allowed = frozenset({TENANT})
    from_conversation = from_json(Activity, {"channelId": "msteams", "conversation": {"id": "c", "tenantId": TENANT}})
    from_channel_data = Activity(channel_id="msteams", channel_data={"tenant": {"id": TENANT}})
    wrong_shape = Activity(channel_id="msteams", channel_data={"tenant": TENANT})

    assert tenant_problem(from_conversation, allowed) is None
    assert tenant_problem(from_channel_data, allowed) is None
    assert tenant_problem(wrong_shape, allowed) is not None
    assert tenant_problem(wrong_shape, frozenset()) is None, "no allow-list: any tenant"


@pytest.mark.parametrize("value", ["not-a-guid", f"{TENANT},contoso.onmicrosoft.com", f"{TENANT};{OTHER_TENANT}"])
def test_allowed_tenants_that_are_not_tenant_ids_are_refused_at_start_up(value: str) -> None:
    with pytest.raises(ConfigError, match="ALLOWED_TENANTS"):
        load_settings({"ALLOWED_TENANTS": value})


def test_allowed_tenants_are_read_in_any_case_and_spacing() -> None:
    settings = load_settings({"ALLOWED_TENANTS": f" {TENANT.upper()} , {OTHER_TENANT},"})

    assert settings.allowed_tenants == frozenset({TENANT, OTHER_TENANT})
