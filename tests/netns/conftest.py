"""Fixtures for tests that run sidecars on five "hosts": network namespaces joined by a bridge.

Layout, built per test by the `network` fixture:

    hub namespace (<tag>-hub)            host namespaces (<tag>-0 .. <tag>-4)
      br-main ── h0 ══ veth ══ eth0  10.213.77.1/24   member 0
              ── h1 ══ veth ══ eth0  10.213.77.2/24   member 1
              ...
      br-island  (empty until a test moves host ports onto it)

The bridges live in a namespace of their own rather than in the root namespace: nothing on the
machine's own interfaces, routes or firewall (Docker's FORWARD policy, br_netfilter) is touched
or can drop the test's traffic, the /24 cannot clash with a real network, and teardown is just
deleting namespaces (the veths go with them). A partition moves host ports from br-main to
br-island, so the cut-off hosts still reach each other but nobody else; healing moves them back.

<tag> is drn-<pid>-<random>, so parallel runs do not clash; namespaces left by a run that was
killed (its pid gone) are removed when the next run starts.

Each member is `ip netns exec <ns> python -m derecho sidecar --config FILE`, with its data_dir
under tmp_path. Its Unix socket is a filesystem path, reachable from the test process in the
root namespace; sockets go in a short directory under /tmp because a socket path must stay
under about 100 bytes and tmp_path grows with the test's name.

DEADLINE bounds every wait for an event; it is never an assertion about speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w

import derecho
from derecho.client import Client, DerechoError

HOSTS = 5
SUBNET = "10.213.77"
PEER_PORT = 24000
PREFIX = "drn-"
MAIN_BRIDGE = "br-main"
ISLAND_BRIDGE = "br-island"
DEADLINE = 30.0
# A 2-core CI machine running five sidecars and the test can stall a process for a few hundred
# milliseconds; a 1 s suspicion timeout keeps healthy members from being suspected, and the
# partition is still noticed within about a second.
MEMBERSHIP = {"heartbeat_interval": 0.1, "suspicion_timeout": 1.0}
# The directory holding the derecho package the test process imports: the sidecars must run
# the same code (a checkout on PYTHONPATH, or the installed copy).
PACKAGE_ROOT = str(Path(derecho.__file__).resolve().parent.parent)


class IpError(RuntimeError):
    """An `ip` command failed; the message holds the command and its stderr."""


def ip(*args: str) -> str:
    """Run `ip ARGS`; raise IpError naming the command and what it printed if it fails."""
    command = ["ip", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired as exc:
        raise IpError(f"`{' '.join(command)}` did not finish in {exc.timeout} s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip() or "(nothing on stderr)"
        raise IpError(f"`{' '.join(command)}` failed with exit code {done.returncode}: {said}")
    return done.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_namespaces() -> None:
    """Namespaces of earlier runs that were killed before their teardown (their pid is gone)."""
    with contextlib.suppress(IpError):
        for line in ip("netns", "list").splitlines():
            name = line.split()[0] if line.split() else ""
            match = re.fullmatch(rf"{re.escape(PREFIX)}(\d+)-.*", name)
            if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
                with contextlib.suppress(IpError):
                    ip("netns", "del", name)


def _unavailable() -> str | None:
    """Why this machine cannot run the tests, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (apt-get install iproute2)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
    except IpError as exc:
        return f"cannot create a network namespace here (no CAP_NET_ADMIN in this container?): {exc}"
    try:
        # Bridges and veths are kernel modules a container may not have.
        ip("-n", probe, "link", "add", "probe-br", "type", "bridge")
        ip("-n", probe, "link", "add", "probe-a", "type", "veth", "peer", "name", "probe-b")
        ip("-n", probe, "link", "set", "probe-a", "master", "probe-br")
    except IpError as exc:
        return f"cannot build a bridge and veth pair in a network namespace: {exc}"
    finally:
        with contextlib.suppress(IpError):
            ip("netns", "del", probe)
    return None


@pytest.fixture(scope="session")
def netns_support() -> None:
    """Skips every test that uses it (the whole module) when namespaces cannot be made here."""
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)
    _remove_stale_namespaces()


async def wait_until(check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = DEADLINE) -> None:
    """Poll `check` until it is true; fail naming `what` if `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Host:
    """One namespace and the member that runs in it."""

    node_id: int
    netns: str
    address: str
    data_dir: Path
    socket: Path
    process: subprocess.Popen[bytes] | None = None
    status: dict[str, Any] = field(default_factory=dict, repr=False)  # the last one read

    @property
    def config_path(self) -> Path:
        return self.data_dir / "sidecar.toml"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "sidecar.log"

    @property
    def saved_view(self) -> Path:
        return self.data_dir / "membership" / "view.json"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class Network:
    """Five hosts on one bridge, a member per host; `close` undoes everything."""

    def __init__(self, base: Path) -> None:
        self.tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.hub = f"{self.tag}-hub"
        self.sockets = Path(tempfile.mkdtemp(prefix="drn-"))
        self.hosts = [
            Host(i, f"{self.tag}-{i}", f"{SUBNET}.{i + 1}", base / f"m{i}", self.sockets / f"m{i}.sock")
            for i in range(HOSTS)
        ]
        self.namespaces: list[str] = []  # created so far, for teardown
        self.processes: list[subprocess.Popen[bytes]] = []  # every sidecar ever started
        self.clients: list[Client] = []

    # -- the network ----------------------------------------------------------------------

    def build(self) -> None:
        self._add_namespace(self.hub)
        ip("-n", self.hub, "link", "set", "lo", "up")
        for bridge in (MAIN_BRIDGE, ISLAND_BRIDGE):
            ip("-n", self.hub, "link", "add", bridge, "type", "bridge")
            ip("-n", self.hub, "link", "set", bridge, "up")
        for host in self.hosts:
            self._add_namespace(host.netns)
            port = self.port(host)
            ip("-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
            ip("-n", self.hub, "link", "set", port, "master", MAIN_BRIDGE, "up")
            ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip("-n", host.netns, "link", "set", "eth0", "up")
            ip("-n", host.netns, "link", "set", "lo", "up")

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)

    @staticmethod
    def port(host: Host) -> str:
        """The hub side of the host's veth pair."""
        return f"h{host.node_id}"

    def _move(self, nodes: list[int], bridge: str) -> None:
        for node in nodes:
            ip("-n", self.hub, "link", "set", self.port(self.hosts[node]), "master", bridge)

    def cut(self, nodes: list[int]) -> None:
        """Put `nodes` on an island: they reach each other, and nobody else reaches them."""
        self._move(nodes, ISLAND_BRIDGE)

    def heal(self, nodes: list[int]) -> None:
        self._move(nodes, MAIN_BRIDGE)

    # -- the members ----------------------------------------------------------------------

    def config_for(self, host: Host) -> dict[str, Any]:
        return {
            "node_id": host.node_id,
            "group": "netns",
            "data_dir": str(host.data_dir),
            "socket": str(host.socket),
            "members": [{"id": h.node_id, "address": f"{h.address}:{PEER_PORT}"} for h in self.hosts],
            "membership": dict(MEMBERSHIP),
            "http": {"address": ""},
            "log": {"level": "info"},
        }

    def write_configs(self) -> None:
        for host in self.hosts:
            host.data_dir.mkdir(parents=True, exist_ok=True)
            host.config_path.write_text(tomli_w.dumps(self.config_for(host)))

    def spawn(self, host: Host) -> None:
        """Start (or restart: same command, config and data_dir) the member in its namespace."""
        assert not host.alive(), f"member {host.node_id} is still running"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
        command = ["ip", "netns", "exec", host.netns, sys.executable, "-m", "derecho"]
        with open(host.log_file, "ab") as log:  # the child keeps its own descriptor
            host.process = subprocess.Popen(
                [*command, "sidecar", "--config", str(host.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.processes.append(host.process)

    async def start(self) -> None:
        self.write_configs()
        for host in self.hosts:
            self.spawn(host)
        await self.wait_ready(self.hosts)

    async def status(self, host: Host) -> dict[str, Any] | None:
        """The member's status document, or None if it does not answer (not up, or gone)."""
        try:
            async with await Client.connect(host.socket, timeout=1.0) as client:
                host.status = await client.status()
        except (DerechoError, OSError):
            return None
        return host.status

    async def wait_ready(self, hosts: list[Host], timeout: float = DEADLINE) -> None:
        """Every one of `hosts` reports ready; fails at once, with its log, if one exits."""
        deadline = time.monotonic() + timeout
        for host in hosts:
            while True:
                if not host.alive():
                    code = host.process.returncode if host.process else None
                    raise AssertionError(f"member {host.node_id} exited with code {code}; log tail:\n{host.tail()}")
                status = await self.status(host)
                if status is not None and status.get("ready"):
                    break
                if time.monotonic() > deadline:
                    waiting = status.get("waiting_for") if status else "its socket"
                    raise AssertionError(
                        f"member {host.node_id} not ready after {timeout:.0f} s (waiting for {waiting}); "
                        f"status {status}; log tail:\n{host.tail()}"
                    )
                await asyncio.sleep(0.05)

    async def wait_exit(self, host: Host, timeout: float = DEADLINE) -> int:
        process = host.process
        assert process is not None

        async def exited() -> bool:
            return process.poll() is not None

        try:
            await wait_until(exited, f"member {host.node_id} to exit", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; status {await self.status(host)}; log tail:\n{host.tail()}") from None
        assert process.returncode is not None
        return process.returncode

    async def connect(self, host: Host) -> Client:
        client = await Client.connect(host.socket, timeout=DEADLINE)
        self.clients.append(client)
        return client

    # -- teardown -------------------------------------------------------------------------

    async def close(self) -> list[str]:
        """Close clients, stop every sidecar this network started, delete its namespaces.

        Everything is attempted even if a step fails; returns what went wrong."""
        problems: list[str] = []
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        running = [p for p in self.processes if p.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
        deadline = time.monotonic() + 10.0
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for process in running:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()
        # A namespace lives on while a process is in it: delete them only once all have exited.
        for name in reversed(self.namespaces):
            try:
                ip("netns", "del", name)
            except IpError as exc:
                problems.append(str(exc))
        shutil.rmtree(self.sockets, ignore_errors=True)
        return problems


@pytest.fixture
async def network(netns_support: None, tmp_path: Path) -> AsyncIterator[Network]:
    """The five hosts with a ready member on each, in one group of five.

    Torn down whatever happened, in the test's event loop (its clients belong to that loop):
    every sidecar it started is stopped and every namespace deleted (see Network.close)."""
    net = Network(tmp_path)
    try:
        net.build()
        await net.start()
        yield net
    finally:
        problems = await net.close()
    assert not problems, "teardown failed:\n" + "\n".join(problems)
