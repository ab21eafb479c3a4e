"""A local Direct Line 3.0 endpoint (polling only) for development: Web Chat talks to it, it talks to the bot.

Client side (what DirectLineJS calls, under ``/v3/directline``):

* ``POST /tokens/generate``: a token for a new conversation (locally nobody needs a secret for it);
* ``POST /tokens/refresh``: a fresh token for the same conversation;
* ``POST /conversations``: starts the token's conversation with the user id given in the body, and sends the
  bot one ``conversationUpdate`` with the bot and the user in ``membersAdded``, as Azure does;
* ``GET /conversations/{id}``: the conversation again (DirectLineJS reconnecting);
* ``POST /conversations/{id}/activities``: an activity from the user, forwarded to the bot's ``/api/messages``
  over HTTP; answered once the bot has answered, ``502`` if the bot failed;
* ``GET /conversations/{id}/activities?watermark=N``: what was said after ``N``, a page at a time;
* ``POST /conversations/{id}/upload``: a message with files (multipart: an ``activity`` part, then
  ``file`` parts), the files kept in memory and served back at ``/v3/attachments/{id}/views/original``.

Channel side (what the bot calls at the ``serviceUrl`` this endpoint gives it):

* ``POST /v3/conversations/{id}/activities`` and ``POST /v3/conversations/{id}/activities/{replyToId}``.

Every activity gets a server timestamp, channel id ``directline`` and an id ``<conversation>|0000001``. The
``serviceUrl`` is this server's own loopback origin, so replies travel the same path as in Azure. Everything
lives in memory and is lost when the process stops (the bot's state is in its own storage).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from hosting.http import RequestError, error_response

logger = logging.getLogger(__name__)

CHANNEL_ID = "directline"
CLIENT_PREFIX = "/v3/directline"
TOKEN_SECONDS = 1800
PAGE_SIZE = 100
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
MAX_ACTIVITY_PART_BYTES = 256 * 1024
MAX_STORED_UPLOAD_BYTES = 64 * 1024 * 1024
FORWARD_TIMEOUT_SECONDS = 60.0
MAX_USER_ID_LENGTH = 256
BOT_ACCOUNT = {"id": "state-bot", "name": "State bot", "role": "bot"}
# Served back with their own type; anything else is a download, so an uploaded page or SVG cannot run scripts
# in this origin.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "text/plain"})


def now_iso() -> str:
    """A server timestamp in the form Direct Line uses (UTC, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class DirectLineConversation:
    """One conversation: who the user is and every activity in it, in order (the index is the watermark)."""

    id: str
    user_id: str | None = None
    activities: list[dict[str, Any]] = field(default_factory=list)

    @property
    def started(self) -> bool:
        return self.user_id is not None

    def next_id(self) -> str:
        return f"{self.id}|{len(self.activities) + 1:07d}"

    def append(self, activity: dict[str, Any]) -> dict[str, Any]:
        """Store ``activity`` with its id and server timestamp; return the stored copy."""
        stored = {**activity, "id": self.next_id(), "timestamp": now_iso(), "channelId": CHANNEL_ID}
        stored["conversation"] = {**(activity.get("conversation") or {}), "id": self.id}
        self.activities.append(stored)
        return stored


@dataclass(frozen=True, slots=True)
class Upload:
    content_type: str
    name: str
    data: bytes


class DirectLine:
    """The in-memory Direct Line service. ``origin`` is the loopback origin the server is reachable at."""

    def __init__(
        self,
        origin: str,
        *,
        page_size: int = PAGE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.origin = origin.rstrip("/")
        self.page_size = page_size
        self._clock = clock
        self._conversations: dict[str, DirectLineConversation] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._uploads: dict[str, Upload] = {}
        self._upload_bytes = 0
        self._session: aiohttp.ClientSession | None = None

    @property
    def service_url(self) -> str:
        return self.origin + "/"

    @property
    def messages_url(self) -> str:
        return self.origin + "/api/messages"

    def add_routes(self, app: web.Application) -> None:
        """Mount the client and channel routes on ``app`` and open/close the HTTP client with it."""
        app.cleanup_ctx.append(self._client_context)
        app.router.add_post(f"{CLIENT_PREFIX}/tokens/generate", self.generate_token)
        app.router.add_post(f"{CLIENT_PREFIX}/tokens/refresh", self.refresh_token)
        app.router.add_post(f"{CLIENT_PREFIX}/conversations", self.start_conversation)
        app.router.add_get(f"{CLIENT_PREFIX}/conversations/{{conversation}}", self.get_conversation)
        app.router.add_post(f"{CLIENT_PREFIX}/conversations/{{conversation}}/activities", self.post_activity)
        app.router.add_get(f"{CLIENT_PREFIX}/conversations/{{conversation}}/activities", self.get_activities)
        app.router.add_post(f"{CLIENT_PREFIX}/conversations/{{conversation}}/upload", self.upload)
        app.router.add_post("/v3/conversations/{conversation}/activities", self.receive_from_bot)
        app.router.add_post("/v3/conversations/{conversation}/activities/{reply_to}", self.receive_from_bot)
        app.router.add_get("/v3/attachments/{attachment}/views/original", self.attachment)

    async def _client_context(self, app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            yield
            self._session = None

    # Tokens and conversations ------------------------------------------------------------------------------

    def _issue_token(self, conversation_id: str) -> dict[str, Any]:
        now = self._clock()
        for expired in [token for token, (_, expires_at) in self._tokens.items() if expires_at <= now]:
            del self._tokens[expired]
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (conversation_id, now + TOKEN_SECONDS)
        return {"conversationId": conversation_id, "token": token, "expires_in": TOKEN_SECONDS}

    def _authorized(self, request: web.Request, conversation_id: str | None = None) -> DirectLineConversation:
        """The conversation the request's bearer token is for; 401/403/404 otherwise."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RequestError(401, "unauthorized", "send the Direct Line token as 'Authorization: Bearer <token>'")
        entry = self._tokens.get(token.strip())
        if entry is None:
            raise RequestError(403, "invalid_token", "the token is not valid here")
        token_conversation, expires_at = entry
        if self._clock() >= expires_at:
            raise RequestError(403, "token_expired", "the token has expired; refresh it before it does")
        if conversation_id is not None and conversation_id != token_conversation:
            raise RequestError(403, "wrong_conversation", "the token is for another conversation")
        conversation = self._conversations.get(token_conversation)
        if conversation is None:
            raise RequestError(404, "conversation_not_found", "the conversation does not exist")
        return conversation

    def _started(self, request: web.Request) -> DirectLineConversation:
        conversation = self._authorized(request, request.match_info["conversation"])
        if not conversation.started:
            raise RequestError(404, "conversation_not_started", "start the conversation first")
        return conversation

    async def generate_token(self, request: web.Request) -> web.Response:
        conversation_id = f"local-{uuid.uuid4().hex[:20]}"
        self._conversations[conversation_id] = DirectLineConversation(conversation_id)
        return web.json_response(self._issue_token(conversation_id))

    async def refresh_token(self, request: web.Request) -> web.Response:
        try:
            conversation = self._authorized(request)
        except RequestError as err:
            return err.response()
        return web.json_response(self._issue_token(conversation.id))

    async def start_conversation(self, request: web.Request) -> web.Response:
        """Start the token's conversation as the user named in the body; the bot gets a conversationUpdate."""
        try:
            conversation = self._authorized(request)
            body = await _json_object(request, allow_empty=True)
        except RequestError as err:
            return err.response()
        token = request.headers["Authorization"].partition(" ")[2].strip()
        answer = {"conversationId": conversation.id, "token": token, "expires_in": TOKEN_SECONDS}
        if conversation.started:
            return web.json_response(answer, status=200)
        user = body.get("user") if isinstance(body.get("user"), dict) else {}
        user_id = user.get("id") if isinstance(user.get("id"), str) and user.get("id").strip() else None
        if user_id and len(user_id) > MAX_USER_ID_LENGTH:
            return error_response(400, "invalid_user", f"the user id is longer than {MAX_USER_ID_LENGTH} characters")
        conversation.user_id = user_id.strip() if user_id else f"user-{uuid.uuid4().hex[:12]}"
        update = conversation.append(
            {
                "type": "conversationUpdate",
                "from": {"id": conversation.user_id, "role": "user"},
                "recipient": BOT_ACCOUNT,
                "membersAdded": [BOT_ACCOUNT, {"id": conversation.user_id, "role": "user"}],
            }
            | ({"locale": body["locale"]} if isinstance(body.get("locale"), str) else {})
        )
        logger.info("conversation %s started for user %s", conversation.id, conversation.user_id)
        try:
            await self._forward(update)
        except RequestError as err:
            # The conversation exists either way; the bot's own log says why it failed.
            logger.warning("the bot did not take the conversationUpdate of %s: %s", conversation.id, err.message)
        return web.json_response(answer, status=201)

    async def get_conversation(self, request: web.Request) -> web.Response:
        try:
            conversation = self._started(request)
        except RequestError as err:
            return err.response()
        token = request.headers["Authorization"].partition(" ")[2].strip()
        return web.json_response({"conversationId": conversation.id, "token": token, "expires_in": TOKEN_SECONDS})

    # Activities ------------------------------------------------------------------------------------------

    async def post_activity(self, request: web.Request) -> web.Response:
        """An activity from the user: stored, forwarded to the bot, answered with its id."""
        try:
            conversation = self._started(request)
            body = await _json_object(request)
            stored = self._store_from_user(conversation, body)
            await self._forward(stored)
        except RequestError as err:
            return err.response()
        return web.json_response({"id": stored["id"]})

    async def get_activities(self, request: web.Request) -> web.Response:
        """Activities after the watermark (at most ``page_size``) and the watermark to ask from next time."""
        try:
            conversation = self._started(request)
            start = _watermark(request.query.get("watermark"), len(conversation.activities))
        except RequestError as err:
            return err.response()
        page = conversation.activities[start : start + self.page_size]
        return web.json_response({"activities": page, "watermark": str(start + len(page))})

    async def upload(self, request: web.Request) -> web.Response:
        """A message with files: the ``activity`` part plus ``file`` parts, stored and forwarded to the bot."""
        try:
            conversation = self._started(request)
            activity, files = await self._read_upload(request)
            activity["type"] = "message"
            activity["attachments"] = [self._keep(upload) for upload in files]
            stored = self._store_from_user(conversation, activity)
            await self._forward(stored)
        except RequestError as err:
            return err.response()
        return web.json_response({"id": stored["id"]})

    async def receive_from_bot(self, request: web.Request) -> web.Response:
        """The bot sending a reply (or a proactive message) to the channel."""
        try:
            conversation = self._conversations.get(request.match_info["conversation"])
            if conversation is None or not conversation.started:
                raise RequestError(404, "conversation_not_found", "the conversation does not exist")
            body = await _json_object(request)
        except RequestError as err:
            return err.response()
        if body.get("type") == "trace":
            # Traces are for the Emulator; Azure's Direct Line does not show them to users either.
            return web.json_response({"id": f"trace-{uuid.uuid4().hex[:8]}"})
        sender = {**BOT_ACCOUNT, **(body["from"] if isinstance(body.get("from"), dict) else {}), "role": "bot"}
        activity = {key: value for key, value in body.items() if key != "serviceUrl"} | {"from": sender}
        if "reply_to" in request.match_info:
            activity["replyToId"] = request.match_info["reply_to"]
        stored = conversation.append(activity)
        return web.json_response({"id": stored["id"]})

    def _store_from_user(self, conversation: DirectLineConversation, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(body.get("type"), str) or not body["type"]:
            raise RequestError(400, "invalid_activity", "the activity needs a type")
        sender = body.get("from") if isinstance(body.get("from"), dict) else {}
        # The conversation belongs to the user who started it, as when Azure binds a token to a user id.
        sender = {**sender, "id": conversation.user_id, "role": "user"}
        return conversation.append({**body, "from": sender, "recipient": BOT_ACCOUNT})

    async def _forward(self, activity: dict[str, Any]) -> None:
        """POST ``activity`` to the bot's ``/api/messages``, as a channel does; ``RequestError`` (502) if refused."""
        if self._session is None:
            raise RequestError(503, "not_running", "the Direct Line endpoint is not running")
        try:
            async with self._session.post(
                self.messages_url, json={**activity, "serviceUrl": self.service_url}
            ) as response:
                if response.status < 300:
                    return
                detail = (await response.text())[:500]
        except (aiohttp.ClientError, TimeoutError) as err:
            raise RequestError(502, "bot_unreachable", f"the bot could not be reached: {err}") from err
        logger.warning("the bot answered %s to activity %s: %s", response.status, activity["id"], detail)
        raise RequestError(502, "bot_error", f"the bot answered HTTP {response.status}")

    # Uploads ---------------------------------------------------------------------------------------------

    async def _read_upload(self, request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
        if not request.content_type.startswith("multipart/"):
            raise RequestError(415, "unsupported_media_type", "send the files as multipart/form-data")
        activity: dict[str, Any] = {}
        files: list[Upload] = []
        file_bytes = 0
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, aiohttp.BodyPartReader):
                    raise RequestError(400, "invalid_upload", "nested multipart bodies are not supported")
                if part.headers.get(aiohttp.hdrs.CONTENT_ENCODING, "identity").lower() != "identity":
                    raise RequestError(400, "invalid_upload", "compressed parts are not supported")
                if part.name == "activity":
                    activity = _object_from(part.decode(await _read_part(part, MAX_ACTIVITY_PART_BYTES)))
                    continue
                raw = await _read_part(part, MAX_UPLOAD_BYTES - file_bytes)
                file_bytes += len(raw)
                content_type = part.headers.get(aiohttp.hdrs.CONTENT_TYPE, "application/octet-stream")
                files.append(Upload(content_type.split(";")[0].strip(), part.filename or "file", part.decode(raw)))
        except (ValueError, aiohttp.ClientPayloadError) as err:
            raise RequestError(400, "invalid_upload", f"the multipart body could not be read: {err}") from err
        if not files:
            raise RequestError(400, "invalid_upload", "the upload holds no file")
        return activity, files

    def _keep(self, upload: Upload) -> dict[str, Any]:
        """Store an uploaded file and describe it as an attachment that points back here."""
        if self._upload_bytes + len(upload.data) > MAX_STORED_UPLOAD_BYTES:
            raise RequestError(413, "too_large", "this development server keeps at most 64 MiB of uploads; restart it")
        attachment_id = uuid.uuid4().hex
        self._uploads[attachment_id] = upload
        self._upload_bytes += len(upload.data)
        url = f"{self.origin}/v3/attachments/{attachment_id}/views/original"
        attachment = {"contentType": upload.content_type, "contentUrl": url, "name": upload.name}
        if upload.content_type.startswith("image/"):
            # Web Chat shows a user's image only when the attachment has a thumbnail.
            attachment["thumbnailUrl"] = url
        return attachment

    async def attachment(self, request: web.Request) -> web.Response:
        upload = self._uploads.get(request.match_info["attachment"])
        if upload is None:
            return error_response(404, "attachment_not_found", "no such attachment (uploads are lost on restart)")
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
        content_type = upload.content_type
        if content_type not in INLINE_TYPES:
            content_type = "application/octet-stream"
            headers["Content-Disposition"] = "attachment"
        return web.Response(body=upload.data, content_type=content_type, headers=headers)


async def _read_part(part: aiohttp.BodyPartReader, limit: int) -> bytes:
    """The part's raw bytes, read in chunks against ``limit`` (``part.read()`` applies the app's 1 MiB limit)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "too_large", f"the files are larger than {MAX_UPLOAD_BYTES} bytes in all")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    raw = await request.read()
    if allow_empty and not raw.strip():
        return {}
    return _object_from(raw)


def _object_from(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, "invalid_json", f"the body is not valid JSON: {err}") from err
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_activity", "the body must be a JSON object")
    return body


def _watermark(text: str | None, length: int) -> int:
    if text is None or text == "":
        return 0
    try:
        value = int(text)
    except ValueError as err:
        raise RequestError(400, "invalid_watermark", "the watermark must be a whole number") from err
    if not 0 <= value <= length:
        raise RequestError(400, "invalid_watermark", f"the watermark must be between 0 and {length}")
    return value
