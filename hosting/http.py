"""The HTTP side of ``POST /api/messages``: reading and checking the request, and every error answer.

Nothing here knows about turns or state. ``read_activity`` turns a request into an ``Activity`` or raises
``RequestError``; ``error_response`` is the one shape every error leaves in: ``{"error": {"code", "message"}}``.

The checks are strict because the endpoint is public: every field of the activity schema is type-checked as it
arrives (``"type": 5`` is refused, not turned into ``"5"``), nesting, id lengths and list sizes are bounded, ids
must be printable, and ``serviceUrl`` (where the replies go) must be a place replies may go. Each refusal is a
4xx that names the field.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import botbuilder.schema as schema
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from botbuilder.schema import Activity
from msrest.exceptions import DeserializationError
from yarl import URL

from .wire import from_json

if TYPE_CHECKING:
    from .settings import HostSettings

MAX_DEPTH = 32
MAX_ID_LENGTH = 256
MAX_CHANNEL_ID_LENGTH = 64
MAX_SERVICE_URL_LENGTH = 2048
#: serviceUrls whose judgement a RequestPolicy keeps (a channel uses a few; an attacker cycling URLs only misses).
MAX_JUDGED_URLS = 256
MAX_MEMBERS = 50
MAX_ATTACHMENTS = 10
MAX_ENTITIES = 32

# Where an id sits in the activity, and how long it may be.
ID_FIELDS = (
    ("id", MAX_ID_LENGTH),
    ("channelId", MAX_CHANNEL_ID_LENGTH),
    ("replyToId", MAX_ID_LENGTH),
    ("conversation.id", MAX_ID_LENGTH),
    ("from.id", MAX_ID_LENGTH),
    ("recipient.id", MAX_ID_LENGTH),
)
LIST_LIMITS = {
    "membersAdded": MAX_MEMBERS,
    "membersRemoved": MAX_MEMBERS,
    "attachments": MAX_ATTACHMENTS,
    "entities": MAX_ENTITIES,
}

# Where the bot reads text, to name the field that holds a lone surrogate.
TEXT_FIELDS = (*(name for name, _ in ID_FIELDS), "text", "from.name", "recipient.name", "conversation.name", "locale")

# Never a reply target, with or without credentials: link-local (where cloud metadata services live) and the
# metadata addresses that are not link-local.
FORBIDDEN_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32", "0.0.0.0/8", "::/128")
)
FORBIDDEN_HOSTS = frozenset(("metadata", "metadata.google.internal", "metadata.azure.internal"))
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_UNPRINTABLE_ID = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


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


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """What a request may be: body size and time, and where its replies may go.

    ``credentials``: the bot has an app id, so replies carry a token and may go to the channel's public
    serviceUrl. Without one only loopback serviceUrls (the Emulator on this machine) are accepted.
    """

    max_body_bytes: int = 1024 * 1024
    body_timeout_seconds: float = 15.0
    credentials: bool = False
    #: ``ALLOWED_TENANTS``: the tenants whose activities are served (lower-case); empty: any.
    allowed_tenants: frozenset[str] = frozenset()
    #: ``service_url_problem``'s answers for the serviceUrls seen lately: a channel uses a handful, and judging one
    #: costs more than the rest of the request's checks together.
    _judged: dict[str, str | None] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def service_url_problem(self, url: str) -> str | None:
        """``service_url_problem(url)`` under this policy, remembered for the last ``MAX_JUDGED_URLS`` URLs."""
        if url in self._judged:
            return self._judged[url]
        if len(self._judged) >= MAX_JUDGED_URLS:
            self._judged.clear()
        problem = self._judged[url] = service_url_problem(url, credentials=self.credentials)
        return problem

    @classmethod
    def from_settings(cls, settings: HostSettings) -> RequestPolicy:
        return cls(
            max_body_bytes=settings.max_body_bytes,
            body_timeout_seconds=settings.request_timeout_seconds,
            credentials=settings.auth_enabled,
            allowed_tenants=settings.allowed_tenants,
        )


async def read_activity(request: web.Request, policy: RequestPolicy) -> Activity:
    """The request's activity, checked; or ``RequestError`` naming what is wrong."""
    return parse_activity(await read_json(request, policy), policy)


async def read_json(request: web.Request, policy: RequestPolicy) -> Any:
    """The body as JSON, read within the policy's size and time; ``RequestError`` (400/408/413/415) otherwise."""
    if request.content_type != "application/json":
        raise RequestError(415, "unsupported_media_type", "send the activity as Content-Type: application/json")
    too_large = RequestError(413, "too_large", f"the request body is larger than {policy.max_body_bytes} bytes")
    if request.content_length is not None and request.content_length > policy.max_body_bytes:
        raise too_large
    try:
        async with asyncio.timeout(policy.body_timeout_seconds):
            raw = await request.read()
    except TimeoutError as err:
        raise RequestError(
            408, "request_timeout", f"the request body did not arrive within {policy.body_timeout_seconds:g} s"
        ) from err
    except web.HTTPRequestEntityTooLarge as err:
        raise too_large from err
    except (RequestPayloadError, ConnectionError) as err:
        raise RequestError(400, "invalid_body", "the request body could not be read") from err
    if len(raw) > policy.max_body_bytes:
        raise too_large
    try:
        # UTF-8 only (RFC 8259): json.loads would also guess UTF-16/32, which check_structure's byte scan
        # does not read.
        body = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as err:
        # Nested deeper than the interpreter's recursion limit (about 1000 levels).
        raise RequestError(400, "too_deep", f"the JSON is nested deeper than {MAX_DEPTH} levels") from err
    except (UnicodeDecodeError, ValueError) as err:
        # JSONDecodeError's message gives a position, never the input.
        reason = err.msg if isinstance(err, json.JSONDecodeError) else "it is not UTF-8 or holds an invalid value"
        raise RequestError(400, "invalid_json", f"the request body is not valid JSON: {reason}") from err
    check_structure(raw, body)
    return body


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RequestError(400, "invalid_json", "a number in the body is too large for JSON")
    return value


def check_structure(raw: bytes, body: object) -> None:
    """Refuse JSON nested deeper than ``MAX_DEPTH`` and strings holding lone surrogates (not Unicode text).
    ``raw`` is the valid JSON that ``body`` was decoded from (infinite numbers were refused while decoding).

    Done at C speed on the raw bytes (and a re-encoding only when the bytes hold a surrogate escape), never by
    visiting every value in Python: a 1 MB body of small values would cost half a second of event loop.
    """
    skeleton = _without_strings(raw)
    if _nested_deeper_than(skeleton, MAX_DEPTH):
        raise RequestError(400, "too_deep", f"the JSON is nested deeper than {MAX_DEPTH} levels")
    if not _SURROGATE_ESCAPE.search(raw):
        return
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        where = next((name for name in TEXT_FIELDS if _has_surrogate(_at(body, name))), "a string in the body")
        raise RequestError(400, "invalid_text", f"{where} contains a lone surrogate (not valid text)") from err


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"[{]}", b"(())")  # in valid JSON brackets match, so their kind does not matter


def _without_strings(raw: bytes) -> bytes:
    """Valid JSON with every string removed: escaped backslashes, then escaped quotes, then what is between
    the remaining quotes."""
    return b"".join(raw.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])


def _nested_deeper_than(skeleton: bytes, limit: int) -> bool:
    """Whether string-free JSON nests containers deeper than ``limit``: innermost pairs peeled a level a pass."""
    brackets = skeleton.translate(_ONE_KIND, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        # replace() does not rescan what it produced, so each pass removes exactly one level.
        brackets = brackets.replace(b"()", b"")
    return bool(brackets)


def _has_surrogate(value: object) -> bool:
    return isinstance(value, str) and _LONE_SURROGATE.search(value) is not None


def _label(key: str) -> str:
    """A field name as it may appear in an error message."""
    return key if len(key) <= 40 and key.isprintable() and not _LONE_SURROGATE.search(key) else "<field>"


def parse_activity(body: object, policy: RequestPolicy | None = None) -> Activity:
    """Turn a decoded JSON body into an Activity, or raise ``RequestError`` naming what is wrong."""
    policy = policy or RequestPolicy()
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_activity", "the request body must be a JSON object (an Activity)")
    check_types(body, Activity, "")
    for field, limit in LIST_LIMITS.items():
        items = body.get(field)
        if items is not None and len(items) > limit:
            raise RequestError(400, "too_many", f"{field} lists {len(items)} entries; at most {limit} are accepted")
    missing = [
        name
        for name in ("type", "channelId", "serviceUrl", "conversation.id", "from.id", "recipient.id")
        if not _at(body, name)
    ]
    if missing:
        raise RequestError(400, "invalid_activity", f"the activity is missing {', '.join(missing)}")
    ids = [(name, _at(body, name), limit) for name, limit in ID_FIELDS]
    for list_name in ("membersAdded", "membersRemoved"):
        ids.extend(
            (f"{list_name}[{i}].id", m.get("id"), MAX_ID_LENGTH) for i, m in enumerate(body.get(list_name) or [])
        )
    for name, value, limit in ids:
        _check_id(name, value, limit)
    problem = policy.service_url_problem(body["serviceUrl"])
    if problem:
        raise RequestError(400, "invalid_service_url", f"serviceUrl {problem}")
    try:
        return from_json(Activity, body)
    except (DeserializationError, TypeError, ValueError, AttributeError, OverflowError) as err:
        raise RequestError(400, "invalid_activity", "the activity could not be read") from err


def _at(body: dict[str, Any], dotted: str) -> Any:
    value: Any = body
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _check_id(name: str, value: object, limit: int) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise RequestError(400, "invalid_id", f"{name} must be a non-empty string")
    if len(value) > limit:
        raise RequestError(400, "id_too_long", f"{name} is longer than {limit} characters")
    if _UNPRINTABLE_ID.search(value):
        raise RequestError(400, "invalid_id", f"{name} contains a control character or a lone surrogate")


def check_types(value: dict[str, Any], model: type, path: str) -> None:
    """Check every known field of ``value`` against the msrest schema of ``model``, without coercion.

    Unknown fields are left alone (channels add their own); ``null`` means absent. ``object`` fields
    (``channelData``, ``value``, attachment ``content``) may hold any JSON.
    """
    for spec in model._attribute_map.values():  # the schema msrest itself reads the activity with
        key = spec["key"]
        if key not in value or value[key] is None:
            continue
        _check_value(value[key], spec["type"], f"{path}.{key}" if path else key)


def _check_value(item: object, kind: str, path: str) -> None:
    if kind == "object":
        return
    if kind.startswith("[") and kind.endswith("]"):
        if not isinstance(item, list):
            raise RequestError(400, "invalid_type", f"{path} must be a list")
        for index, element in enumerate(item):
            if element is None:
                raise RequestError(400, "invalid_type", f"{path}[{index}] must not be null")
            _check_value(element, kind[1:-1], f"{path}[{index}]")
        return
    if kind.startswith("{") and kind.endswith("}"):
        if not isinstance(item, dict):
            raise RequestError(400, "invalid_type", f"{path} must be an object")
        for key, element in item.items():
            if element is not None:
                _check_value(element, kind[1:-1], f"{path}.{_label(key)}")
        return
    if kind == "str":
        if not isinstance(item, str):
            raise RequestError(400, "invalid_type", f"{path} must be a string")
    elif kind == "bool":
        if not isinstance(item, bool):
            raise RequestError(400, "invalid_type", f"{path} must be true or false")
    elif kind in ("int", "long"):
        if not isinstance(item, int) or isinstance(item, bool):
            raise RequestError(400, "invalid_type", f"{path} must be a whole number")
    elif kind == "float":
        if not isinstance(item, int | float) or isinstance(item, bool):
            raise RequestError(400, "invalid_type", f"{path} must be a number")
    elif kind == "iso-8601":
        if not isinstance(item, str) or len(item) > 64 or not _is_timestamp(item):
            raise RequestError(400, "invalid_type", f"{path} must be an ISO 8601 timestamp")
    else:
        nested = getattr(schema, kind, None)
        if nested is None:
            return
        if not isinstance(item, dict):
            raise RequestError(400, "invalid_type", f"{path} must be an object")
        check_types(item, nested, path)


def _is_timestamp(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def service_url_problem(url: str, *, credentials: bool) -> str | None:
    """Why replies must not be sent to ``url``, or None. Judges the literal URL; never resolves a name.

    Without credentials only loopback (the Emulator on this machine: ``localhost``, 127.0.0.0/8, ``::1``).
    With them, any public https host or a loopback http one; never link-local or cloud-metadata addresses, and
    never a host that is a number in disguise (``127.1``, ``0x7f.1``, ``2130706433``), which resolvers accept.
    """
    if len(url) > MAX_SERVICE_URL_LENGTH:
        return f"is longer than {MAX_SERVICE_URL_LENGTH} characters"
    if not url.isascii() or any(char.isspace() or char == "\\" or not char.isprintable() for char in url):
        return "must be a plain http(s) URL (no spaces, backslashes or non-ASCII characters)"
    try:
        parsed = URL(url)
        host = parsed.raw_host
        _ = parsed.port
    except (ValueError, TypeError):
        return "is not a valid URL"
    if parsed.scheme not in ("http", "https") or not host:
        return "must be an http(s) URL"
    if parsed.raw_user is not None or parsed.raw_password is not None:
        return "must not carry a user name or password"
    host = host.lower().rstrip(".")
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        if not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit() or host.startswith("0x"):
            return "has a host name that is not a plain DNS name or IP address"
    if address is not None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in FORBIDDEN_NETWORKS) or address.is_multicast:
            return "points at a link-local, metadata or unroutable address"
        loopback = address.is_loopback
    else:
        if host in FORBIDDEN_HOSTS:
            return "points at a cloud metadata service"
        loopback = host == "localhost"
    if not credentials:
        if not loopback:
            return (
                "must be on this machine (localhost, 127.0.0.1 or ::1) while MicrosoftAppId is empty: "
                "without credentials the bot replies only to a local Emulator"
            )
        return None
    if parsed.scheme != "https" and not loopback:
        return "must be https (replies carry the bot's token)"
    return None
