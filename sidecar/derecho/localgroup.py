"""A group of sidecar processes on this machine (127.0.0.1): `derecho up`, the demo, and tests.

Member i lives in DIR/member-<i>/ with its config (sidecar.toml), socket (derecho.sock), PID
file (sidecar.pid, written by the sidecar) and log (sidecar.log). DIR/local-group.json keeps
the extra environment the members run with, so a member restarted or added later by another
`derecho` command runs like the others.

Members are found through their PID files as well as through the processes started here:
`derecho restart` and `derecho add` start members that `derecho up` did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .client import Client, DerechoError

MAX_MEMBERS = 64
MEMBER_DIR = re.compile(r"member-(\d+)")
ENV_FILE = "local-group.json"


def free_ports(count: int, host: str = "127.0.0.1", avoid: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Ports the kernel says are free now (held open together so they are distinct), none of
    them in `avoid` (the ports of members that are down now but may be restarted)."""
    socks = []
    try:
        while len(socks) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            if s.getsockname()[1] in avoid:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def process_state(pid: int) -> str | None:
    """The state letter of a live process (R, S, T for stopped by SIGSTOP, ...), "?" where there is
    no /proc to ask, or None if there is no such process or it is a zombie (dead, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, as another user
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return "?"
    # A PID file outlives a killed sidecar, and the kernel may give its pid to another program.
    if state == "Z" or b"derecho" not in cmdline:
        return None
    return state


def read_pid(pid_file: Path) -> int | None:
    """The process id in a PID file, or None if there is no file or it does not hold a number."""
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


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

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    def current_pid(self) -> int | None:
        """The pid of this member's running sidecar, whoever started it: the process started
        here, or the one its PID file names (started by `derecho restart` or `derecho add`)."""
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        pid = read_pid(self.pid_file)
        return pid if pid is not None and process_state(pid) is not None else None

    def alive(self) -> bool:
        return self.current_pid() is not None

    @property
    def saved_state(self) -> Path:
        """The saved view and ragged trims: a member that finds them on start rejoins its group."""
        return self.directory / "membership"

    def exit_code(self, pid: int) -> int | None:
        """How process `pid` of this member ended, if it was started here (else nobody here knows)."""
        if self.process is not None and self.process.pid == pid:
            return self.process.poll()
        return None


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
        first_id: int = 0,
        join: list[str] | None = None,
        known: list[LocalMember] | None = None,
    ) -> None:
        """`members` new members with ids from `first_id`. With `join` (peer addresses of running
        members) they join that group instead of forming one; `known` are members already in
        the directory, listed in every new member's config and never started here."""
        if not 0 <= members <= MAX_MEMBERS:  # 0: `open` lays out no new member
            raise LocalGroupError(f"--members must be between 1 and {MAX_MEMBERS}, got {members}")
        self.directory = Path(directory).resolve()
        self.group = group
        self.settings = settings or {}
        self.log_level = log_level
        # Extra environment for every member (OTEL_* for tracing, for example).
        self.env = env or {}
        self.join = join or []
        known = known or []
        ports = free_ports(members, avoid={m.peer_port for m in known})
        fresh = [LocalMember(first_id + i, self.directory / f"member-{first_id + i}", ports[i]) for i in range(members)]
        self.members = sorted([*known, *fresh], key=lambda m: m.node_id)
        self.new_members = fresh

    @classmethod
    def open(cls, directory: str | Path) -> LocalGroup:
        """The group a previous `derecho up` (or `derecho add`) laid out in `directory`."""
        directory = Path(directory).resolve()
        members, template = read_members(directory)
        if not members:
            where = "does not exist" if not directory.is_dir() else "holds no member-<i>/sidecar.toml"
            raise LocalGroupError(
                f"no local group in {directory}: the directory {where}; start one with `derecho up --dir {directory}`"
            )
        settings = {k: v for k, v in template.items() if k not in PER_MEMBER_KEYS}
        if isinstance(settings.get("membership"), dict):
            settings["membership"] = {k: v for k, v in settings["membership"].items() if k != "join"}
        level = template.get("log", {}).get("level", "info")
        group = cls(directory, 0, group=template.get("group", "local"), settings=settings, log_level=level)
        group.members = members
        group.env = read_env(directory)
        return group

    def member(self, node_id: int) -> LocalMember:
        for m in self.members:
            if m.node_id == node_id:
                return m
        ids = [m.node_id for m in self.members]
        raise LocalGroupError(f"no member {node_id} in {self.directory}: its members are {ids}")

    def discover(self) -> list[LocalMember]:
        """Members that appeared in the directory since (added by `derecho add`); now tracked here."""
        ids = {m.node_id for m in self.members}
        # Not strict: a member whose config is still being written is found at the next look.
        found, _ = read_members(self.directory, strict=False)
        new = [m for m in found if m.node_id not in ids]
        self.members = sorted([*self.members, *new], key=lambda m: m.node_id)
        return new

    def config_for(self, member: LocalMember) -> dict[str, Any]:
        config: dict[str, Any] = {
            "node_id": member.node_id,
            "group": self.group,
            "data_dir": str(member.directory),
            "members": [{"id": m.node_id, "address": m.address} for m in self.members],
            "log": {"level": self.log_level},
        }
        for section, values in self.settings.items():
            if isinstance(values, dict):
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        if self.join:
            config.setdefault("membership", {})["join"] = list(self.join)
        return config

    def write_configs(self) -> None:
        for member in self.new_members:
            member.directory.mkdir(parents=True, exist_ok=True)
            write_config(member, self.config_for(member))

    def save_env(self) -> None:
        """Keep the members' environment for `derecho restart` and `derecho add`, which may run
        in another terminal: the extra variables, and the OTEL_* ones the members inherit here."""
        self.directory.mkdir(parents=True, exist_ok=True)
        inherited = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
        (self.directory / ENV_FILE).write_text(json.dumps({"env": {**inherited, **self.env}}, indent=2) + "\n")

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
        for member in self.new_members:
            self.spawn(member)
        await self.wait_ready(timeout, self.new_members)

    async def wait_ready(self, timeout: float = 30.0, members: list[LocalMember] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for member in members or self.members:
            member.status = {}
            while True:
                if not member.alive():
                    code = member.process.poll() if member.process else None
                    raise LocalGroupError(
                        f"member {member.node_id} exited with code {code}; see {member.log_file}:\n{self.tail(member)}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LocalGroupError(
                        f"member {member.node_id} not ready after {timeout:.0f} s "
                        f"(waiting for {member.status.get('waiting_for') or 'its socket'}); see {member.log_file}, "
                        f"which ends:\n{self.tail(member, 5)}"
                    )
                status = await query_status(member, min(remaining, 2.0))
                if status is None:
                    await asyncio.sleep(0.05)
                    continue
                member.status = status
                if status.get("ready"):
                    break
                await asyncio.sleep(0.02)

    def tail(self, member: LocalMember, lines: int = 20) -> str:
        try:
            return "\n".join(member.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def signal(self, node_id: int, sig: int) -> None:
        pid = self.member(node_id).current_pid()
        if pid is not None:
            os.kill(pid, sig)

    async def stop(self, timeout: float = 10.0, members: list[LocalMember] | None = None) -> dict[int, int | None]:
        """SIGTERM every running member (of `members`, default all), then SIGKILL whoever has not
        exited by `timeout`.

        Returns each member's exit code: None for one never started, or started by another
        command (`derecho restart`, `derecho add`), whose exit code only that command could see.
        """
        members = self.members if members is None else members
        running = {m.node_id: pid for m in members if (pid := m.current_pid()) is not None}
        for pid in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # a paused member cannot handle SIGTERM
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for member in members:
            pid = running.get(member.node_id)
            if pid is None:
                continue
            # The process itself, not its PID file: a sidecar removes the file just before it exits.
            while _running(member, pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if _running(member, pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                if member.process is not None and member.process.pid == pid:
                    member.process.wait()
                while _running(member, pid) and time.monotonic() < deadline + timeout:
                    await asyncio.sleep(0.02)
        codes: dict[int, int | None] = {}
        for m in members:
            started_here = m.process is not None and running.get(m.node_id, m.process.pid) == m.process.pid
            codes[m.node_id] = m.process.poll() if started_here and m.process else None
        return codes


def _running(member: LocalMember, pid: int) -> bool:
    if member.process is not None and member.process.pid == pid:
        return member.process.poll() is None
    return process_state(pid) is not None


PER_MEMBER_KEYS = ("node_id", "data_dir", "socket", "members", "group", "log")


def member_dirs(directory: Path) -> list[LocalMember]:
    """Every DIR/member-<i>/ by its name alone (peer port unknown: 0), sorted by id: enough to
    find running members and saved state, even where a config is missing or broken."""
    if not directory.is_dir():
        return []
    found = [
        LocalMember(int(match[1]), path, 0)
        for path in directory.iterdir()
        if (match := MEMBER_DIR.fullmatch(path.name)) and path.is_dir()
    ]
    return sorted(found, key=lambda m: m.node_id)


def write_config(member: LocalMember, config: dict[str, Any]) -> None:
    """Written whole, then renamed into place: `derecho up` may be reading the directory."""
    tmp = member.config_path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(config))
    tmp.replace(member.config_path)


def read_members(directory: Path, strict: bool = True) -> tuple[list[LocalMember], dict[str, Any]]:
    """The members laid out in `directory` (by their sidecar.toml), and the config of the lowest
    numbered one: the settings a member added later copies. Not `strict`: skip bad configs."""
    members: list[LocalMember] = []
    template: dict[str, Any] = {}
    for member in member_dirs(directory):
        if not member.config_path.is_file():
            continue
        try:
            config = tomllib.loads(member.config_path.read_text())
            address = next(m["address"] for m in config["members"] if m["id"] == member.node_id)
            member.peer_port = int(address.rsplit(":", 1)[1])
        except (tomllib.TOMLDecodeError, KeyError, StopIteration, ValueError, TypeError) as exc:
            if not strict:
                continue
            raise LocalGroupError(
                f"{member.config_path} is not a config `derecho up` wrote for member {member.node_id} ({exc!r}); "
                f"remove {member.directory}, or start a new group with `derecho up --dir {directory}`"
            ) from None
        members.append(member)
        template = template or config
    return members, template


def read_env(directory: Path) -> dict[str, str]:
    try:
        env = json.loads((directory / ENV_FILE).read_text()).get("env", {})
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}


async def query_status(member: LocalMember, timeout: float) -> dict[str, Any] | None:
    """The member's status document, or None if it does not answer within `timeout` (not
    started yet, dead, or paused by SIGSTOP: its socket still accepts, but nobody replies)."""
    try:
        async with asyncio.timeout(timeout):
            client = await Client.connect(member.socket, timeout=timeout)
            try:
                return await client.status()
            finally:
                await client.close()
    except (DerechoError, TimeoutError, OSError):
        return None
