"""The token the bot sends with its replies, at the credential seam (``BotAuthentication.outgoing_token``).

Entra ID is not reachable here: ``tests/support/identity.py``'s ``LoginServer`` stands in for its client-credentials
token endpoint on 127.0.0.1, and ``ToChannelFromBotLoginUrl`` points there. The end-to-end check (a normal-mode
reply carrying the token to the serviceUrl) belongs with the outgoing delivery. For ``UserAssignedMSI`` a local
server stands in for App Service's managed identity endpoint (``IDENTITY_ENDPOINT``), which azure-identity calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from config import Settings, load_settings
from hosting.auth import BotAuthentication, OutgoingTokenError
from tests.support.identity import APP_ID, APP_PASSWORD, TENANT_ID, LoginServer
from tests.support.processes import free_port


def credentials(tmp_path: Path, login: LoginServer, **extra: str) -> Settings:
    return load_settings(
        {
            "STORAGE": "memory",
            "MicrosoftAppId": APP_ID,
            "MicrosoftAppPassword": APP_PASSWORD,
            "ToChannelFromBotLoginUrl": login.url,
            **extra,
        }
    )


@pytest_asyncio.fixture
async def auth(tmp_path: Path, login: LoginServer) -> AsyncIterator[BotAuthentication]:
    authentication = BotAuthentication(credentials(tmp_path, login))
    try:
        yield authentication
    finally:
        await authentication.close()


async def test_the_token_comes_from_the_configured_login_endpoint_with_client_credentials(
    auth: BotAuthentication, login: LoginServer
) -> None:
    token = await auth.outgoing_token()

    assert token == "token-1"
    [form] = login.forms
    assert form == {
        "grant_type": "client_credentials",
        "client_id": APP_ID,
        "client_secret": APP_PASSWORD,
        "scope": "https://api.botframework.com/.default",
    }
    assert login.paths == ["/botframework.com/oauth2/v2.0/token"]


async def test_the_token_is_cached_until_shortly_before_it_expires(auth: BotAuthentication, login: LoginServer) -> None:
    first = await auth.outgoing_token()
    again = [await auth.outgoing_token() for _ in range(5)]

    assert again == [first] * 5
    assert len(login.forms) == 1


async def test_a_token_about_to_expire_is_replaced(auth: BotAuthentication, login: LoginServer) -> None:
    login.expires_in = 60  # inside the 5-minute margin: never served from the cache

    first = await auth.outgoing_token()
    second = await auth.outgoing_token()

    assert (first, second) == ("token-1", "token-2")


async def test_concurrent_callers_share_one_fetch(auth: BotAuthentication, login: LoginServer) -> None:
    login.delay = 0.3

    tokens = await asyncio.gather(*(auth.outgoing_token() for _ in range(20)))

    assert set(tokens) == {"token-1"}
    assert len(login.forms) == 1


async def test_another_audience_gets_its_own_token(auth: BotAuthentication, login: LoginServer) -> None:
    await auth.outgoing_token()
    await auth.outgoing_token("api://skill-app")

    assert [form["scope"] for form in login.forms] == [
        "https://api.botframework.com/.default",
        "api://skill-app/.default",
    ]


async def test_single_tenant_asks_its_own_tenant(tmp_path: Path, login: LoginServer) -> None:
    settings = credentials(tmp_path, login, MicrosoftAppType="SingleTenant", MicrosoftAppTenantId=TENANT_ID)
    authentication = BotAuthentication(settings)
    try:
        await authentication.outgoing_token()
    finally:
        await authentication.close()

    assert login.paths == [f"/{TENANT_ID}/oauth2/v2.0/token"]


async def test_a_refusal_is_an_error_that_never_shows_the_secret(
    auth: BotAuthentication, login: LoginServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    login.status = 401

    with pytest.raises(OutgoingTokenError) as raised:
        await auth.outgoing_token()

    assert "401" in str(raised.value)
    assert "invalid_client" in str(raised.value)
    assert APP_PASSWORD not in str(raised.value)
    assert APP_PASSWORD not in caplog.text
    login.status = 200
    assert await auth.outgoing_token() == "token-2"  # a failure is not cached


async def test_an_unreachable_login_endpoint_is_an_error(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "STORAGE": "memory",
            "MicrosoftAppId": APP_ID,
            "MicrosoftAppPassword": APP_PASSWORD,
            "ToChannelFromBotLoginUrl": f"http://127.0.0.1:{free_port()}/botframework.com/oauth2/v2.0/token",
        }
    )
    authentication = BotAuthentication(settings)
    try:
        with pytest.raises(OutgoingTokenError, match="failed"):
            await authentication.outgoing_token()
    finally:
        await authentication.close()


async def test_without_an_app_id_there_is_no_token() -> None:
    authentication = BotAuthentication(load_settings({"STORAGE": "memory"}))
    try:
        assert await authentication.outgoing_token() is None
    finally:
        await authentication.close()


class IdentityEndpoint:
    """Stands in for App Service's managed identity endpoint (``IDENTITY_ENDPOINT``), which azure-identity calls."""

    def __init__(self) -> None:
        self.asked: list[tuple[dict[str, str], str | None]] = []
        self.answer = "token"

    async def token(self, request: web.Request) -> web.Response:
        self.asked.append((dict(request.query), request.headers.get("X-IDENTITY-HEADER")))
        if self.answer == "error":
            return web.json_response({"error": "unavailable"}, status=500)
        answer = {"access_token": f"msi-{len(self.asked)}", "expires_on": str(int(time.time()) + 3600)}
        if self.answer == "token":
            answer |= {"token_type": "Bearer", "resource": request.query["resource"]}
        return web.json_response(answer)


@pytest_asyncio.fixture
async def identity(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[BotAuthentication, IdentityEndpoint]]:
    endpoint = IdentityEndpoint()
    app = web.Application()
    app.router.add_get("/msi/token", endpoint.token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{runner.addresses[0][1]}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "header-from-app-service")
    settings = load_settings(
        {
            "STORAGE": "memory",
            "MicrosoftAppId": APP_ID,
            "MicrosoftAppType": "UserAssignedMSI",
            "MicrosoftAppTenantId": TENANT_ID,
        }
    )
    authentication = BotAuthentication(settings)
    try:
        yield authentication, endpoint
    finally:
        await authentication.close()
        await runner.cleanup()


async def test_a_user_assigned_managed_identity_gets_its_token_from_the_identity_endpoint(
    identity: tuple[BotAuthentication, IdentityEndpoint],
) -> None:
    authentication, endpoint = identity

    tokens = [await authentication.outgoing_token() for _ in range(3)]

    assert tokens == ["msi-1"] * 3
    [(query, header)] = endpoint.asked
    assert query["client_id"] == APP_ID
    assert query["resource"] == "https://api.botframework.com"
    assert header == "header-from-app-service"


@pytest.mark.parametrize("answer", ["error", "malformed"])
async def test_a_failing_managed_identity_is_an_outgoing_token_error(
    identity: tuple[BotAuthentication, IdentityEndpoint], answer: str
) -> None:
    """azure-identity retries a 500 a few times (about 5 s) before giving up; LOGIN_TIMEOUT bounds it at 10 s."""
    authentication, endpoint = identity
    endpoint.answer = answer

    with pytest.raises(OutgoingTokenError, match="managed identity"):
        await authentication.outgoing_token()
