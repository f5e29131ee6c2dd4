"""Fixtures for the Dynamo backend tests: the ``dynamo`` marker and a fake Dynamo request context.

The fake context implements the part of ``dynamo.runtime.Context`` (1.6.1) the handler uses:
``id()``, ``is_stopped()``, ``is_killed()`` and ``async_killed_or_stopped()``; ``stop()`` /
``kill()`` flip it the way Dynamo does when a client disconnects or the frontend cancels.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "dynamo: end-to-end tests against NVIDIA Dynamo's frontend and our "
                                       "workers (need `ai-dynamo`; skipped when it is not installed)")


class FakeContext:
    """A stand-in for ``dynamo.runtime.Context``."""

    def __init__(self, request_id: str = "ctx-0001", *, with_async_wait: bool = True) -> None:
        self._id = request_id
        self._stopped = False
        self._killed = False
        self._event: asyncio.Event | None = None
        if with_async_wait:
            self.async_killed_or_stopped = self._async_killed_or_stopped

    def id(self) -> str:
        return self._id

    def is_stopped(self) -> bool:
        return self._stopped

    def is_killed(self) -> bool:
        return self._killed

    def stop(self) -> None:
        self._stopped = True
        if self._event is not None:
            self._event.set()

    def kill(self) -> None:
        self._killed = True
        self.stop()

    async def _async_killed_or_stopped(self) -> bool:
        if self._event is None:
            self._event = asyncio.Event()
        if self._stopped or self._killed:
            return True
        await self._event.wait()
        return True


@pytest.fixture
def fake_context() -> Any:
    return FakeContext
