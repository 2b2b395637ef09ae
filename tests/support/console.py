"""Driving the console in tests: a Textual pilot at 80×24 against the real engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

SIZE = (80, 24)


async def wait_for(pilot: Any, predicate: Callable[[], Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        await pilot.pause(0.05)


def drive(app: Any, scenario: Callable[[Any], Awaitable[None]], size: tuple[int, int] = SIZE) -> None:
    """Run `scenario(pilot)` in the app at `size`, to its end."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(main())


def said(app: Any) -> list[str]:
    """The notifications the app has shown."""
    return [n.message for n in app._notifications]
