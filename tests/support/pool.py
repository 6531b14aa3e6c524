"""Counting the pooled connections a test's request holds while its body is still being sent:
a slow client must hold none (tests/admin/test_slow_bodies.py, tests/web/test_slow_bodies.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.types import ASGIApp


class Held:
    """How many pooled connections the current task holds, each time a body chunk is sent."""

    def __init__(self) -> None:
        self.now = 0
        self.while_sending: list[int] = []
        self.task: asyncio.Task[Any] | None = None  # the test's, which the request runs in

    def watch_this_task(self) -> None:
        self.task = asyncio.current_task()


def count_held(asgi: ASGIApp, monkeypatch: pytest.MonkeyPatch) -> Held:
    """The app's pool, counting the connections this test's task holds (the request runs in it,
    under httpx's ASGI transport; the app's background tasks are not counted)."""
    pool = asgi.state["wallet"].pool  # type: ignore[attr-defined]
    cls = type(pool)  # its attributes are slots: the class's method is wrapped, for this pool
    real = cls.acquire
    counted = Held()

    def acquire(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self is not pool:
            return real(self, *args, **kwargs)

        @asynccontextmanager
        async def tracked() -> AsyncIterator[Any]:
            async with real(self, *args, **kwargs) as conn:
                mine = counted.task is not None and asyncio.current_task() is counted.task
                counted.now += mine
                try:
                    yield conn
                finally:
                    counted.now -= mine

        return tracked()

    monkeypatch.setattr(cls, "acquire", acquire)
    return counted


async def byte_by_byte(data: bytes, held: Held) -> AsyncIterator[bytes]:
    """``data`` sent one byte at a time, noting the connections held before each."""
    for i in range(len(data)):
        held.while_sending.append(held.now)
        yield data[i : i + 1]
