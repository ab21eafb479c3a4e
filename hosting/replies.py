"""Delivering a turn's replies to the channel (the activity's ``serviceUrl``), after the turn's state is saved.

The SDK sends each reply through an msrest ``ConnectorClient`` built for every turn, on ``requests`` in the
default thread pool, retrying an unreachable channel for ~10 s and holding a thread for as long as a channel
that never answers keeps the connection open. Here replies go out on one shared aiohttp session: bounded
timeouts, no threads, and one warning line when a channel cannot be reached.

Updates and deletions of activities (``PUT`` / ``DELETE`` ``/v3/conversations/{id}/activities/{activityId}``)
travel the same way, in the order the turn made them, and so does ``POST /v3/conversations`` (a new
conversation). The ids the bot was given for its replies during the turn are provisional (the channel gives the
real ones when the replies arrive, after the turn): an update or deletion of a reply of the same turn is sent
with the channel's id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from botbuilder.schema import Activity, ConversationParameters, ConversationResourceResponse, ResourceResponse

from .auth import OutgoingTokenError
from .outgoing import Method, Outgoing
from .wire import to_json

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3.0
TOTAL_TIMEOUT_SECONDS = 10.0

#: The channel answers with at most this much (a ResourceResponse is a few dozen bytes).
MAX_ANSWER_BYTES = 64 * 1024


class TokenSource(Protocol):
    """Where the bearer token for the channel comes from (``BotAuthentication.outgoing_token``)."""

    def __call__(self, audience: str | None = None) -> Awaitable[str | None]: ...


async def no_token(audience: str | None = None) -> None:
    """Replies without an Authorization header: the Emulator on this machine, no app id configured."""
    return None


class ReplyError(Exception):
    """A reply could not be delivered to the channel. ``delivered``: how many of the requests before it got
    through (``ReplySender.deliver`` stops at the first failure)."""

    delivered: int = 0


class ReplySender:
    """POSTs activities to ``{serviceUrl}/v3/conversations/{id}/activities[/{replyToId}]``, in order."""

    def __init__(self, session: aiohttp.ClientSession, token: TokenSource = no_token) -> None:
        self._session = session
        self._token = token

    @staticmethod
    def new_session() -> aiohttp.ClientSession:
        """The session replies travel on: bounded timeouts, no proxy or .netrc lookups, no cookies."""
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TOTAL_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
            connector=aiohttp.TCPConnector(limit=100, limit_per_host=20),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    async def send(self, activities: Sequence[Activity]) -> None:
        """Deliver every activity, or raise ``ReplyError`` at the first that fails (the rest are not tried)."""
        await self.deliver([Outgoing(Method.POST, activity) for activity in activities])

    async def deliver(self, outgoing: Sequence[Outgoing], audience: str | None = None) -> list[ResourceResponse]:
        """Make every request in order, or raise ``ReplyError`` at the first that fails (the rest are not tried).
        The channel's answers to the ``POST`` requests (the ids it gave the new activities), in order."""
        if not outgoing:
            return []
        headers = await self._headers(audience)
        channel_ids: dict[str, str] = {}  # provisional id -> the channel's id, for this turn's own replies
        responses: list[ResourceResponse] = []
        for delivered, item in enumerate(outgoing):
            try:
                await self._deliver_one(item, headers, channel_ids, responses)
            except ReplyError as err:
                err.delivered = delivered
                raise
        return responses

    async def _deliver_one(
        self, item: Outgoing, headers: dict[str, str], channel_ids: dict[str, str], responses: list[ResourceResponse]
    ) -> None:
        activity = item.activity
        if item.method == Method.POST:
            answer = await self._request("POST", reply_url(activity), headers, to_json(activity))
            response = ResourceResponse(id=_text(answer, "id"))
            if item.provisional_id and response.id:
                channel_ids[item.provisional_id] = response.id
            responses.append(response)
            return
        if not activity.id:
            raise ReplyError(f"an activity to {item.method.lower()} has no id")
        activity_id = channel_ids.get(activity.id, activity.id)
        url = activity_url(activity.service_url, activity.conversation.id, activity_id)
        body = None
        if item.method == Method.PUT:
            body = to_json(activity)
            body["id"] = activity_id
        await self._request(item.method, url, headers, body)

    async def create_conversation(
        self, service_url: str, parameters: ConversationParameters, audience: str | None = None
    ) -> ConversationResourceResponse:
        """``POST {serviceUrl}/v3/conversations``: the new conversation's id (and the id of its first activity,
        when ``parameters`` had one); ``ReplyError`` when the channel refuses or cannot be reached."""
        headers = await self._headers(audience)
        answer = await self._request(
            "POST", f"{service_url.rstrip('/')}/v3/conversations", headers, to_json(parameters)
        )
        conversation_id = _text(answer, "id")
        if conversation_id is None:
            raise ReplyError("the channel answered without the new conversation's id")
        return ConversationResourceResponse(
            id=conversation_id, activity_id=_text(answer, "activityId"), service_url=_text(answer, "serviceUrl")
        )

    async def _headers(self, audience: str | None) -> dict[str, str]:
        try:
            token = await self._token(audience)
        except OutgoingTokenError as err:
            raise ReplyError(f"no token to send replies with: {err}") from err
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _request(self, method: str, url: str, headers: dict[str, str], body: dict[str, Any] | None) -> Any:
        """The channel's answer, decoded (None when it is not JSON); ``ReplyError`` for a failure."""
        try:
            async with self._session.request(method, url, json=body, headers=headers) as response:
                if response.status >= 400:
                    raise ReplyError(f"the channel answered {method} with {response.status}")
                raw = bytearray()
                async for chunk in response.content.iter_chunked(MAX_ANSWER_BYTES):
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        return None  # not an answer we read; what was asked was done
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ReplyError(f"{type(err).__name__}: {err}") from err
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None


def _text(answer: Any, name: str) -> str | None:
    """A non-empty string field of the channel's JSON answer, or None."""
    value = answer.get(name) if isinstance(answer, dict) else None
    return value if isinstance(value, str) and value else None


def reply_url(activity: Activity) -> str:
    base = activity.service_url.rstrip("/")
    conversation = quote(activity.conversation.id, safe="")
    if activity.reply_to_id:
        return f"{base}/v3/conversations/{conversation}/activities/{quote(activity.reply_to_id, safe='')}"
    return f"{base}/v3/conversations/{conversation}/activities"


def activity_url(service_url: str, conversation_id: str, activity_id: str) -> str:
    """``{serviceUrl}/v3/conversations/{conversationId}/activities/{activityId}``: one activity, to update or delete."""
    return (
        f"{service_url.rstrip('/')}/v3/conversations/{quote(conversation_id, safe='')}"
        f"/activities/{quote(activity_id, safe='')}"
    )
