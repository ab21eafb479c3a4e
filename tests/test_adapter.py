"""Pieces of the adapter that are easier to pin down directly than over HTTP."""

from __future__ import annotations

import asyncio

from msrest.universal_http.requests import ClientRetryPolicy

from bots.adapter import ConversationLocks, speed_up_connector_clients


def test_the_connector_speed_up_keeps_the_same_retry_codes() -> None:
    original_safe_codes = [i for i in range(500) if i != 408] + [501, 505]  # msrest 0.7.1's own definition
    expected = [i for i in range(999) if i not in original_safe_codes]

    speed_up_connector_clients()
    speed_up_connector_clients()

    assert isinstance(ClientRetryPolicy.safe_codes, frozenset)
    assert ClientRetryPolicy().policy.status_forcelist == expected


async def test_turns_of_one_conversation_run_one_at_a_time_and_locks_are_dropped() -> None:
    locks = ConversationLocks()
    inside: list[str] = []
    overlaps = 0

    async def turn(conversation: str) -> None:
        nonlocal overlaps
        async with locks.hold(conversation):
            overlaps += conversation in inside
            inside.append(conversation)
            await asyncio.sleep(0.01)
            inside.remove(conversation)

    await asyncio.gather(*(turn("a") for _ in range(5)), *(turn("b") for _ in range(5)))

    assert overlaps == 0
    assert len(locks) == 0


async def test_different_conversations_do_not_wait_for_each_other() -> None:
    locks = ConversationLocks()
    async with locks.hold("a"):
        await asyncio.wait_for(_enter(locks, "b"), timeout=1)
        assert len(locks) == 1


async def _enter(locks: ConversationLocks, key: str) -> None:
    async with locks.hold(key):
        pass
