"""Delivering a turn's replies to the channel (the activity's ``serviceUrl``), after the turn's state is saved.

The SDK sends each reply through an msrest ``ConnectorClient`` built for every turn, on ``requests`` in the
default thread pool, retrying an unreachable channel for ~10 s and holding a thread for as long as a channel
that never answers keeps the connection open. Here replies go out on one shared aiohttp session: bounded
timeouts, no threads, and one warning line when a channel cannot be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import quote

import aiohttp
from botbuilder.schema import Activity

from .auth import OutgoingTokenError
from .wire import to_json

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3.0
TOTAL_TIMEOUT_SECONDS = 10.0

TokenSource = Callable[[], Awaitable[str | None]]


async def no_token() -> None:
    """Replies without an Authorization header: the Emulator on this machine, no app id configured."""
    return None


class ReplyError(Exception):
    """A reply could not be delivered to the channel."""


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
        if not activities:
            return
        try:
            token = await self._token()
        except OutgoingTokenError as err:
            raise ReplyError(f"no token to send replies with: {err}") from err
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for activity in activities:
            url = reply_url(activity)
            try:
                async with self._session.post(url, json=to_json(activity), headers=headers) as response:
                    if response.status >= 400:
                        raise ReplyError(f"the channel answered {response.status}")
                    await response.read()
            except (aiohttp.ClientError, TimeoutError) as err:
                raise ReplyError(f"{type(err).__name__}: {err}") from err


def reply_url(activity: Activity) -> str:
    base = activity.service_url.rstrip("/")
    conversation = quote(activity.conversation.id, safe="")
    if activity.reply_to_id:
        return f"{base}/v3/conversations/{conversation}/activities/{quote(activity.reply_to_id, safe='')}"
    return f"{base}/v3/conversations/{conversation}/activities"
