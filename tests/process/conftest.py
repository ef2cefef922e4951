"""Fixtures for tests that run real sidecar processes on 127.0.0.1 (helpers in support.py).

`groups` starts local groups under tmp_path and always stops them; at the end it checks that
every member it started shut down cleanly (exit code 0) on SIGTERM, so a member that crashed
or hung during a test fails that test even if its assertions passed.

`shared_group` is one 3-member group for a whole module (a member takes a second or more to
start), for tests whose input must not hurt the group: each of them checks that it still
delivers, and leaves nothing in flight (its last message was delivered everywhere). Clients
still come from `groups`, per test. The same exit-code check runs when the module is done.

`raw_unix` / `raw_tcp` open framed connections that bypass the client library.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from support import Groups, RawConnection

from derecho.localgroup import LocalGroup


@pytest.fixture
async def groups(tmp_path: Path) -> AsyncIterator[Groups]:
    running = Groups(tmp_path)
    yield running
    problems = await running.close()
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def shared_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalGroup]:
    # The members are processes, not tied to an event loop: start and stop them on loops of
    # their own, and let each test talk to them from its own loop.
    owner = Groups(tmp_path_factory.mktemp("shared"))
    try:
        yield asyncio.run(owner.start(3))
    finally:
        problems = asyncio.run(owner.close())
    assert not problems, "\n".join(problems)


@pytest.fixture
async def raw_unix() -> AsyncIterator[Callable[[Path], Awaitable[RawConnection]]]:
    opened: list[RawConnection] = []

    async def connect(path: Path) -> RawConnection:
        reader, writer = await asyncio.open_unix_connection(str(path))
        conn = RawConnection(reader, writer)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        await conn.close()


@pytest.fixture
async def raw_tcp() -> AsyncIterator[Callable[[int], Awaitable[RawConnection]]]:
    opened: list[RawConnection] = []

    async def connect(port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = RawConnection(reader, writer)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        await conn.close()
