"""The whole bot while its Azure store goes away and comes back (Azurite, blob and table).

Azurite runs with its data on disk here, so "nothing lost" can be checked across its restart: the user's name
and the conversation's counter (the counting bot's, tests/support/counting_bot.py) must still be there when the
store is back, and the bot must not need a restart to use it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from app import create_app
from hosting.server import READINESS
from tests.support import counting_bot
from tests.support.azurite import Azurite, require_node, scratch_settings
from tests.support.channel import Conversation, FakeChannel


@pytest.fixture
def persistent_azurite(tmp_path: Path) -> Iterator[Azurite]:
    require_node()
    server = Azurite(tmp_path, persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["blob", "table"])
async def test_a_store_outage_fails_turns_cleanly_loses_nothing_and_heals_by_itself(
    persistent_azurite: Azurite, backend: str, http: aiohttp.ClientSession, channel: FakeChannel
) -> None:
    app = await create_app(scratch_settings(persistent_azurite, backend), bot_factory=counting_bot.counting_bot)
    app[READINESS].interval = 0  # /readyz checks on every call: the outage, then the recovery
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        talk = Conversation(http, f"{base}/api/messages", channel)
        await talk.say("hi")
        await talk.say(counting_bot.call_me("Ada"))
        assert (await talk.say("before")).texts == [counting_bot.echo("before", 3, "Ada")]

        persistent_azurite.stop(graceful=True)

        async with http.get(f"{base}/readyz") as response:
            assert response.status == 503
            ready = await response.json()
        assert ready["status"] == "unavailable"
        assert ready["storage"] == backend
        assert ready["reason"]
        failed = await talk.post(talk.activity("message", text="during the outage"))
        assert failed.status == 503
        assert failed.body["error"]["code"] == "storage_unavailable"
        assert "can't reach my memory" in failed.text

        persistent_azurite.start()

        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
        # The name is still known, and the failed turn counted nothing while the earlier ones are all there.
        assert (await talk.say("after")).texts == [counting_bot.echo("after", 4, "Ada")]
    finally:
        await runner.cleanup()
