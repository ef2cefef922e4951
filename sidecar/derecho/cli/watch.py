"""What `derecho up` reports while it runs: members exiting, pausing and coming back (through
`derecho signal`, `derecho restart`, `derecho add` in another terminal), and each new view."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from ..localgroup import LocalGroup, LocalMember, process_state, query_status
from .contacts import STATUS_TIMEOUT


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"code {code}, {signal.Signals(-code).name}"
        except ValueError:
            return f"code {code}"
    from ..runtime.sidecar import EXIT_CODES  # the sidecar's own table; loaded only once a member exits

    reasons = {value: reason for reason, value in EXIT_CODES.items()}
    return f"code {code}, {reasons[code]}" if code in reasons else f"code {code}"


class Watcher:
    """Polled by `derecho up`: compares each member's process and the group's view with what it
    saw last time, and prints what changed."""

    def __init__(
        self, group: LocalGroup, members: list[LocalMember], echo: Callable[[str], None], vid: int = -1
    ) -> None:
        self.group = group
        # The members this `derecho up` looks after: the ones it started, and any that appear
        # in the directory later (`derecho add`).
        self.members = list(members)
        self.echo = echo
        self.pids: dict[int, int | None] = {m.node_id: m.current_pid() for m in self.members}
        self.paused: set[int] = set()
        # The newest view reported (-1: none yet; the first poll then only takes note of it).
        self.vid = vid

    @property
    def directory(self) -> Path:
        return self.group.directory

    def running(self) -> list[LocalMember]:
        return [m for m in self.members if self.pids.get(m.node_id) is not None]

    async def poll(self) -> None:
        for member in self.group.discover():
            self.members.append(member)
            self.pids[member.node_id] = None
        for member in self.members:
            self._check_process(member)
        await self._check_view()

    def _check_process(self, member: LocalMember) -> None:
        node = member.node_id
        before = self.pids.get(node)
        pid = member.current_pid()
        if before is not None and pid != before:
            self.paused.discard(node)
            code = member.exit_code(before)
            how = f"({describe_exit(code)})" if code is not None else f"(pid {before}; see {member.log_file})"
            self.echo(
                f"member {node} exited {how}; `derecho restart --dir {self.directory} --member {node}` brings it back"
            )
        if pid is not None and pid != before:
            self.echo(f"member {node} started (pid {pid})")
        self.pids[node] = pid
        if pid is None:
            return
        paused = process_state(pid) == "T"
        if paused and node not in self.paused:
            self.echo(
                f"member {node} is paused (SIGSTOP); "
                f"`derecho signal --dir {self.directory} --member {node} cont` resumes it"
            )
            self.paused.add(node)
        elif not paused and node in self.paused:
            self.echo(f"member {node} resumed")
            self.paused.discard(node)

    async def _check_view(self) -> None:
        """Print the views installed since the last poll, from the first member that answers."""
        for member in self.running():
            if member.node_id in self.paused:
                continue  # it would not answer
            status = await query_status(member, STATUS_TIMEOUT)
            if status is None or not status.get("ready"):
                continue  # a joiner not admitted yet knows no view of the group
            history = status.get("view_history") or [{**status["view"], "reason": "current view"}]
            for entry in history:
                if entry["vid"] > self.vid:
                    if self.vid >= 0:
                        self.echo(f"view {entry['vid']}: members {entry['members']} ({entry.get('reason', '')})")
                    self.vid = entry["vid"]
            return
