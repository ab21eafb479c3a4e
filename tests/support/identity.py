"""Local stand-ins for Microsoft's identity endpoints, with real keys and real signatures.

``KeyServer`` stands in for login.botframework.com (the channel's OpenID metadata and signing keys) and for the
Entra ID metadata the Emulator's tokens are checked against: it serves ``/{name}/openid`` (metadata pointing at
``/{name}/keys``) and ``/{name}/keys`` (a JWKS) on 127.0.0.1 and a free port, and can be made to stall or fail.
``LoginServer`` stands in for the Entra ID token endpoint (client-credentials grant). Neither service is
reachable from these machines, which is why they are local.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

APP_ID = "00000000-0000-4000-8000-00000000a11d"
APP_PASSWORD = "test-secret-not-real"
TENANT_ID = "11111111-2222-4333-8444-555555555555"
CHANNEL_ISSUER = "https://api.botframework.com"
EMULATOR_ISSUER = "https://sts.windows.net/d6d49420-f39b-4df7-a1dc-d59a935871db/"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_int(number: int) -> str:
    return _b64(number.to_bytes((number.bit_length() + 7) // 8, "big"))


def jwk(key: rsa.RSAPrivateKey, kid: str, endorsements: list[str] | None = None) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    entry: dict[str, Any] = {"kty": "RSA", "use": "sig", "kid": kid, "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}
    if endorsements is not None:
        entry["endorsements"] = endorsements
    return entry


def sign(claims: dict[str, Any], key: rsa.RSAPrivateKey, kid: str | None = "key-1", algorithm: str = "RS256") -> str:
    headers = {"kid": kid} if kid is not None else {}
    token = jwt.encode(claims, key, algorithm=algorithm, headers=headers)
    if kid is None:
        # PyJWT adds no kid unless asked; make sure none is there.
        assert "kid" not in jwt.get_unverified_header(token)
    return token


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A token built by hand (``alg: none`` and other forgeries PyJWT will not produce)."""
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signature)}"


def hs256(claims: dict[str, Any], secret: str, kid: str = "key-1") -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def channel_claims(service_url: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": CHANNEL_ISSUER,
        "aud": APP_ID,
        "serviceurl": service_url,
        "nbf": now - 60,
        "exp": now + 3600,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def emulator_claims(version: str = "1.0", **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": EMULATOR_ISSUER, "aud": APP_ID, "ver": version, "nbf": now - 60, "exp": now + 3600}
    claims["appid" if version == "1.0" else "azp"] = APP_ID
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


@dataclass
class KeySet:
    keys: list[dict[str, Any]]
    stall_seconds: float = 0.0
    status: int = 200
    requests: int = 0
    stalled: asyncio.Event = field(default_factory=asyncio.Event)


class KeyServer:
    """Serves OpenID metadata and JWKS documents for named key sets on 127.0.0.1."""

    def __init__(self) -> None:
        self.sets: dict[str, KeySet] = {}
        self._runner: web.AppRunner | None = None
        self.base = ""

    def metadata_url(self, name: str) -> str:
        return f"{self.base}/{name}/openid"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}/openid", self._metadata)
        app.router.add_get("/{name}/keys", self._keys)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metadata(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.json_response({"issuer": "local", "jwks_uri": f"{self.base}/{name}/keys"})

    async def _keys(self, request: web.Request) -> web.Response:
        keyset = self.sets[request.match_info["name"]]
        keyset.requests += 1
        if keyset.stall_seconds:
            keyset.stalled.set()
            await asyncio.sleep(keyset.stall_seconds)
        if keyset.status != 200:
            return web.json_response({"error": "unavailable"}, status=keyset.status)
        return web.json_response({"keys": keyset.keys})


class LoginServer:
    """Answers client-credentials token requests like Entra ID's ``/oauth2/v2.0/token``; records each form."""

    def __init__(self, expires_in: int = 3600, delay: float = 0.0) -> None:
        self.forms: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.expires_in = expires_in
        self.delay = delay
        self.status = 200
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    @property
    def url(self) -> str:
        return f"{self.base}/botframework.com/oauth2/v2.0/token"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.forms.append({key: str(value) for key, value in form.items()})
        self.paths.append(request.path)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.json_response({"error": "invalid_client", "error_description": "nope"}, status=self.status)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": self.expires_in, "access_token": f"token-{len(self.forms)}"}
        )
