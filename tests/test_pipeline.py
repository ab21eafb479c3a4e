"""The turn pipeline: locks, retries, buffered replies, distinct outcomes."""

from __future__ import annotations

import asyncio

from bots.pipeline import ConversationLocks


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
