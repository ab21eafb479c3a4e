"""The suite never talks to anything but this machine: pytest-socket (``--allow-hosts`` in pyproject.toml) makes a
connection to any other address fail the test that tries it, before a packet is sent."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
from pytest_socket import SocketConnectBlockedError


@contextlib.contextmanager
def _blocked() -> Iterator[None]:
    """The connection is refused by pytest-socket, which also warns (an error under ``filterwarnings = error``)."""
    with pytest.raises(SocketConnectBlockedError), pytest.warns(UserWarning, match="192.0.2.1"):
        yield


def test_a_connection_off_this_machine_fails_before_anything_is_sent() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, _blocked():
        sock.connect(("192.0.2.1", 443))  # TEST-NET-1: not routable anyway


async def test_an_http_client_cannot_reach_the_cloud_either() -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        with _blocked():
            await session.get("http://192.0.2.1/")


def test_loopback_is_allowed() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
