"""Slots: at most N holders, first come first served, cancellation never loses a slot."""

from __future__ import annotations

import asyncio

import pytest

from reminder_service.channels.slots import Slots


def test_no_more_holders_than_slots_and_first_come_first_served() -> None:
    async def scenario() -> tuple[int, list[int]]:
        slots = Slots(3)
        holding = 0
        most = 0
        order: list[int] = []
        gate = asyncio.Event()

        async def hold(i: int) -> None:
            nonlocal holding, most
            async with slots:
                order.append(i)
                holding += 1
                most = max(most, holding)
                await gate.wait()
                await asyncio.sleep(0)
                holding -= 1

        tasks = [asyncio.create_task(hold(i)) for i in range(20)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert holding == 3
        gate.set()
        await asyncio.gather(*tasks)
        assert slots.free == 3
        return most, order

    most, order = asyncio.run(scenario())
    assert most == 3
    assert order == list(range(20))


def test_a_cancelled_waiter_takes_no_slot_and_the_next_one_gets_it() -> None:
    async def scenario() -> list[str]:
        slots = Slots(1)
        got: list[str] = []
        await slots.acquire()

        async def wait_for(name: str) -> None:
            await slots.acquire()
            got.append(name)

        first = asyncio.create_task(wait_for("first"))
        second = asyncio.create_task(wait_for("second"))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        slots.release()
        await asyncio.wait_for(second, 1)
        assert first.cancelled()
        slots.release()
        assert slots.free == 1
        return got

    assert asyncio.run(scenario()) == ["second"]


def test_a_slot_handed_over_as_the_waiter_is_cancelled_is_passed_on() -> None:
    async def scenario() -> int:
        slots = Slots(1)
        await slots.acquire()
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        slots.release()  # handed to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return slots.free

    assert asyncio.run(scenario()) == 1


def test_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="1 or more"):
        Slots(0)
