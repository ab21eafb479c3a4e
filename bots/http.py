"""The HTTP side of ``POST /api/messages``: reading and checking the request, and every error answer.

Nothing here knows about turns or state. ``read_activity`` turns a request into an ``Activity`` or raises
``RequestError``; ``error_response`` is the one shape every error leaves in: ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from botbuilder.schema import Activity
from msrest.exceptions import DeserializationError


class RequestError(Exception):
    """A request we refuse, with the HTTP status and a message safe to show the caller."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return RequestError(status, code, message, headers).response()


async def read_activity(request: web.Request) -> Activity:
    """The request's activity, checked; or ``RequestError`` naming what is wrong."""
    return parse_activity(await read_json(request))


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise RequestError(415, "unsupported_media_type", "send the activity as Content-Type: application/json")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as err:
        limit = request.client_max_size
        raise RequestError(413, "too_large", f"the request body is larger than {limit} bytes") from err
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, "invalid_json", f"the request body is not valid JSON: {err}") from err


def parse_activity(body: object) -> Activity:
    """Turn a decoded JSON body into an Activity, or raise ``RequestError`` naming what is wrong."""
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_activity", "the request body must be a JSON object (an Activity)")
    try:
        activity = Activity().deserialize(body)
    except (DeserializationError, TypeError, ValueError, AttributeError) as err:
        raise RequestError(400, "invalid_activity", f"the activity could not be read: {err}") from err
    missing = [
        name
        for name, value in (
            ("type", activity.type),
            ("channelId", activity.channel_id),
            ("serviceUrl", activity.service_url),
            ("conversation.id", activity.conversation and activity.conversation.id),
            ("from.id", activity.from_property and activity.from_property.id),
            ("recipient.id", activity.recipient and activity.recipient.id),
        )
        if not value or not isinstance(value, str)
    ]
    if missing:
        raise RequestError(400, "invalid_activity", f"the activity is missing {', '.join(missing)}")
    if not activity.service_url.startswith(("http://", "https://")):
        raise RequestError(400, "invalid_activity", "serviceUrl must be an http(s) URL")
    return activity
