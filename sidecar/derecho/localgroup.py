"""A group of sidecar processes on this machine (127.0.0.1): `derecho up`, the demo, and tests.

Member i lives in DIR/member-<i>/ with its config (sidecar.toml), socket (derecho.sock), PID
file (sidecar.pid, written by the sidecar) and log (sidecar.log).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .client import Client, ConnectionLostError

MAX_MEMBERS = 64


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel says are free now (held open together so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class LocalMember:
    node_id: int
    directory: Path
    peer_port: int
    process: subprocess.Popen[bytes] | None = None
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.directory / "sidecar.toml"

    @property
    def socket(self) -> Path:
        return self.directory / "derecho.sock"

    @property
    def pid_file(self) -> Path:
        return self.directory / "sidecar.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "sidecar.log"

    @property
    def http(self) -> str | None:
        return self.status.get("http")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalGroupError(RuntimeError):
    pass


class LocalGroup:
    def __init__(
        self,
        directory: str | Path,
        members: int = 3,
        *,
        group: str = "local",
        settings: dict[str, Any] | None = None,
        log_level: str = "info",
        env: dict[str, str] | None = None,
    ) -> None:
        if not 1 <= members <= MAX_MEMBERS:
            raise LocalGroupError(f"--members must be between 1 and {MAX_MEMBERS}, got {members}")
        self.directory = Path(directory).resolve()
        self.group = group
        self.settings = settings or {}
        self.log_level = log_level
        # Extra environment for every member (OTEL_* for tracing, for example).
        self.env = env or {}
        ports = free_ports(members)
        self.members = [LocalMember(i, self.directory / f"member-{i}", ports[i]) for i in range(members)]

    def config_for(self, member: LocalMember) -> dict[str, Any]:
        config: dict[str, Any] = {
            "node_id": member.node_id,
            "group": self.group,
            "data_dir": str(member.directory),
            "members": [{"id": m.node_id, "address": f"127.0.0.1:{m.peer_port}"} for m in self.members],
            "log": {"level": self.log_level},
        }
        for section, values in self.settings.items():
            if isinstance(values, dict):
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        return config

    def write_configs(self) -> None:
        for member in self.members:
            member.directory.mkdir(parents=True, exist_ok=True)
            member.config_path.write_text(tomli_w.dumps(self.config_for(member)))

    def spawn(self, member: LocalMember) -> None:
        with contextlib.suppress(FileNotFoundError):
            member.socket.unlink()
        log = open(member.log_file, "ab")  # noqa: SIM115 - the child owns it from here
        member.process = subprocess.Popen(
            [sys.executable, "-m", "derecho", "sidecar", "--config", str(member.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env, **self.member_env(member)},
            start_new_session=True,  # Ctrl-C goes to `derecho up`, which stops members in order
        )
        log.close()

    def member_env(self, member: LocalMember) -> dict[str, str]:
        if "OTEL_TRACES_EXPORTER" in self.env and "OTEL_SERVICE_NAME" not in self.env:
            return {"OTEL_SERVICE_NAME": f"derecho-member-{member.node_id}"}
        return {}

    async def start(self, timeout: float = 30.0) -> None:
        self.write_configs()
        for member in self.members:
            self.spawn(member)
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 30.0, members: list[LocalMember] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for member in members or self.members:
            while True:
                if not member.alive():
                    raise LocalGroupError(
                        f"member {member.node_id} exited with code {member.process and member.process.returncode}; "
                        f"see {member.log_file}:\n{self.tail(member)}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LocalGroupError(
                        f"member {member.node_id} not ready after {timeout:.0f} s "
                        f"(waiting for {member.status.get('waiting_for', 'its socket')}); see {member.log_file}"
                    )
                try:
                    client = await Client.connect(member.socket, timeout=min(remaining, 1.0))
                    try:
                        member.status = await client.status()
                    finally:
                        await client.close()
                except ConnectionLostError:
                    continue
                if member.status.get("ready"):
                    break
                await asyncio.sleep(0.02)

    def tail(self, member: LocalMember, lines: int = 20) -> str:
        try:
            return "\n".join(member.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def signal(self, node_id: int, sig: int) -> None:
        member = self.members[node_id]
        if member.alive():
            assert member.process is not None
            os.kill(member.process.pid, sig)

    async def stop(self, timeout: float = 10.0) -> dict[int, int | None]:
        """SIGTERM every member, then SIGKILL whoever has not exited by `timeout`."""
        for member in self.members:
            if member.alive():
                assert member.process is not None
                with contextlib.suppress(ProcessLookupError):
                    member.process.send_signal(signal.SIGCONT)
                    member.process.terminate()
        deadline = time.monotonic() + timeout
        for member in self.members:
            while member.alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if member.alive():
                assert member.process is not None
                member.process.kill()
                member.process.wait()
        return {m.node_id: m.process.returncode if m.process else None for m in self.members}
