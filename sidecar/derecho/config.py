"""The sidecar's configuration: a TOML file, validated in full at start-up.

docs/config.md documents every key. Validation names the key, what was wrong and how to fix
it; unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .core.view import DeliveryMode, ShardLayout, View


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and what to do."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (for example 127.0.0.1:24000)")
    return host.strip("[]"), int(port)


class MemberConfig(_Strict):
    id: Annotated[int, Field(strict=True, ge=0, le=2**16 - 1)]
    address: str
    """Where the member's peer port listens, HOST:PORT."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_address(value)
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_address(self.address)


class ShardConfig(_Strict):
    members: list[Annotated[int, Field(strict=True)]] = Field(min_length=1)
    senders: list[Annotated[int, Field(strict=True)]] | None = Field(default=None, min_length=1)
    mode: DeliveryMode = DeliveryMode.ORDERED


class SubgroupConfig(_Strict):
    name: str = Field(min_length=1)
    shards: list[ShardConfig] = Field(min_length=1)


class MulticastConfig(_Strict):
    window: Annotated[int, Field(strict=True, ge=1, le=1 << 20)] = 4096
    max_inflight_bytes: Annotated[int, Field(strict=True, ge=1)] = 64 << 20
    max_message_size: Annotated[int, Field(strict=True, ge=1, le=1 << 31)] = 64 << 20


class ClientConfig(_Strict):
    hold_bytes: Annotated[int, Field(strict=True, ge=1 << 16)] = 32 << 20
    slow_reader_timeout: Annotated[float, Field(gt=0)] = 10.0
    max_buffered_bytes: Annotated[int, Field(strict=True, ge=1 << 16)] = 1 << 30
    max_pending_bytes: Annotated[int, Field(strict=True, ge=1 << 16)] = 256 << 20

    @model_validator(mode="after")
    def _limits(self) -> ClientConfig:
        if self.max_buffered_bytes <= self.hold_bytes:
            raise ValueError(
                f"max_buffered_bytes ({self.max_buffered_bytes}) must exceed hold_bytes ({self.hold_bytes})"
            )
        return self


class MembershipConfig(_Strict):
    heartbeat_interval: Annotated[float, Field(gt=0, le=10)] = 0.05
    """Seconds between heartbeats to every peer."""
    suspicion_timeout: Annotated[float, Field(gt=0, le=600)] = 0.5
    """A peer silent this long (seconds) is suspected and removed by a view change."""
    join: list[str] = []
    """Peer addresses (HOST:PORT) of members of a running group: this member joins that group
    through them instead of forming one from `members`. A member whose data_dir holds a saved
    view rejoins on its own (through these, or else the other `members`)."""
    join_timeout: Annotated[float, Field(gt=0)] = 120.0
    """Seconds a joiner keeps asking to be admitted, and then waits for its shards' state,
    before it gives up (exit code 7)."""

    @field_validator("join")
    @classmethod
    def _join(cls, value: list[str]) -> list[str]:
        for address in value:
            parse_address(address)
        return value

    @model_validator(mode="after")
    def _timeouts(self) -> MembershipConfig:
        if self.suspicion_timeout < 2 * self.heartbeat_interval:
            raise ValueError(
                f"suspicion_timeout ({self.suspicion_timeout}) must be at least twice heartbeat_interval "
                f"({self.heartbeat_interval}), or healthy members get suspected"
            )
        return self


class StateConfig(_Strict):
    history_bytes: Annotated[int, Field(strict=True, ge=0)] = 256 << 20
    """Memory each member spends per ordered shard on the delivered history (payloads plus about
    400 bytes per message): the state a joiner receives and what a replaying application reads
    first. Past it the oldest are dropped (and a joiner is told its history is incomplete)."""
    snapshot_timeout: Annotated[float, Field(gt=0)] = 30.0
    """Seconds to wait for an application's snapshot for a joiner before sending the delivered
    history instead."""


class HttpConfig(_Strict):
    address: str | None = "127.0.0.1:0"
    """HOST:PORT for /healthz, /readyz, /status, /metrics; port 0 picks a free one; empty disables."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value:
            parse_address(value)
        return value or None


LogLevel = Literal["debug", "info", "warning", "error"]


class LogConfig(_Strict):
    level: LogLevel = "info"
    format: Literal["text", "json"] = "text"
    modules: dict[str, LogLevel] = {}
    """Levels per logger, e.g. {"derecho.runtime.peers" = "debug"}."""


class SidecarConfig(_Strict):
    node_id: Annotated[int, Field(strict=True, ge=0, le=2**16 - 1)]
    group: str = Field(default="derecho", min_length=1)
    data_dir: Path
    socket: Path | None = None
    members: list[MemberConfig] = Field(min_length=1)
    subgroups: list[SubgroupConfig] | None = None
    multicast: MulticastConfig = MulticastConfig()
    client: ClientConfig = ClientConfig()
    membership: MembershipConfig = MembershipConfig()
    state: StateConfig = StateConfig()
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _consistent(self) -> SidecarConfig:
        ids = [m.id for m in self.members]
        if len(set(ids)) != len(ids):
            raise ValueError(f"members: node ids must be unique, got {ids}")
        if self.node_id not in ids:
            raise ValueError(f"node_id {self.node_id} is not among members {ids}; add it or fix node_id")
        names = [sg.name for sg in self.subgroups or []]
        if len(set(names)) != len(names):
            raise ValueError(f"subgroups: names must be unique, got {names}")
        for sg in self.subgroups or []:
            for shard in sg.shards:
                for node in shard.members + (shard.senders or []):
                    if node not in ids:
                        raise ValueError(f"subgroup {sg.name!r} names node {node}, which is not in members {ids}")
        try:
            self.initial_view()
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def socket_path(self) -> Path:
        return self.socket or self.data_dir / "derecho.sock"

    @property
    def me(self) -> MemberConfig:
        return next(m for m in self.members if m.id == self.node_id)

    def initial_view(self) -> View:
        members = [m.id for m in self.members]
        if not self.subgroups:
            return View.single_shard(members)
        layout = tuple(
            tuple(
                ShardLayout(tuple(s.members), tuple(s.senders if s.senders is not None else s.members), s.mode)
                for s in sg.shards
            )
            for sg in self.subgroups
        )
        return View(0, tuple(members), layout)


def load_config(path: str | Path) -> SidecarConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass --config with the path of a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}; fix the syntax at that line") from None
    return parse_config(raw, source=str(path))


def parse_config(raw: dict[str, Any], source: str = "config") -> SidecarConfig:
    try:
        return SidecarConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source)) from None


def _explain(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s); see docs/config.md for every key"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            lines.append(f"  {key}: unknown key; remove it or check its spelling against docs/config.md")
        elif kind == "missing":
            lines.append(f"  {key}: required key is missing; add it")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {key}: {message}{shown}")
    return "\n".join(lines)
