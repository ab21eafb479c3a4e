"""``bots.wire.to_json`` writes exactly what msrest's ``serialize()`` writes, for every reply the bot sends."""

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

from bots.wire import to_json
from storage import MemoryStateStorage
from tests.harness import BotHarness
from tests.test_profile_dialog import PNG


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
