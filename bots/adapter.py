"""The HTTP side of a turn: request checks, authentication, one turn per conversation at a time, errors.

``StateBotAdapter`` is botbuilder's ``CloudAdapter`` with the parts that go wrong in 4.17.1 done here instead:

* malformed requests get a 4xx with a JSON body (the SDK answers 500 with a traceback, or 404);
* ``deliveryMode: expectReplies`` returns 200 ``{"activities": [...]}`` (the SDK serializes the body twice and
  answers 500);
* a bad bearer token is a 401, not a 500;
* turns of one conversation run one at a time in this process, so two quick messages do not race on state;
* the turn error handler tells the user and logs, and never deletes stored state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from botbuilder.core import Bot, TurnContext
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity, ActivityTypes
from botframework.connector.auth import BotFrameworkAuthentication
from msrest.serialization import Model
from msrest.universal_http.requests import ClientRetryPolicy

from storage import StorageError

from .http import RequestError, RequestPolicy, error_response, read_activity
from .logs import short_id

logger = logging.getLogger(__name__)

APOLOGY = "Sorry, something went wrong on my side. What you had stored with me is safe; please try again."


class ConversationLocks:
    """One ``asyncio.Lock`` per conversation, dropped again when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


def speed_up_connector_clients() -> None:
    """Make building a ConnectorClient cheap; the retry codes it gets are exactly the same.

    The SDK builds two msrest clients for every turn, and msrest 0.7.1 computes each one's retry codes by
    looking up 999 numbers in a 500-element *list* (``ClientRetryPolicy.safe_codes``): about 7 ms of CPU per
    client, most of a turn's cost. As a frozenset the same lookups are instant. Idempotent.
    """
    if not isinstance(ClientRetryPolicy.safe_codes, frozenset):
        ClientRetryPolicy.safe_codes = frozenset(ClientRetryPolicy.safe_codes)


class StateBotAdapter(CloudAdapter):
    def __init__(self, authentication: BotFrameworkAuthentication, policy: RequestPolicy | None = None) -> None:
        super().__init__(authentication)
        self._policy = policy or RequestPolicy()
        speed_up_connector_clients()
        self._locks = ConversationLocks()
        self.on_turn_error = self._on_turn_error

    async def handle(self, request: web.Request, bot: Bot) -> web.Response:
        """Serve one ``POST /api/messages``."""
        try:
            activity = await read_activity(request, self._policy)
        except RequestError as err:
            logger.info("refused a request: %s %s", err.status, err.code)
            return err.response()

        conversation_key = f"{activity.channel_id}/{activity.conversation.id}"
        auth_header = request.headers.get("Authorization", "")
        try:
            # Before the conversation lock, so that forged requests never queue in front of a real user's turn.
            authenticated = await self.bot_framework_authentication.authenticate_request(activity, auth_header)
        except RequestError as err:
            # Refused (401, or 503 without signing keys); our BotAuthentication logged the one line about it.
            return err.response()
        try:
            async with self._locks.hold(conversation_key):
                invoke_response = await self.process_activity(authenticated, activity, bot.on_turn)
        except StorageError as err:
            logger.warning(
                "turn of %s/%s failed: state storage is unavailable: %s",
                activity.channel_id,
                short_id(activity.conversation.id),
                err,
            )
            return error_response(503, "storage_unavailable", "the bot's state storage is unavailable; retry later")

        if invoke_response is None:
            return web.Response(status=201)
        return web.json_response(_plain(invoke_response.body), status=int(invoke_response.status))

    async def _on_turn_error(self, turn_context: TurnContext, error: Exception) -> None:
        """Log, tell the user and the Emulator, keep every stored byte. Storage failures become a 503."""
        activity = turn_context.activity
        logger.error(
            "turn failed (channel=%s conversation=%s activity=%s)",
            activity.channel_id,
            short_id(activity.conversation.id) if activity.conversation else None,
            short_id(activity.id),
            exc_info=error,
        )
        try:
            await turn_context.send_activity(APOLOGY)
            await turn_context.send_activity(
                Activity(
                    type=ActivityTypes.trace,
                    name="on_turn_error",
                    label="TurnError",
                    value=f"{type(error).__name__}: {error}",
                    value_type="https://www.botframework.com/schemas/error",
                )
            )
        except Exception:
            logger.exception("could not tell the user about the failed turn")
        if isinstance(error, StorageError):
            raise error


def _plain(body: object) -> object:
    """An invoke body as JSON-ready data (the SDK sometimes hands back models, sometimes dicts)."""
    if isinstance(body, Model):
        return body.serialize()
    if isinstance(body, list):
        return [_plain(item) for item in body]
    return body
