"""`derecho`: run members, a local group, the demo, and look at a member's status."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="derecho")
def cli() -> None:
    """Derecho-style atomic multicast and replication: sidecars, local groups, status."""


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="TOML config file")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None, help="overrides log.format")
@click.option(
    "--join",
    "join",
    multiple=True,
    metavar="HOST:PORT",
    help="join the running group through this member's peer address (repeatable; overrides membership.join)",
)
def sidecar(config_path: Path, log_format: str | None, join: tuple[str, ...]) -> None:
    """Run one member (see docs/config.md for the file format).

    It forms the group of `members` with them, or joins a running group: with --join, with
    membership.join, or when its data_dir holds the view of a group it was in (a restart).
    """
    from ..config import ConfigError, load_config
    from ..logs import setup_logging

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        click.echo(f"derecho sidecar: bad configuration\n{exc}", err=True)
        sys.exit(2)
    from ..config import parse_address

    for address in join:
        try:
            parse_address(address)
        except ValueError as exc:
            click.echo(f"derecho sidecar: --join {exc}", err=True)
            sys.exit(2)
    setup_logging(config.log.level, log_format or config.log.format, config.node_id, config.log.modules)
    from ..runtime.sidecar import run
    from ..tracing import TracingConfigError

    try:
        code = run(config, list(join) or None)
    except TracingConfigError as exc:
        click.echo(f"derecho sidecar: bad tracing configuration: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"derecho sidecar: cannot start member {config.node_id}: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)


@cli.command()
@click.option("--socket", "socket_path", required=True, type=click.Path(path_type=Path), help="member's socket")
@click.option("--json", "as_json", is_flag=True, help="print the status document as JSON")
def status(socket_path: Path, as_json: bool) -> None:
    """Print a member's view and frontiers."""
    from ..client import Client, DerechoError

    async def fetch() -> dict:
        async with await Client.connect(socket_path, timeout=3.0) as client:
            return await client.status()

    try:
        doc = asyncio.run(fetch())
    except DerechoError as exc:
        click.echo(f"derecho status: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    state = "ready" if doc["ready"] else f"not ready (waiting for {doc['waiting_for']})"
    click.echo(f"member {doc['node_id']} of group {doc['group']!r}: {state}")
    click.echo(f"  view {doc['view']['vid']}: members {doc['view']['members']}")
    history = doc.get("view_history") or []
    if history:
        click.echo(f"  how it came: {history[-1]['reason']}")
    for shard, f in doc["shards"].items():
        fields = ", ".join(f"{k} {v}" for k, v in f.items())
        click.echo(f"  shard {shard}: {fields}")
    for shard, kept in (doc.get("history") or {}).items():
        whole = "complete" if kept["complete"] else f"from version {kept['first_version']}"
        click.echo(f"  history {shard}: {kept['messages']} messages, {kept['bytes']} bytes ({whole})")
    peers = ", ".join(f"{k}: {v}" for k, v in doc["peers"].items()) or "none"
    click.echo(f"  peers: {peers}")
    click.echo(f"  apps connected: {doc['clients']}; http: {doc['http']}; socket: {doc['socket']}")


from .demo import demo  # noqa: E402


@cli.command()
@click.option("--socket", "socket_path", required=True, type=click.Path(path_type=Path), help="member's socket")
def leave(socket_path: Path) -> None:
    """Make a member leave its group through a view change; the others go on without it."""
    from ..client import Client, DerechoError

    async def ask() -> int:
        async with await Client.connect(socket_path, timeout=3.0) as client:
            node = (await client.status())["node_id"]
            await client.ask_member_to_leave()
            return node

    try:
        node = asyncio.run(ask())
    except DerechoError as exc:
        click.echo(f"derecho leave: {exc}", err=True)
        sys.exit(1)
    click.echo(f"member {node} is leaving the group")


from .add import add  # noqa: E402
from .restart import restart  # noqa: E402
from .signal_member import signal_member  # noqa: E402
from .up import up  # noqa: E402

cli.add_command(up)
cli.add_command(signal_member)
cli.add_command(restart)
cli.add_command(add)
cli.add_command(demo)


def main() -> None:
    cli()
