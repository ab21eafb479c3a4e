"""``hosting.wire.to_json`` writes exactly what msrest's ``serialize()`` writes, for every reply the bot sends."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, timezone

import pytest
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    Attachment,
    CardAction,
    ChannelAccount,
    ConversationAccount,
    Entity,
    HeroCard,
    SuggestedActions,
)

from hosting.storage import MemoryStateStorage
from hosting.wire import from_json, to_json
from tests.support.harness import BotHarness

PNG = Attachment(content_type="image/png", content_url="https://files.invalid/me.png", name="me.png")


class Colour(enum.Enum):
    RED = "red"


async def _every_reply() -> list[Activity]:
    """Replies of a whole conversation: welcome, name, echo, help, show, the profile dialog with its buttons and
    a picture, export's file, forget."""
    user = BotHarness(MemoryStateStorage())
    sent: list[Activity] = []
    sent += await user.send(
        Activity(type=ActivityTypes.conversation_update, members_added=[ChannelAccount(id="user-1")])
    )
    for text in ("Ada", "hello", "help", "profile", "Bus", "Grace", "yes", "42"):
        sent += await user.send(Activity(type=ActivityTypes.message, text=text))
    sent += await user.send(Activity(type=ActivityTypes.message, attachments=[PNG]))
    for text in ("yes", "show", "export", "forget", "yes"):
        sent += await user.send(Activity(type=ActivityTypes.message, text=text))
    return sent


async def test_every_reply_of_a_conversation_serialises_as_msrest_does() -> None:
    replies = await _every_reply()

    assert len(replies) > 15
    for reply in replies:
        assert to_json(reply) == reply.serialize()


@pytest.mark.parametrize(
    "activity",
    [
        Activity(
            type=ActivityTypes.message,
            timestamp=datetime(2026, 11, 25, 23, 1, 2, 345000, tzinfo=UTC),
            local_timestamp=datetime(2026, 11, 25, 12, 1, 2, tzinfo=timezone(timedelta(hours=-11))),
            from_property=ChannelAccount(id="b", name="Bot", role="bot"),
            conversation=ConversationAccount(id="c", is_group=True),
            suggested_actions=SuggestedActions(to=["u"], actions=[CardAction(type="imBack", title="Car", value="Car")]),
            attachments=[Attachment(content_type="application/vnd.microsoft.card.hero", content=HeroCard(title="t"))],
            entities=[Entity(type="mention")],
            channel_data={"nested": [1, 2.5, None, {"a": True}]},
            value=Colour.RED,
            members_added=[ChannelAccount(id="x"), None],
            importance="high",
        ),
        Activity(type=ActivityTypes.trace, value={"model": CardAction(type="openUrl", value="http://x")}),
        Activity(type=ActivityTypes.message, text="", attachments=[]),
    ],
    ids=["every-kind-of-field", "a-model-inside-an-object", "empty-values"],
)
def test_unusual_fields_serialise_as_msrest_does(activity: Activity) -> None:
    assert to_json(activity) == activity.serialize()


CHANNEL_BODIES = [
    {
        "type": "message",
        "id": "1",
        "timestamp": "2026-11-25T23:01:02.3456789Z",
        "localTimestamp": "2026-11-25T12:01:02.345-11:00",
        "channelId": "emulator",
        "serviceUrl": "http://127.0.0.1:9/",
        "from": {"id": "u", "name": "User", "role": "user"},
        "recipient": {"id": "b", "name": "Bot"},
        "conversation": {"id": "c", "isGroup": True, "tenantId": "t"},
        "text": "hello",
        "locale": "en-US",
        "textFormat": "plain",
        "attachments": [{"contentType": "image/png", "contentUrl": "http://127.0.0.1:9/p.png", "name": "p.png"}],
        "entities": [{"type": "ClientCapabilities", "requiresBotState": True}],
        "channelData": {"clientActivityID": "x", "nested": [1, 2.5, None, {"a": False}]},
        "value": {"anything": ["goes", 1]},
        "deliveryMode": "expectReplies",
    },
    {
        "type": "conversationUpdate",
        "channelId": "directline",
        "serviceUrl": "http://127.0.0.1:9/",
        "from": {"id": "u"},
        "recipient": {"id": "b"},
        "conversation": {"id": "c"},
        "membersAdded": [{"id": "b", "name": "Bot"}, {"id": "u", "name": "User"}],
        "membersRemoved": [],
    },
    {
        "type": "message",
        "channelId": "msteams",
        "serviceUrl": "https://smba.trafficmanager.net/emea/",
        "from": {"id": "u", "aadObjectId": "o"},
        "recipient": {"id": "b"},
        "conversation": {"id": "c", "conversationType": "personal"},
        "replyToId": "r",
        "suggestedActions": {"to": ["u"], "actions": [{"type": "imBack", "title": "Car", "value": "Car"}]},
        "attachments": [{"contentType": "application/vnd.microsoft.card.hero", "content": {"title": "t"}}],
        "value": 3,
    },
]


@pytest.mark.parametrize("body", CHANNEL_BODIES, ids=["message-with-everything", "conversation-update", "teams"])
def test_reading_an_activity_gives_what_msrest_gives(body: dict) -> None:
    assert from_json(Activity, body) == Activity().deserialize(body)
