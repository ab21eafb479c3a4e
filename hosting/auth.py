"""Who may talk to the bot, and the token the bot shows when it answers.

``BotAuthentication`` is our own ``BotFrameworkAuthentication``: it replaces the SDK's token validation because, as
measured with botframework-connector 4.17.1, the SDK fetches signing keys with a blocking ``requests.get`` on the
event loop, never remembers a failed fetch, and answers forged tokens with a 500. Here:

* keys come over aiohttp with bounded timeouts, are cached per OpenID metadata URL and refreshed in the background
  every 12 hours; a failed fetch is remembered with exponential backoff (2 s doubling to 300 s) while the keys we
  already have stay in use, and one fetch runs at a time, shared by every request waiting for it;
* an unknown ``kid`` re-fetches the keys only for a token that passes every check made without the signature, at
  most once per 30 s (``UNKNOWN_KEY_INTERVAL``) whatever the ``kid``, and at most once per 60 s for the same
  ``kid`` (``SAME_KID_INTERVAL``; up to 1024 such ``kid`` values remembered): each fetch brings the whole key
  document, so forged tokens with random ``kid`` values cannot keep out a newly published key for more than 60 s;
* a token is accepted only if RS256-signed by a published key endorsed for the activity's channel, issued by
  the expected issuer, for this bot's app id, within its lifetime (``CLOCK_SKEW`` of slack) and, for channel
  tokens, naming the activity's ``serviceUrl``. Emulator tokens (Microsoft Entra ID, ``appid``/``azp`` = our
  app id) are accepted as the SDK accepts them; SingleTenant and managed-identity bots also accept their own
  tenant's issuers;
* every refusal is ``AuthenticationError`` (a ``RequestError``: 401 with a short JSON error) and one log line;
  no keys at all because the key endpoint is down is ``KeysUnavailableError``: 503 with ``Retry-After``.

Without an app id every request is anonymous, as in the SDK. ``outgoing_token`` fetches (client credentials
over aiohttp, or a managed identity through azure-identity's async credential) and caches the bearer token
for replies.

``create_user_token_client`` is the SDK's own user token client (what ``OAuthPrompt`` signs users in with), on
the token service at ``OAuthUrl``, sending the same outgoing token over the same aiohttp session: the SDK's
would get its token through msal, blocking the event loop, and send on ``requests`` in a thread.
``OnDemandUserTokenClient`` is the one every turn is given: it builds that client when first used.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
import jwt
from azure.core.exceptions import AzureError
from botbuilder.integration.aiohttp import ConfigurationBotFrameworkAuthentication
from botbuilder.schema import Activity, TokenResponse
from botframework.connector.auth import (
    AuthenticateRequestResult,
    BotFrameworkAuthentication,
    ClaimsIdentity,
    ConnectorFactory,
    UserTokenClient,
)

# The SDK's only UserTokenClient; private by name, but what every BotFrameworkAuthentication of the SDK returns.
from botframework.connector.auth._user_token_client_impl import _UserTokenClientImpl
from botframework.connector.skills import BotFrameworkClient
from botframework.connector.token_api.models import SignInUrlResponse, TokenExchangeRequest, TokenStatus
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers
from msrest.exceptions import HttpOperationError
from msrest.pipeline import AsyncHTTPPolicy, AsyncPipeline, Request, Response
from msrest.pipeline.aiohttp import AioHTTPSender
from msrest.pipeline.universal import RawDeserializer
from msrest.universal_http import ClientRequest
from msrest.universal_http.aiohttp import AioHttpClientResponse
from msrest.universal_http.async_abc import AsyncHTTPSender
from yarl import URL

from .http import RequestError
from .logs import short_id
from .settings import PUBLIC_CLOUD, HostSettings, url_problem

logger = logging.getLogger(__name__)

FETCH_TIMEOUT = 5.0  # seconds for the metadata and key documents together
LOGIN_TIMEOUT = 10.0
MAX_DOCUMENT_BYTES = 512 * 1024
MAX_TOKEN_CHARS = 16 * 1024
CLOCK_SKEW = 300  # seconds; what the Bot Framework SDKs allow
KEY_REFRESH_INTERVAL = 12 * 3600.0
UNKNOWN_KEY_INTERVAL = 30.0  # seconds between fetches caused by unknown kids, whichever kids they are
SAME_KID_INTERVAL = 60.0  # seconds before the same unknown kid may cause another fetch
MAX_REMEMBERED_KIDS = 1024
MAX_KID_CHARS = 256  # longer kids never cause a fetch (Microsoft's are under 50 characters)
FIRST_BACKOFF = 2.0
MAX_BACKOFF = 300.0
REFRESH_CHECK_INTERVAL = 60.0
TOKEN_MARGIN = 300.0  # an outgoing token is replaced this long before it expires
MIN_RSA_BITS = 2048
PUBLIC_AZURE_CALLER = "urn:botframework:azure"

# Issuers of Emulator tokens: Microsoft's Bot Framework tenants (v1 and v2 token formats), as the SDK lists them.
EMULATOR_ISSUERS = frozenset(
    (
        "https://sts.windows.net/d6d49420-f39b-4df7-a1dc-d59a935871db/",
        "https://login.microsoftonline.com/d6d49420-f39b-4df7-a1dc-d59a935871db/v2.0",
        "https://sts.windows.net/f8cdef31-a31e-4b4a-93e4-5f571e91255a/",
        "https://login.microsoftonline.com/f8cdef31-a31e-4b4a-93e4-5f571e91255a/v2.0",
        "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
        "https://sts.windows.net/cab8a31a-1906-4287-a0d8-4eef66b95f6e/",
        "https://login.microsoftonline.us/cab8a31a-1906-4287-a0d8-4eef66b95f6e/v2.0",
        "https://login.microsoftonline.us/f8cdef31-a31e-4b4a-93e4-5f571e91255a/",
        "https://login.microsoftonline.us/f8cdef31-a31e-4b4a-93e4-5f571e91255a/v2.0",
    )
)


class AuthenticationError(RequestError):
    """A request whose credentials we refuse: 401. ``reason`` is ours (never echoes the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            401, "unauthorized", f"the request's bearer token was refused: {reason}", {"WWW-Authenticate": "Bearer"}
        )
        self.reason = reason


class KeysUnavailableError(AuthenticationError):
    """The signing keys could not be fetched and none are cached: 503, try again after ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("the signing keys are unavailable")
        self.status = 503
        self.code = "keys_unavailable"
        self.message = "the bot cannot check tokens right now (its signing keys are unavailable); retry later"
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}


class KeyFetchError(Exception):
    """A metadata or key document could not be fetched or read."""


class OutgoingTokenError(Exception):
    """No token for replies could be obtained. The message never contains a secret."""


class UserTokenError(Exception):
    """The user token service (``OAuthPrompt``'s sign-in) cannot be used; the message says what to configure."""


NO_APP_ID = (
    "OAuthPrompt and the user token service need the bot's own identity, and this bot has no MicrosoftAppId: set "
    "MicrosoftAppId and MicrosoftAppPassword (and MicrosoftAppType / MicrosoftAppTenantId unless MultiTenant) to "
    "the bot's Azure Bot registration, add an OAuth connection setting to that Azure Bot resource, and name it in "
    "OAuthPromptSettings(connection_name=...)"
)
NO_CONNECTION = (
    "OAuthPromptSettings.connection_name is empty: set it to the name of an OAuth connection setting of the bot's "
    "Azure Bot resource (Configuration > OAuth Connection Settings)"
)


@dataclass(frozen=True, slots=True)
class SigningKey:
    key: RSAPublicKey
    endorsements: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_at: float  # monotonic


def parse_jwks(document: object) -> dict[str, SigningKey]:
    """The usable RSA signing keys of a JWKS document by ``kid``; anything else in it is skipped."""
    keys: dict[str, SigningKey] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeyFetchError("the key document has no 'keys' list")
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
            continue
        kid, n, e = entry.get("kid"), entry.get("n"), entry.get("e")
        if not (isinstance(kid, str) and kid and isinstance(n, str) and isinstance(e, str)):
            continue
        try:
            public = RSAPublicNumbers(_b64_int(e), _b64_int(n)).public_key()
        except ValueError:
            continue
        if public.key_size < MIN_RSA_BITS:
            continue
        endorsements = entry.get("endorsements") or []
        if not isinstance(endorsements, list):
            endorsements = []
        keys[kid] = SigningKey(public, frozenset(item for item in endorsements if isinstance(item, str)))
    return keys


def _b64_int(text: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as err:
        raise ValueError("not base64url") from err
    return int.from_bytes(raw, "big")


class KeySet:
    """The signing keys published behind one OpenID metadata URL, fetched without ever blocking a request long.

    ``key(kid)`` answers from the cache. An unknown ``kid`` triggers a re-fetch of the whole key document only if
    none was started in the last ``unknown_key_interval`` seconds (``UNKNOWN_KEY_INTERVAL``), this ``kid`` was not
    missing from a fetch started in the last ``same_kid_interval`` seconds (``SAME_KID_INTERVAL``), and the last
    failure's backoff has passed; a request whose ``kid`` may re-fetch also waits for a fetch already running.
    So a key published at least ``same_kid_interval`` seconds ago is accepted, however many forged ``kid``
    values arrive. One fetch runs at a time and every request that needs it waits for that same one (at most
    ``FETCH_TIMEOUT``). A failed fetch keeps the keys we have.
    """

    def __init__(
        self, name: str, metadata_url: str, client: _Fetcher, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.metadata_url = metadata_url
        self._client = client
        # Every time the key set reads is from this clock, so that tests can move it instead of sleeping.
        self.clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at = -math.inf  # when the fetch that produced ``_keys`` started
        self._attempted_at = -math.inf
        self._failures = 0
        self._retry_at = -math.inf
        self._task: asyncio.Task[None] | None = None
        # kid -> start of the last successful fetch it was missing from, oldest first; at most MAX_REMEMBERED_KIDS.
        self._missing: dict[str, float] = {}
        self.fetches = 0
        # Attributes rather than constants so that tests can age them.
        self.unknown_key_interval = UNKNOWN_KEY_INTERVAL
        self.same_kid_interval = SAME_KID_INTERVAL

    @property
    def cached(self) -> int:
        """How many signing keys are cached."""
        return len(self._keys)

    @property
    def remembered_kids(self) -> int:
        """How many unknown ``kid`` values are remembered (bounded by ``MAX_REMEMBERED_KIDS``)."""
        return len(self._missing)

    def due(self, now: float) -> bool:
        """Whether the background refresher should fetch now (only key sets that were ever needed)."""
        if self._attempted_at == -math.inf or now < self._retry_at:
            return False
        return now - self._fetched_at >= KEY_REFRESH_INTERVAL or not self._keys

    async def key(self, kid: str) -> SigningKey:
        """The published key ``kid``; ``AuthenticationError`` if unknown, ``KeysUnavailableError`` if none cached.

        Call it only for tokens that passed every check that needs no signature: an unknown ``kid`` may cost a
        fetch.
        """
        found = self._keys.get(kid)
        if found is not None:
            return found
        now = self.clock()
        if not self._keys:
            if now < self._retry_at:
                raise KeysUnavailableError(self._retry_at - now)
        elif not self._may_refetch(kid, now):
            raise AuthenticationError("unknown signing key")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.refresh()), FETCH_TIMEOUT + 1)
        found = self._keys.get(kid)
        if found is not None:
            return found
        if not self._keys:
            raise KeysUnavailableError(max(self._retry_at - self.clock(), FIRST_BACKOFF))
        self._remember_missing(kid)
        raise AuthenticationError("unknown signing key")

    def _may_refetch(self, kid: str, now: float) -> bool:
        if now < self._retry_at or len(kid) > MAX_KID_CHARS:
            return False
        missing_since = self._missing.get(kid)
        if missing_since is not None and now - missing_since < self.same_kid_interval:
            return False
        if self._task is not None and not self._task.done():
            return True  # joining the fetch in flight costs no fetch
        return now - self._attempted_at >= self.unknown_key_interval

    def _remember_missing(self, kid: str) -> None:
        # The cached keys came from the fetch started at _fetched_at and kid is not among them, so kid's key (if it
        # is genuine) was published after that moment: counting its window from there never delays it longer.
        now = self.clock()
        self._missing.pop(kid, None)
        if now - self._fetched_at < self.same_kid_interval:
            self._missing[kid] = self._fetched_at
        while self._missing:
            oldest, since = next(iter(self._missing.items()))
            if now - since < self.same_kid_interval and len(self._missing) <= MAX_REMEMBERED_KIDS:
                break
            del self._missing[oldest]

    def refresh(self) -> asyncio.Task[None]:
        """Start a fetch unless one is running; the task never raises."""
        if self._task is None or self._task.done():
            self._attempted_at = self.clock()
            self.fetches += 1
            self._task = asyncio.create_task(
                self._refresh(self._attempted_at), name=f"refresh {self.name} signing keys"
            )
        return self._task

    async def _refresh(self, started: float) -> None:
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                metadata = await self._client.get_json(self.metadata_url)
                jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
                if not isinstance(jwks_uri, str) or url_problem(jwks_uri):
                    raise KeyFetchError("the metadata has no usable https jwks_uri")
                keys = parse_jwks(await self._client.get_json(jwks_uri))
            if not keys:
                raise KeyFetchError("the key document holds no usable RSA key")
        except (KeyFetchError, TimeoutError) as err:
            self._failures += 1
            delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (self._failures - 1))
            self._retry_at = self.clock() + delay
            logger.warning(
                "could not fetch the %s signing keys from %s: %s; %s; next attempt in %g s",
                self.name,
                URL(self.metadata_url).host,
                str(err) or f"no answer within {FETCH_TIMEOUT:g} s",
                f"still using the {len(self._keys)} keys fetched before" if self._keys else "no keys yet",
                delay,
            )
            return
        self._keys = keys
        self._failures = 0
        self._retry_at = -math.inf
        self._fetched_at = started
        logger.debug("fetched %d %s signing keys", len(keys), self.name)

    async def close(self) -> None:
        """Cancel a fetch in flight."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class _Fetcher:
    """One aiohttp session for keys and logins, created on first use (anonymous bots never open one)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=LOGIN_TIMEOUT, connect=FETCH_TIMEOUT), trust_env=False
            )
        return self._session

    async def get_json(self, url: str) -> Any:
        try:
            async with self.session().get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise KeyFetchError(f"HTTP {response.status}")
                return json.loads(await _read_bounded(response))
        except (aiohttp.ClientError, ValueError) as err:
            raise KeyFetchError(f"{type(err).__name__}") from err

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_DOCUMENT_BYTES:
            raise KeyFetchError(f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    return bytes(body)


class BotAuthentication(BotFrameworkAuthentication):
    """Inbound token validation and the outgoing token, built from ``HostSettings``; ``await close()`` when done.

    ``authenticate_request`` is what the adapter calls for every activity. The connector and user-token
    factories (used only while the SDK's ``CloudAdapter.process_activity`` runs turns) are the SDK's own,
    configured with the same cloud settings.
    """

    def __init__(self, settings: HostSettings) -> None:
        self._settings = settings
        self._app_id = settings.app_id
        self._fetcher = _Fetcher()
        self.channel_keys = KeySet("channel", settings.to_bot_from_channel_openid_metadata_url, self._fetcher)
        self.emulator_keys = KeySet("Emulator", settings.to_bot_from_emulator_openid_metadata_url, self._fetcher)
        self._emulator_issuers = set(EMULATOR_ISSUERS)
        if settings.app_type in ("SingleTenant", "UserAssignedMSI") and settings.app_tenant_id:
            tenant = settings.app_tenant_id
            self._emulator_issuers |= {
                f"https://sts.windows.net/{tenant}/",
                f"https://login.microsoftonline.com/{tenant}/v2.0",
            }
        self._refresher: asyncio.Task[None] | None = None
        self._tokens: dict[str, _Token] = {}
        self._token_tasks: dict[str, asyncio.Task[_Token]] = {}
        self._managed_identity: Any = None
        self.token_fetches = 0
        self._sdk = ConfigurationBotFrameworkAuthentication(
            SimpleNamespace(
                APP_ID=settings.app_id,
                APP_PASSWORD=settings.app_password,
                APP_TYPE=settings.app_type,
                APP_TENANTID=settings.app_tenant_id,
                TO_BOT_FROM_CHANNEL_TOKEN_ISSUER=settings.to_bot_from_channel_token_issuer,
                TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL=settings.to_bot_from_channel_openid_metadata_url,
                TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL=settings.to_bot_from_emulator_openid_metadata_url,
                TO_CHANNEL_FROM_BOT_LOGIN_URL=settings.to_channel_from_bot_login_url,
                TO_CHANNEL_FROM_BOT_OAUTH_SCOPE=settings.to_channel_from_bot_oauth_scope,
                CALLER_ID=self._caller_id(),
            )
        )

    def _caller_id(self) -> str | None:
        if not self._app_id:
            return None
        public = self._settings.to_bot_from_channel_token_issuer == PUBLIC_CLOUD["ToBotFromChannelTokenIssuer"]
        return PUBLIC_AZURE_CALLER if public else None

    async def authenticate_request(self, activity: Activity, auth_header: str | None) -> AuthenticateRequestResult:
        """The request's identity, or ``AuthenticationError`` (401) / ``KeysUnavailableError`` (503)."""
        result = AuthenticateRequestResult()
        result.audience = self._settings.to_channel_from_bot_oauth_scope
        result.caller_id = self._caller_id()
        if not self._app_id:
            result.claims_identity = ClaimsIdentity({}, True, "anonymous")
        else:
            try:
                claims = await self._validate(auth_header or "", activity)
            except AuthenticationError as err:
                logger.info(
                    "refused a request on channel %s: %s",
                    short_id(activity.channel_id),
                    err.reason if err.status == 401 else "no signing keys available (503)",
                )
                raise
            result.claims_identity = ClaimsIdentity(claims, True, "Bearer")
        # No connector_factory: the turn pipeline sends replies itself (hosting/replies.py), with outgoing_token().
        return result

    async def _validate(self, auth_header: str, activity: Activity) -> dict[str, Any]:
        scheme, _, token = auth_header.partition(" ")
        if not auth_header:
            raise AuthenticationError("no Authorization header")
        if scheme != "Bearer":
            raise AuthenticationError("the Authorization scheme must be Bearer")
        token = token.strip()
        if not token:
            raise AuthenticationError("empty bearer token")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationError("token too long")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as err:
            raise AuthenticationError("not a well-formed JWT") from err
        if header.get("alg") != "RS256":
            raise AuthenticationError("the token must be signed with RS256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationError("the token names no signing key")
        issuer = unverified.get("iss")
        if issuer == self._settings.to_bot_from_channel_token_issuer:
            keys, from_channel = self.channel_keys, True
        elif isinstance(issuer, str) and issuer in self._emulator_issuers:
            keys, from_channel = self.emulator_keys, False
        else:
            raise AuthenticationError("untrusted issuer")
        # Everything that needs no signature is checked before the key lookup: only a token that could be genuine
        # may make us fetch keys for an unknown kid.
        self._check_claims(self._decode(token, None, issuer), from_channel, activity)
        self._start_refresher()
        signing_key = await keys.key(kid)
        if signing_key.endorsements and activity.channel_id not in signing_key.endorsements:
            raise AuthenticationError("the signing key is not endorsed for this channel")
        # Decoded again with the signature; the claims are checked again too, as time passed while keys were fetched.
        return self._decode(token, signing_key.key, issuer)

    def _decode(self, token: str, key: RSAPublicKey | None, issuer: str) -> dict[str, Any]:
        """The claims if issuer, audience and lifetime are right, and the signature too unless ``key`` is None."""
        try:
            return jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self._app_id,
                issuer=issuer,
                leeway=CLOCK_SKEW,
                # Each check named: without the signature check, PyJWT would skip every claim check by default.
                options={
                    "verify_signature": key is not None,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    "verify_sub": True,
                    "verify_jti": True,
                    "require": ["exp", "iss", "aud"],
                },
            )
        except jwt.ExpiredSignatureError as err:
            raise AuthenticationError("the token has expired") from err
        except jwt.ImmatureSignatureError as err:
            raise AuthenticationError("the token is not valid yet") from err
        except jwt.InvalidAudienceError as err:
            raise AuthenticationError("the token is for another audience") from err
        except jwt.InvalidSignatureError as err:
            raise AuthenticationError("bad signature") from err
        except jwt.PyJWTError as err:
            raise AuthenticationError("invalid token claims") from err

    def _check_claims(self, claims: dict[str, Any], from_channel: bool, activity: Activity) -> None:
        if from_channel:
            if claims.get("serviceurl") != activity.service_url:
                raise AuthenticationError("the token's serviceurl claim does not match the activity")
        else:
            version = claims.get("ver")
            app_claim = {None: "appid", "1.0": "appid", "2.0": "azp"}.get(version)
            if app_claim is None:
                raise AuthenticationError("unknown Emulator token version")
            if claims.get(app_claim) != self._app_id:
                raise AuthenticationError("the token was issued to another app")

    def _start_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_forever(), name="refresh signing keys")

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_CHECK_INTERVAL)
            for keys in (self.channel_keys, self.emulator_keys):
                if keys.due(keys.clock()):
                    await keys.refresh()

    async def outgoing_token(self, audience: str | None = None) -> str | None:
        """The bearer token for replies to ``audience`` (default ``ToChannelFromBotOAuthScope``).

        None without an app id. Cached until ``TOKEN_MARGIN`` before it expires; concurrent callers share one
        fetch. Raises ``OutgoingTokenError`` when the login endpoint or managed identity refuses or fails.
        """
        if not self._app_id:
            return None
        scope = audience or self._settings.to_channel_from_bot_oauth_scope
        cached = self._tokens.get(scope)
        if cached is not None and time.monotonic() < cached.refresh_at:
            return cached.value
        task = self._token_tasks.get(scope)
        if task is None or task.done():
            task = asyncio.create_task(self._fetch_token(scope), name="fetch outgoing token")
            self._token_tasks[scope] = task
        token = await asyncio.shield(task)
        self._tokens[scope] = token
        return token.value

    async def _fetch_token(self, scope: str) -> _Token:
        self.token_fetches += 1
        full_scope = scope if scope.endswith("/.default") else f"{scope.rstrip('/')}/.default"
        if self._settings.app_type == "UserAssignedMSI":
            return await self._managed_identity_token(full_scope)
        url = self._settings.to_channel_from_bot_login_url
        if self._settings.app_type == "SingleTenant":
            url = url.replace("/botframework.com/", f"/{self._settings.app_tenant_id}/")
        form = {
            "grant_type": "client_credentials",
            "client_id": self._app_id,
            "client_secret": self._settings.app_password,
            "scope": full_scope,
        }
        try:
            async with self._fetcher.session().post(
                url, data=form, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=LOGIN_TIMEOUT)
            ) as response:
                body = await _read_bounded(response)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, KeyFetchError) as err:
            raise OutgoingTokenError(f"the login endpoint {URL(url).host} failed: {type(err).__name__}") from err
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
            code = answer.get("error") if isinstance(answer, dict) and isinstance(answer.get("error"), str) else ""
            raise OutgoingTokenError(f"the login endpoint {URL(url).host} answered HTTP {status} {code[:64]}".strip())
        expires_in = answer.get("expires_in", 3600)
        try:
            lifetime = float(expires_in)
        except (TypeError, ValueError):
            lifetime = 3600.0
        return _Token(answer["access_token"], time.monotonic() + max(0.0, lifetime - TOKEN_MARGIN))

    async def _managed_identity_token(self, full_scope: str) -> _Token:
        if self._managed_identity is None:
            # Imported here: only a UserAssignedMSI bot needs azure-identity (~20 ms of start-up for every other).
            from azure.identity.aio import ManagedIdentityCredential

            self._managed_identity = ManagedIdentityCredential(client_id=self._app_id)
        try:
            access = await asyncio.wait_for(self._managed_identity.get_token(full_scope), LOGIN_TIMEOUT)
        except (AzureError, TimeoutError, LookupError, TypeError, ValueError) as err:
            # azure-identity lets a malformed answer escape as KeyError and the like, not only as AzureError.
            raise OutgoingTokenError(f"the managed identity gave no token: {type(err).__name__}") from err
        lifetime = access.expires_on - time.time()
        return _Token(access.token, time.monotonic() + max(0.0, lifetime - TOKEN_MARGIN))

    async def close(self) -> None:
        """Stop the background refresh and close the HTTP session (and the managed identity's)."""
        tasks = [task for task in (self._refresher, *self._token_tasks.values()) if task and not task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, OutgoingTokenError):
                await task
        await self.channel_keys.close()
        await self.emulator_keys.close()
        await self._fetcher.close()
        if self._managed_identity is not None:
            await self._managed_identity.close()

    async def authenticate_streaming_request(
        self, auth_header: str, channel_id_header: str
    ) -> AuthenticateRequestResult:
        raise AuthenticationError("streaming connections are not supported")

    def create_connector_factory(self, claims_identity: ClaimsIdentity) -> ConnectorFactory:
        return self._sdk.create_connector_factory(claims_identity)

    async def create_user_token_client(self, claims_identity: ClaimsIdentity) -> UserTokenClient:
        """The SDK's user token client for this bot (its own app id, whatever ``claims_identity`` says), on the
        token service at ``OAuthUrl``, its requests carrying ``outgoing_token()`` on this object's aiohttp
        session. ``UserTokenError`` without an app id.

        Costs ~5 ms of CPU (msrest's model tables): build it once (``OnDemandUserTokenClient``), not per turn.
        """
        if not self._app_id:
            raise UserTokenError(NO_APP_ID)
        bearer = _BearerPolicy(self.outgoing_token)
        client = _UserTokenClientImpl(self._app_id, bearer, self._settings.oauth_url)
        # Its operations reach the pipeline through this configuration: the SDK's sends on requests in a thread.
        config = client._client.config
        config.pipeline = AsyncPipeline(
            [config.user_agent_policy, bearer, RawDeserializer(), config.http_logger_policy],
            AioHTTPSender(_SessionSender(self._fetcher.session)),
        )
        return client

    def create_bot_framework_client(self) -> BotFrameworkClient:
        return self._sdk.create_bot_framework_client()

    def get_originating_audience(self) -> str:
        return self._settings.to_channel_from_bot_oauth_scope

    async def authenticate_channel_request(self, auth_header: str) -> ClaimsIdentity:
        raise AuthenticationError("skill requests are not supported")


class _BearerPolicy(AsyncHTTPPolicy):
    """msrest credentials: the bot's outgoing token on every request to the token service."""

    def __init__(self, token: Callable[[], Awaitable[str | None]]) -> None:
        super().__init__()
        self._token = token

    async def send(self, request: Request, **kwargs: Any) -> Response:
        token = await self._token()
        if token:
            request.http_request.headers["Authorization"] = f"Bearer {token}"
        return await self.next.send(request, **kwargs)


class _SessionSender(AsyncHTTPSender):
    """msrest's transport on an aiohttp session we own (bounded timeouts, no proxies from the environment)."""

    def __init__(self, session: Callable[[], aiohttp.ClientSession]) -> None:
        self._session = session

    async def __aenter__(self) -> _SessionSender:
        return self

    async def __aexit__(self, *exc_details: object) -> None:
        return None  # the session belongs to BotAuthentication, which closes it

    async def send(self, request: ClientRequest, **config: Any) -> AioHttpClientResponse:
        async with self._session().request(
            request.method, request.url, headers=request.headers, data=request.data, allow_redirects=False
        ) as response:
            answer = AioHttpClientResponse(request, response)
            await answer.load_body()
        return answer


class OnDemandUserTokenClient(UserTokenClient):
    """The ``UserTokenClient`` every turn finds where ``OAuthPrompt`` looks for it
    (``turn_state[CloudAdapterBase.USER_TOKEN_CLIENT_KEY]``): one per adapter, building the real one with
    ``build`` when first used (never per turn), and turning what goes wrong into a ``UserTokenError`` that says what
    to configure."""

    def __init__(self, build: Callable[[], Awaitable[UserTokenClient]], oauth_url: str) -> None:
        super().__init__()
        self._build = build
        self._host = URL(oauth_url).host or oauth_url
        self._client: UserTokenClient | None = None
        self._lock = asyncio.Lock()
        #: How many times the real client was built (once, when first used).
        self.builds = 0

    async def client(self) -> UserTokenClient:
        """The real client, built now if it was not yet; ``UserTokenError`` when it cannot be."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await self._build()
                    self.builds += 1
        return self._client

    @contextlib.asynccontextmanager
    async def _calling(self, operation: str, connection_name: str | None) -> AsyncIterator[None]:
        """Run one call of the token service, its failures told as ``UserTokenError``."""
        if connection_name is not None and not connection_name:
            raise UserTokenError(NO_CONNECTION)
        try:
            yield
        except HttpOperationError as err:
            status = getattr(err.response, "status_code", "?")
            raise UserTokenError(
                f"the token service at {self._host} answered {operation} with HTTP {status}: check that the bot's "
                f"Azure Bot resource has an OAuth connection setting named {connection_name!r}, and OAuthUrl"
            ) from err
        except (aiohttp.ClientError, TimeoutError) as err:
            raise UserTokenError(
                f"the token service at {self._host} could not be reached ({type(err).__name__}); check OAuthUrl"
            ) from err
        except OutgoingTokenError as err:
            raise UserTokenError(f"no token to call the token service with: {err}") from err

    async def get_user_token(
        self, user_id: str, connection_name: str, channel_id: str, magic_code: str | None
    ) -> TokenResponse | None:
        """The user's token for ``connection_name``, or None if they are not signed in (or the code is wrong)."""
        async with self._calling("GetToken", connection_name):
            return await (await self.client()).get_user_token(user_id, connection_name, channel_id, magic_code)

    async def get_sign_in_resource(
        self, connection_name: str, activity: Activity, final_redirect: str | None
    ) -> SignInUrlResponse:
        """The sign-in link (and token exchange resource) for the user of ``activity``."""
        async with self._calling("GetSignInResource", connection_name):
            return await (await self.client()).get_sign_in_resource(connection_name, activity, final_redirect)

    async def sign_out_user(self, user_id: str, connection_name: str, channel_id: str) -> None:
        """Sign the user out of ``connection_name``."""
        async with self._calling("SignOut", connection_name):
            await (await self.client()).sign_out_user(user_id, connection_name, channel_id)

    async def get_token_status(self, user_id: str, channel_id: str, include_filter: str) -> list[TokenStatus]:
        """Which connections the user has a token for."""
        async with self._calling("GetTokenStatus", None):
            return await (await self.client()).get_token_status(user_id, channel_id, include_filter)

    async def get_aad_tokens(
        self, user_id: str, connection_name: str, resource_urls: list[str], channel_id: str
    ) -> dict[str, TokenResponse]:
        """The user's Entra ID tokens for ``resource_urls``."""
        async with self._calling("GetAadTokens", connection_name):
            return await (await self.client()).get_aad_tokens(user_id, connection_name, resource_urls, channel_id)

    async def exchange_token(
        self, user_id: str, connection_name: str, channel_id: str, exchange_request: TokenExchangeRequest
    ) -> TokenResponse:
        """Exchange a single-sign-on token for the user's token of ``connection_name``."""
        async with self._calling("ExchangeToken", connection_name):
            return await (await self.client()).exchange_token(user_id, connection_name, channel_id, exchange_request)
