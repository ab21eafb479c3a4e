"""What a bot inherits from botbuilder's CloudAdapter works through the engine, over real HTTP against the real app:
proactive messages (``continue_conversation``), ``update_activity`` / ``delete_activity``, ``create_conversation``,
``OAuthPrompt``, and the documented way of creating states.

The channel is ``FakeChannel`` (tests/support/channel.py) on 127.0.0.1, which records every request that arrives;
the store records its reads and writes in the same event list, so the order of "saved" and "sent" is checked,
not assumed. Microsoft's login endpoint, key endpoint and token service are not reachable here: ``LoginServer``
and ``KeyServer`` (tests/support/identity.py) stand in for the first two, and FakeChannel's token-service routes
for the third (``OAuthUrl`` points at it). Each bot is a small one defined here, not the sample.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from botbuilder.core import ActivityHandler, BotAdapter, BotState, MessageFactory, TurnContext
from botbuilder.core import UserState as SdkUserState
from botbuilder.dialogs import DialogSet, DialogTurnStatus, OAuthPrompt, OAuthPromptSettings, PromptOptions
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    ConversationReference,
)
from botframework.connector.auth import ClaimsIdentity

import hosting
from app import create_app
from config import Settings, load_settings
from hosting.pipeline import BOT_ERROR_TEXT, TurnOutcome
from hosting.state_keys import conversation_key, user_key
from hosting.storage import ETagConflictError, MemoryStateStorage, StateStorage
from tests.support.channel import BOT_ID, Conversation, FakeChannel, Reply, serving
from tests.support.identity import (
    APP_ID,
    APP_PASSWORD,
    KeyServer,
    KeySet,
    LoginServer,
    channel_claims,
    jwk,
    new_key,
    sign,
)

CHANNEL_KEY = new_key()
CONNECTION = "test-connection"


class RecordingStore(MemoryStateStorage):
    """The memory store, adding a line to ``events`` for each read and each write (with the keys written)."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events
        #: How many of the next writes lose a race (another process changed a record since it was read).
        self.conflicts = 0

    async def read(self, keys: list[str], *, stamps: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
        self.events.append("store: read")
        return await super().read(keys, stamps=stamps)

    async def write(self, changes: Mapping[str, object]) -> None:
        self.events.append(f"store: write {sorted(changes)}")
        if self.conflicts:
            self.conflicts -= 1
            raise ETagConflictError("memory: changed by another writer (simulated)")
        await super().write(changes)

    async def record(self, key: str) -> dict[str, Any] | None:
        return (await MemoryStateStorage.read(self, [key])).get(key)


class Notebook(ActivityHandler):
    """Counts the messages of a conversation (``noted N``) and keeps each conversation's reference, as a first
    proactive bot does. ``edit`` sends a draft and replaces it, ``remove <id>`` deletes an activity, ``keep`` keeps
    the turn's context after the turn, ``ping myself`` starts a proactive turn of its own conversation."""

    def __init__(self, storage: StateStorage) -> None:
        self.conversation_state = hosting.ConversationState(storage)
        self.user_state = hosting.UserState(storage)
        self.notes = self.conversation_state.create_property("notes")
        self.references: dict[str, ConversationReference] = {}
        self.kept: list[TurnContext] = []

    @property
    def states(self) -> list[BotState]:
        return [self.user_state, self.conversation_state]

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        self.references[activity.conversation.id] = TurnContext.get_conversation_reference(activity)
        notes = await self.notes.get(turn_context, dict)
        notes["count"] = notes.get("count", 0) + 1
        text = activity.text or ""
        if text == "edit":
            draft = await turn_context.send_activity("draft")
            await turn_context.update_activity(Activity(id=draft.id, type=ActivityTypes.message, text="final"))
        elif text.startswith("remove "):
            await turn_context.delete_activity(text.removeprefix("remove "))
        elif text == "keep":
            self.kept.append(turn_context)
            await turn_context.send_activity("kept")
        elif text == "ping myself":
            await turn_context.adapter.continue_conversation(self.references[activity.conversation.id], self.remind)
        else:
            reminded = " after a reminder" if notes.get("reminded") else ""
            await turn_context.send_activity(f"noted {notes['count']}{reminded}")

    async def remind(self, turn_context: TurnContext) -> None:
        """A proactive callback: marks the conversation as reminded and says so."""
        notes = await self.notes.get(turn_context, dict)
        notes["reminded"] = True
        await turn_context.send_activity("reminder")


def anonymous() -> Settings:
    return load_settings({"PORT": "0", "STORAGE": "memory"})


@pytest_asyncio.fixture
async def events() -> list[str]:
    return []


@pytest_asyncio.fixture
async def recording_channel(events: list[str]) -> AsyncIterator[FakeChannel]:
    fake = FakeChannel(events)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


class Served:
    """The app serving a test bot, with what the tests look at."""

    def __init__(self, app: web.Application, url: str) -> None:
        self.app = app
        self.url = url

    @property
    def adapter(self) -> hosting.StateBotAdapter:
        return self.app[hosting.RUNTIME].adapter


@pytest_asyncio.fixture
async def store(events: list[str]) -> RecordingStore:
    return RecordingStore(events)


@pytest_asyncio.fixture
async def notebook(store: RecordingStore) -> Notebook:
    return Notebook(store)


@pytest_asyncio.fixture
async def served(notebook: Notebook) -> AsyncIterator[Served]:
    app = await create_app(anonymous(), bot_factory=lambda _: (notebook, notebook.states))
    async with serving(app) as url:
        yield Served(app, url)


def reference_to(channel: FakeChannel, conversation_id: str, user_id: str = "user-1") -> ConversationReference:
    return ConversationReference(
        channel_id="emulator",
        service_url=channel.url,
        conversation=ConversationAccount(id=conversation_id),
        user=ChannelAccount(id=user_id, name="User"),
        bot=ChannelAccount(id=BOT_ID, name="Bot"),
    )


def shape(events: list[str]) -> list[str]:
    """``events`` with the last segment of each channel path cut (ids the channel or the SDK made up)."""
    return [event.rsplit("/", 1)[0] if event.startswith("channel: ") else event for event in events]


# --- continue_conversation -----------------------------------------------------------------------------------------


async def test_a_proactive_message_is_a_turn_saved_once_before_its_reply_leaves(
    served: Served,
    notebook: Notebook,
    store: RecordingStore,
    recording_channel: FakeChannel,
    http: aiohttp.ClientSession,
    events: list[str],
) -> None:
    talk = Conversation(http, served.url, recording_channel)
    assert (await talk.say("hello")).texts == ["noted 1"]
    reference = notebook.references[talk.conversation_id]
    events.clear()

    responses = await served.adapter.continue_conversation(reference, notebook.remind, None)

    key = conversation_key("emulator", talk.conversation_id)
    assert events[:2] == ["store: read", f"store: write {[key]}"]
    [arrival] = events[2:]
    assert arrival.startswith(f"channel: POST /v3/conversations/{talk.conversation_id}/activities")
    [reminder] = recording_channel.take()
    assert reminder["text"] == "reminder"
    assert reminder["recipient"]["id"] == talk.user_id
    assert reminder["from"]["id"] == BOT_ID
    assert [response.id for response in responses] == recording_channel.answered_ids[-1:]
    assert (await store.record(key))["notes"] == {"count": 1, "reminded": True}
    assert (await talk.say("again")).texts == ["noted 2 after a reminder"]
    assert served.adapter.user_tokens.builds == 0  # no turn here signed anybody in: nothing was built


async def test_continue_conversation_with_claims_runs_the_turn_with_that_identity(
    served: Served, notebook: Notebook, store: RecordingStore, recording_channel: FakeChannel
) -> None:
    identities: list[ClaimsIdentity] = []
    claims = ClaimsIdentity({"aud": "bot-app", "appid": "bot-app"}, True)

    async def note_identity(turn_context: TurnContext) -> None:
        identities.append(turn_context.turn_state[BotAdapter.BOT_IDENTITY_KEY])
        await notebook.remind(turn_context)

    await served.adapter.continue_conversation_with_claims(
        claims, reference_to(recording_channel, "c-claims"), None, note_identity
    )

    assert identities == [claims]
    assert [activity["text"] for activity in recording_channel.received] == ["reminder"]
    assert (await store.record(conversation_key("emulator", "c-claims")))["notes"] == {"reminded": True}


async def test_a_proactive_turn_that_loses_a_race_runs_again_and_sends_only_the_replies_of_the_saved_attempt(
    served: Served, notebook: Notebook, store: RecordingStore, recording_channel: FakeChannel, events: list[str]
) -> None:
    """The store's first write conflicts (a stand-in for another instance saving the conversation meanwhile)."""
    store.conflicts = 1
    runs = 0

    async def count_runs(turn_context: TurnContext) -> None:
        nonlocal runs
        runs += 1
        await notebook.remind(turn_context)

    await served.adapter.continue_conversation(reference_to(recording_channel, "c-raced"), count_runs)

    assert runs == 2
    key = conversation_key("emulator", "c-raced")
    assert shape(events) == [
        "store: read",
        f"store: write {[key]}",  # lost the race: nothing was sent
        f"store: write {[key + '/turn-lock']}",  # the conversation's shared lock, taken after a conflict
        "store: read",
        f"store: write {[key]}",
        "channel: POST /v3/conversations/c-raced/activities",
    ]
    assert [activity["text"] for activity in recording_channel.received] == ["reminder"]


async def test_a_proactive_turn_that_fails_raises_and_neither_saves_nor_sends(
    served: Served, notebook: Notebook, store: RecordingStore, recording_channel: FakeChannel, events: list[str]
) -> None:
    async def broken(turn_context: TurnContext) -> None:
        notes = await notebook.notes.get(turn_context, dict)
        notes["reminded"] = True
        await turn_context.send_activity("reminder")
        raise RuntimeError("the reminder's template is missing")

    with pytest.raises(hosting.ProactiveTurnError) as raised:
        await served.adapter.continue_conversation(reference_to(recording_channel, "c-broken"), broken)

    assert raised.value.outcome == TurnOutcome.BOT_ERROR
    assert raised.value.saved is False
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert events == ["store: read"]
    assert recording_channel.requests == []


async def test_a_proactive_reply_the_channel_refuses_raises_after_the_state_was_saved(
    served: Served, notebook: Notebook, store: RecordingStore, recording_channel: FakeChannel
) -> None:
    recording_channel.failing.add("POST")

    with pytest.raises(hosting.ProactiveTurnError) as raised:
        await served.adapter.continue_conversation(reference_to(recording_channel, "c-refused"), notebook.remind)

    assert raised.value.outcome == "reply_not_delivered"
    assert raised.value.saved is True
    assert (await store.record(conversation_key("emulator", "c-refused")))["notes"] == {"reminded": True}


@pytest.mark.parametrize(
    ("service_url", "says"),
    [
        ("https://channel.example.com/", "must be on this machine"),  # no app id: replies only to a local Emulator
        ("http://169.254.169.254/", "link-local, metadata"),
        ("", "has no service_url"),
    ],
)
async def test_a_reference_whose_service_url_replies_may_not_go_to_is_refused_before_the_turn(
    served: Served,
    notebook: Notebook,
    recording_channel: FakeChannel,
    events: list[str],
    service_url: str,
    says: str,
) -> None:
    reference = reference_to(recording_channel, "c-elsewhere")
    reference.service_url = service_url

    with pytest.raises(ValueError, match=says):
        await served.adapter.continue_conversation(reference, notebook.remind)

    assert events == []


async def test_a_turn_continuing_its_own_conversation_fails_at_once_instead_of_waiting_for_itself(
    served: Served, recording_channel: FakeChannel, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    talk = Conversation(http, served.url, recording_channel)
    await talk.say("hello")

    reply = await talk.say("ping myself")

    assert reply.texts == [BOT_ERROR_TEXT]
    [failure] = [record.exc_info[1] for record in caplog.records if record.exc_info]
    assert isinstance(failure, RuntimeError)
    assert "send with the running turn's TurnContext instead" in str(failure)


# --- update_activity / delete_activity -----------------------------------------------------------------------------


async def test_updates_and_deletions_leave_after_the_save_in_order_with_the_replies(
    served: Served,
    recording_channel: FakeChannel,
    http: aiohttp.ClientSession,
    events: list[str],
) -> None:
    talk = Conversation(http, served.url, recording_channel)
    await talk.say("hello")
    events.clear()

    await talk.say("edit")
    await talk.say("remove activity-from-yesterday")

    conversation = talk.conversation_id
    key = conversation_key("emulator", conversation)
    keys = [key, f"{key}/deliveries"]  # the conversation's record, then its delivery log (hosting/deliveries.py)
    draft_id = recording_channel.answered_ids[-1]
    assert shape(events) == [
        "store: read",
        f"store: write {keys}",
        f"channel: POST /v3/conversations/{conversation}/activities",  # the draft (a reply to "edit")
        f"channel: PUT /v3/conversations/{conversation}/activities",
        "store: read",
        f"store: write {keys}",
        f"channel: DELETE /v3/conversations/{conversation}/activities",
    ]
    [(updated_in, updated_id, update)] = recording_channel.updates
    assert (updated_in, updated_id) == (conversation, draft_id)  # the channel's id, not the provisional one
    assert update["text"] == "final"
    assert update["id"] == draft_id
    assert recording_channel.deletions == [(conversation, "activity-from-yesterday")]


async def test_an_update_the_channel_refuses_is_a_reply_not_delivered_and_the_turn_stays_saved(
    served: Served, store: RecordingStore, recording_channel: FakeChannel, http: aiohttp.ClientSession
) -> None:
    talk = Conversation(http, served.url, recording_channel)
    await talk.say("hello")
    recording_channel.failing.add("PUT")

    reply = await talk.post(talk.activity(text="edit"))

    assert reply.status == 502
    assert reply.body["error"]["code"] == "reply_not_delivered"
    assert (await store.record(conversation_key("emulator", talk.conversation_id)))["notes"]["count"] == 2


async def test_an_expect_replies_turn_answers_its_replies_and_sends_its_deletions_to_the_service_url(
    served: Served, recording_channel: FakeChannel, http: aiohttp.ClientSession
) -> None:
    talk = Conversation(http, served.url, recording_channel, expect_replies=True)

    reply = await talk.say("remove old-1")

    assert reply.status == 200
    assert reply.activities == []
    assert recording_channel.deletions == [(talk.conversation_id, "old-1")]


async def test_sending_updating_or_deleting_with_the_context_of_an_ended_turn_says_what_to_do_instead(
    served: Served, notebook: Notebook, recording_channel: FakeChannel, http: aiohttp.ClientSession
) -> None:
    talk = Conversation(http, served.url, recording_channel)
    await talk.say("keep")
    [ended] = notebook.kept
    recording_channel.take()

    with pytest.raises(hosting.OutsideTurnError, match="continue_conversation"):
        await ended.send_activity("too late")
    with pytest.raises(hosting.OutsideTurnError):
        await ended.update_activity(Activity(id="a-1", type=ActivityTypes.message, text="too late"))
    with pytest.raises(hosting.OutsideTurnError):
        await ended.delete_activity("a-1")
    assert recording_channel.requests[-1][0] == "POST"  # only the "kept" reply of the turn itself
    assert len(recording_channel.requests) == 1


async def test_a_proactive_turn_updates_and_deletes_with_the_outgoing_token(
    notebook: Notebook, store: RecordingStore, recording_channel: FakeChannel, events: list[str]
) -> None:
    """With credentials: every request of the proactive turn carries the bot's token from ``LoginServer`` (a local
    stand-in for Entra ID's token endpoint), after the turn's one write."""
    login = LoginServer()
    await login.start()
    settings = load_settings(
        {
            "PORT": "0",
            "STORAGE": "memory",
            "MicrosoftAppId": APP_ID,
            "MicrosoftAppPassword": APP_PASSWORD,
            "ToChannelFromBotLoginUrl": login.url,
        }
    )

    async def tidy_up(turn_context: TurnContext) -> None:
        sent = await turn_context.send_activity("summary")
        await turn_context.update_activity(Activity(id=sent.id, type=ActivityTypes.message, text="summary, edited"))
        await turn_context.delete_activity("stale-1")
        notes = await notebook.notes.get(turn_context, dict)
        notes["tidied"] = True

    try:
        app = await create_app(settings, bot_factory=lambda _: (notebook, notebook.states))
        async with serving(app):
            await app[hosting.RUNTIME].adapter.continue_conversation(
                reference_to(recording_channel, "c-tidy"), tidy_up, APP_ID
            )
    finally:
        await login.stop()

    assert [event.split(" ")[:2] for event in events] == [
        ["store:", "read"],
        ["store:", "write"],
        ["channel:", "POST"],
        ["channel:", "PUT"],
        ["channel:", "DELETE"],
    ]
    assert {headers["Authorization"] for _, _, headers in recording_channel.requests} == {"Bearer token-1"}
    assert recording_channel.updates[0][1] == recording_channel.answered_ids[0]
    assert recording_channel.deletions == [("c-tidy", "stale-1")]


# --- create_conversation -------------------------------------------------------------------------------------------


async def test_create_conversation_asks_the_channel_then_runs_the_first_turn_through_the_pipeline(
    served: Served, notebook: Notebook, store: RecordingStore, recording_channel: FakeChannel, events: list[str]
) -> None:
    seen: list[Activity] = []

    async def welcome(turn_context: TurnContext) -> None:
        seen.append(turn_context.activity)
        notes = await notebook.notes.get(turn_context, dict)
        notes["welcomed"] = True
        await turn_context.send_activity("welcome")

    parameters = ConversationParameters(
        bot=ChannelAccount(id=BOT_ID, name="Bot"), members=[ChannelAccount(id="user-9")], is_group=False
    )

    await served.adapter.create_conversation(None, welcome, parameters, "emulator", recording_channel.url)

    [created] = recording_channel.created
    assert created["bot"]["id"] == BOT_ID
    assert created["members"] == [{"id": "user-9"}]
    [activity] = seen
    assert (activity.type, activity.name) == ("event", "CreateConversation")
    assert activity.conversation.id == "created-1"
    assert activity.id == "first-1"
    key = conversation_key("emulator", "created-1")
    assert events == [
        "channel: POST /v3/conversations",
        "store: read",
        f"store: write {[key]}",
        "channel: POST /v3/conversations/created-1/activities/first-1",
    ]
    assert recording_channel.received[-1]["text"] == "welcome"
    assert (await store.record(key))["notes"] == {"welcomed": True}


async def test_a_conversation_the_channel_does_not_create_runs_no_turn(
    served: Served, notebook: Notebook, recording_channel: FakeChannel, events: list[str]
) -> None:
    recording_channel.failing.add("POST")
    parameters = ConversationParameters(bot=ChannelAccount(id=BOT_ID), members=[ChannelAccount(id="user-9")])

    with pytest.raises(hosting.ProactiveTurnError) as raised:
        await served.adapter.create_conversation(None, notebook.remind, parameters, "emulator", recording_channel.url)

    assert raised.value.outcome == "conversation_not_created"
    assert events == ["channel: POST /v3/conversations"]


# --- OAuthPrompt ---------------------------------------------------------------------------------------------------


class SignInBot(ActivityHandler):
    """Signs the user in with an ``OAuthPrompt`` on any message, and says with which token."""

    def __init__(self, storage: StateStorage, connection_name: str = CONNECTION) -> None:
        self.conversation_state = hosting.ConversationState(storage)
        self.dialogs = DialogSet(self.conversation_state.create_property("dialogs"))
        self.dialogs.add(
            OAuthPrompt("sign-in", OAuthPromptSettings(connection_name, "Please sign in", "Sign in", 300_000))
        )

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        dialog_context = await self.dialogs.create_context(turn_context)
        result = await dialog_context.continue_dialog()
        if result.status == DialogTurnStatus.Empty:
            result = await dialog_context.begin_dialog(
                "sign-in", PromptOptions(prompt=MessageFactory.text("Sign in first, please"))
            )
        if result.status == DialogTurnStatus.Complete:
            await turn_context.send_activity(f"signed in with {result.result.token}" if result.result else "no token")


@pytest_asyncio.fixture
async def key_server() -> AsyncIterator[KeyServer]:
    server = KeyServer()
    server.sets["channel"] = KeySet([jwk(CHANNEL_KEY, "key-1")])
    server.sets["entra"] = KeySet([])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def with_credentials(key_server: KeyServer, login: LoginServer, channel: FakeChannel) -> Settings:
    return load_settings(
        {
            "PORT": "0",
            "STORAGE": "memory",
            "MicrosoftAppId": APP_ID,
            "MicrosoftAppPassword": APP_PASSWORD,
            "ToBotFromChannelOpenIdMetadataUrl": key_server.metadata_url("channel"),
            "ToBotFromEmulatorOpenIdMetadataUrl": key_server.metadata_url("entra"),
            "ToChannelFromBotLoginUrl": login.url,
            "OAuthUrl": channel.url,
        }
    )


async def say_signed(talk: Conversation, text: str) -> Reply:
    """A message with a channel token signed by ``KeyServer``'s key, as the Bot Connector sends it."""
    token = sign(channel_claims(talk.channel.url), CHANNEL_KEY)
    reply = await talk.post(talk.activity(text=text), headers={"Authorization": f"Bearer {token}"})
    assert reply.status in (200, 201), (reply.status, reply.body)
    return reply


@pytest_asyncio.fixture
async def signing_in(key_server: KeyServer, login: LoginServer, channel: FakeChannel) -> AsyncIterator[Served]:
    """The app with credentials serving ``SignInBot``; the token service is FakeChannel's stand-in."""
    store = MemoryStateStorage()
    bot = SignInBot(store)
    app = await create_app(
        with_credentials(key_server, login, channel), bot_factory=lambda _: (bot, [bot.conversation_state])
    )
    async with serving(app) as url:
        yield Served(app, url)


async def test_oauth_prompt_finds_a_signed_in_users_token_with_the_bots_token(
    signing_in: Served, channel: FakeChannel, http: aiohttp.ClientSession
) -> None:
    talk = Conversation(http, signing_in.url, channel, user_id="ada")
    channel.user_tokens[("ada", CONNECTION)] = "ada-token"

    reply = await say_signed(talk, "hello")

    assert reply.texts == ["signed in with ada-token"]
    [(path, query, authorization)] = channel.token_calls
    assert path == "/api/usertoken/GetToken"
    assert query == {"userId": "ada", "connectionName": CONNECTION, "channelId": "emulator", "api-version": "token"}
    assert authorization == "Bearer token-1"


async def test_oauth_prompt_sends_a_sign_in_card_then_accepts_the_magic_code(
    signing_in: Served, channel: FakeChannel, http: aiohttp.ClientSession
) -> None:
    talk = Conversation(http, signing_in.url, channel, user_id="grace")
    channel.magic_codes["314159"] = "grace-token"

    card_reply = await say_signed(talk, "hello")
    code_reply = await say_signed(talk, "314159")

    [card_message] = card_reply.activities
    assert card_message["text"] == "Sign in first, please"
    [attachment] = card_message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.oauth"
    assert attachment["content"]["connectionName"] == CONNECTION
    assert code_reply.texts == ["signed in with grace-token"]
    assert [(path, query.get("code")) for path, query, _ in channel.token_calls] == [
        ("/api/usertoken/GetToken", None),
        ("/api/botsignin/GetSignInResource", None),
        ("/api/usertoken/GetToken", "314159"),
    ]
    assert signing_in.adapter.user_tokens.builds == 1  # built on first use, not per turn


async def test_oauth_prompt_keeps_prompting_while_the_user_has_no_token(
    signing_in: Served, channel: FakeChannel, http: aiohttp.ClientSession
) -> None:
    talk = Conversation(http, signing_in.url, channel, user_id="alan")

    await say_signed(talk, "hello")
    reply = await say_signed(talk, "123456")  # a code the token service does not know

    assert reply.texts == []  # still waiting for a sign-in, no retry prompt was set
    assert [query.get("code") for path, query, _ in channel.token_calls if path.endswith("GetToken")] == [
        None,
        "123456",
    ]


async def test_oauth_prompt_without_an_app_id_fails_the_turn_naming_what_to_configure(
    channel: FakeChannel, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStateStorage()
    bot = SignInBot(store)
    app = await create_app(anonymous(), bot_factory=lambda _: (bot, [bot.conversation_state]))

    async with serving(app) as url:
        reply = await Conversation(http, url, channel).say("hello")

    assert reply.texts == [BOT_ERROR_TEXT]
    [trace] = [activity for activity in reply.activities if activity["type"] == "trace"]
    assert trace["value"].startswith("UserTokenError: OAuthPrompt and the user token service need")
    assert "MicrosoftAppId and MicrosoftAppPassword" in trace["value"]
    assert "OAuth connection setting" in trace["value"]
    assert channel.token_calls == []


async def test_oauth_prompt_without_a_connection_name_fails_the_turn_naming_what_to_configure(
    key_server: KeyServer, login: LoginServer, channel: FakeChannel, http: aiohttp.ClientSession
) -> None:
    store = MemoryStateStorage()
    bot = SignInBot(store, connection_name="")
    app = await create_app(
        with_credentials(key_server, login, channel), bot_factory=lambda _: (bot, [bot.conversation_state])
    )

    async with serving(app) as url:
        reply = await say_signed(Conversation(http, url, channel), "hello")

    [trace] = [activity for activity in reply.activities if activity["type"] == "trace"]
    assert "OAuthPromptSettings.connection_name is empty" in trace["value"]
    assert channel.token_calls == []


# --- creating states the documented way ----------------------------------------------------------------------------


class SdkStateBot(ActivityHandler):
    """Written the way botbuilder documents it: ``UserState(storage)`` from botbuilder.core."""

    def __init__(self, storage: StateStorage) -> None:
        self.user_state = SdkUserState(storage)


async def test_a_bot_with_botbuilders_own_user_state_is_refused_at_start_up_saying_what_to_change() -> None:
    def factory(storage: StateStorage) -> tuple[ActivityHandler, list[BotState]]:
        bot = SdkStateBot(storage)
        return bot, [bot.user_state]

    app = await create_app(anonymous(), bot_factory=factory)

    with pytest.raises(hosting.ConfigError) as refused:
        async with serving(app):
            pass

    assert "SdkStateBot.user_state is botbuilder.core's UserState" in str(refused.value)
    assert "create it as hosting.UserState" in str(refused.value)


class SavingBot(ActivityHandler):
    """Calls ``save_changes`` itself, as botbuilder's samples do at the end of ``on_turn``."""

    def __init__(self, storage: StateStorage, events: list[str]) -> None:
        self.user_state = hosting.UserState(storage)
        self.conversation_state = hosting.ConversationState(storage)
        self.visits = self.user_state.create_property("visits")
        self.events = events

    async def on_turn(self, turn_context: TurnContext) -> None:
        await super().on_turn(turn_context)
        await self.user_state.save_changes(turn_context)
        await self.conversation_state.save_changes(turn_context)
        self.events.append("bot: saved its states")

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        visits = (await self.visits.get(turn_context) or 0) + 1
        await self.visits.set(turn_context, visits)
        if turn_context.activity.text == "forget me":
            await self.user_state.delete(turn_context)
        if turn_context.activity.text == "forget me and fail":
            await self.user_state.delete(turn_context)
            raise RuntimeError("failing after the delete")
        await turn_context.send_activity(f"visit {visits}")
        self.events.append("bot: replied")


@pytest_asyncio.fixture
async def saving(store: RecordingStore, events: list[str]) -> AsyncIterator[Served]:
    bot = SavingBot(store, events)
    app = await create_app(anonymous(), bot_factory=lambda _: (bot, [bot.user_state, bot.conversation_state]))
    async with serving(app) as url:
        yield Served(app, url)


async def test_save_changes_in_on_turn_still_makes_one_write_per_turn_and_nothing_leaves_before_it(
    saving: Served, recording_channel: FakeChannel, http: aiohttp.ClientSession, events: list[str]
) -> None:
    talk = Conversation(http, saving.url, recording_channel, user_id="ada")

    await talk.say("hello")
    first = list(events)
    events.clear()
    second = await talk.say("hello again")

    reply_path = f"channel: POST /v3/conversations/{talk.conversation_id}/activities"
    for turn in (first, events):
        assert shape(turn) == [
            "store: read",
            "bot: replied",
            "bot: saved its states",
            f"store: write {sorted([user_key('emulator', 'ada'), talk.deliveries_key])}",
            reply_path,
        ]
    assert second.texts == ["visit 2"]


async def test_state_delete_deletes_only_when_the_turn_is_saved(
    saving: Served, store: RecordingStore, recording_channel: FakeChannel, http: aiohttp.ClientSession
) -> None:
    talk = Conversation(http, saving.url, recording_channel, user_id="grace")
    key = user_key("emulator", "grace")
    await talk.say("hello")

    failed = await talk.say("forget me and fail")
    kept = await store.record(key)
    await talk.say("forget me")
    gone = await store.record(key)

    assert failed.texts == [BOT_ERROR_TEXT]
    assert kept is not None
    assert kept["visits"] == 1
    assert gone is None
