"""Watching view changes in a local group: `derecho up` reporting, `derecho restart`, `derecho add`
and `derecho up --join`, as a user runs them.

The end-to-end tests at the bottom need the sidecar runtime to admit joiners; the others do not.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import tomllib
from pathlib import Path

import pytest
from up_process import JOIN_DEADLINE, Up, run, running, status, view_members, wait_until

from derecho.localgroup import LocalGroup


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped): what a killed member leaves in its PID file."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def laid_out(directory: Path, members: int = 3) -> LocalGroup:
    """A group's directory as `derecho up` writes it, with no member running."""
    group = LocalGroup(directory, members)
    group.write_configs()
    return group


def peer_address(member_dir: Path) -> str:
    config = tomllib.loads((member_dir / "sidecar.toml").read_text())
    return next(m["address"] for m in config["members"] if m["id"] == config["node_id"])


def views(command: list[str], directory: Path, ids: list[int]) -> list[tuple[int, list[int]] | None]:
    """(vid, sorted members) of each member's view, None where it does not answer or is not ready."""
    out: list[tuple[int, list[int]] | None] = []
    for i in ids:
        doc = status(command, directory / f"member-{i}")
        out.append((doc["view"]["vid"], sorted(doc["view"]["members"])) if doc and doc["ready"] else None)
    return out


def one_view(command: list[str], directory: Path, ids: list[int]) -> bool:
    """Every member in `ids` is ready in the same view, whose members are exactly `ids`."""
    seen = views(command, directory, ids)
    return all(v is not None for v in seen) and len(set(map(repr, seen))) == 1 and seen[0][1] == ids


# -- derecho restart / derecho add: errors that need no running group -------------------------------


def test_restart_without_a_group_directory_says_so(derecho_command: list[str], tmp_path: Path):
    result = run(derecho_command, "restart", "--dir", str(tmp_path / "nowhere"), "--member", "1", timeout=30)
    assert result.returncode == 1
    assert f"no local group in {tmp_path / 'nowhere'}: the directory does not exist" in result.stderr
    assert "derecho up --dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_restart_in_a_directory_without_members_says_so(derecho_command: list[str], tmp_path: Path):
    result = run(derecho_command, "restart", "--dir", str(tmp_path), "--member", "0", timeout=30)
    assert result.returncode == 1
    assert "holds no member-<i>/sidecar.toml" in result.stderr


@pytest.mark.parametrize("args", [[], ["--member", "-1"], ["--member", "two"]], ids=["missing", "negative", "word"])
def test_restart_needs_a_member_number(derecho_command: list[str], tmp_path: Path, args: list[str]):
    result = run(derecho_command, "restart", "--dir", str(tmp_path), *args, timeout=30)
    assert result.returncode == 2
    assert "--member" in result.stderr


def test_restart_of_a_member_not_in_the_group_names_the_members(derecho_command: list[str], tmp_path: Path):
    laid_out(tmp_path / "group")
    result = run(derecho_command, "restart", "--dir", str(tmp_path / "group"), "--member", "7", timeout=30)
    assert result.returncode == 1
    assert "no member 7 in" in result.stderr
    assert "its members are [0, 1, 2]" in result.stderr


def test_restart_removes_a_stale_pid_file_and_needs_a_running_member(derecho_command: list[str], tmp_path: Path):
    group = laid_out(tmp_path / "group")
    pid_file = group.members[2].pid_file
    pid = dead_pid()
    pid_file.write_text(f"{pid}\n")
    result = run(derecho_command, "restart", "--dir", str(group.directory), "--member", "2", timeout=30)
    assert result.returncode == 1
    assert f"removing the stale {pid_file} (it names pid {pid}, which is not running)" in result.stdout
    assert not pid_file.exists()
    assert "no other member of the group" in result.stderr
    assert "is running and answering, so member 2 has no group to join" in result.stderr
    assert "Traceback" not in result.stderr


def test_restart_says_when_a_pid_file_holds_no_pid(derecho_command: list[str], tmp_path: Path):
    group = laid_out(tmp_path / "group")
    group.members[1].pid_file.write_text("garbage\n")
    result = run(derecho_command, "restart", "--dir", str(group.directory), "--member", "1", timeout=30)
    assert result.returncode == 1
    assert "(it does not hold a process id)" in result.stdout


def test_restart_refuses_a_running_member(derecho_command: list[str], local_group: LocalGroup):
    member = local_group.members[1]
    pid = member.current_pid()
    result = run(derecho_command, "restart", "--dir", str(local_group.directory), "--member", "1", timeout=30)
    assert result.returncode == 1
    assert f"member 1 is still running (pid {pid})" in result.stderr
    assert f"derecho signal --dir {local_group.directory} --member 1 kill" in result.stderr
    assert "--force" in result.stderr
    assert member.current_pid() == pid and running(pid)


def test_add_without_a_group_directory_says_so(derecho_command: list[str], tmp_path: Path):
    result = run(derecho_command, "add", "--dir", str(tmp_path / "nowhere"), timeout=30)
    assert result.returncode == 1
    assert "no local group in" in result.stderr


def test_add_needs_a_running_member(derecho_command: list[str], tmp_path: Path):
    group = laid_out(tmp_path / "group")
    result = run(derecho_command, "add", "--dir", str(group.directory), timeout=30)
    assert result.returncode == 1
    assert "no member of the group in" in result.stderr
    assert "so a new member has no group to join" in result.stderr
    assert not (group.directory / "member-3").exists()  # refused before laying anything out


@pytest.mark.parametrize("count", ["0", "65", "many"])
def test_add_refuses_a_bad_count(derecho_command: list[str], tmp_path: Path, count: str):
    result = run(derecho_command, "add", "--dir", str(tmp_path), "--count", count, timeout=30)
    assert result.returncode == 2
    assert "--count" in result.stderr


# -- derecho up: what it refuses, and what it does with a used directory ----------------------------


@pytest.mark.parametrize("address", ["nowhere", "127.0.0.1:", ":24000", "127.0.0.1:99999"])
def test_up_join_refuses_a_bad_address(derecho_command: list[str], tmp_path: Path, address: str):
    result = run(derecho_command, "up", "--dir", str(tmp_path / "g"), "--join", address, timeout=30)
    assert result.returncode == 2
    assert f"{address!r} is not HOST:PORT" in result.stderr
    assert not (tmp_path / "g").exists()


def test_up_join_into_an_empty_directory_needs_first_id(derecho_command: list[str], tmp_path: Path):
    result = run(derecho_command, "up", "--dir", str(tmp_path / "g"), "--join", "127.0.0.1:24000", timeout=30)
    assert result.returncode == 1
    assert "pass --first-id" in result.stderr
    assert not (tmp_path / "g").exists()


def test_up_refuses_a_directory_whose_group_runs(derecho_command: list[str], local_group: LocalGroup):
    pids = [m.current_pid() for m in local_group.members]
    result = run(derecho_command, "up", "--dir", str(local_group.directory), timeout=30)
    assert result.returncode == 1
    assert f"members 0 (pid {pids[0]}), 1 (pid {pids[1]}), 2 (pid {pids[2]}) are still running" in result.stderr
    assert "stop that group first" in result.stderr
    assert all(running(pid) for pid in pids)


async def test_up_on_a_used_directory_forms_a_new_group(derecho_command: list[str], tmp_path: Path):
    directory = tmp_path / "group"
    old = laid_out(directory, 4)  # a previous run that `derecho add` grew to four members
    for member in old.members[:2]:
        member.saved_state.mkdir()
        (member.saved_state / "view.json").write_text('{"vid": 7, "members": [0, 1, 3]}')
    up = await Up.start(derecho_command, directory, 3)
    try:
        lines = await up.read_until("Ctrl-C stops every member.")
        assert f"removed member-3: left by a previous run in {directory}, and not in the new group" in lines
        assert (
            "forming a new group: cleared the saved views of a previous run (member-0/membership, member-1/membership)"
            in lines
        )
        assert "view 0: members [0, 1, 2]" in lines
        assert not (directory / "member-3").exists()
        await up.terminate()
    finally:
        await up.cleanup([])


# -- derecho up: reporting what happens to the members ------------------------------------------------


async def test_up_reports_a_pause_a_view_change_and_a_crash_and_keeps_running(
    derecho_command: list[str], tmp_path: Path
):
    directory = tmp_path / "group"
    up = await Up.start(derecho_command, directory, 3)
    pids: list[int] = []
    try:
        await up.read_until("Ctrl-C stops every member.")
        pids = up.member_pids()
        since = up.mark()
        assert run(derecho_command, "signal", "--dir", str(directory), "--member", "2", "stop").returncode == 0
        await up.expect(
            re.escape(f"member 2 is paused (SIGSTOP); `derecho signal --dir {directory} --member 2 cont` resumes it"),
            since,
        )
        # The survivors suspect the silent member and install a view without it.
        await up.expect(r"^view 1: members \[0, 1\] \(.*2.*\)$", since)
        since = up.mark()
        assert run(derecho_command, "signal", "--dir", str(directory), "--member", "2", "kill").returncode == 0
        await up.expect(
            re.escape(
                f"member 2 exited (code -9, SIGKILL); `derecho restart --dir {directory} --member 2` brings it back"
            ),
            since,
        )
        await asyncio.sleep(1.0)  # a few more polls: `up` carries on
        assert up.process.returncode is None, "\n".join(up.lines)

        await up.terminate("member 0 exit 0, member 1 exit 0")
        assert not any(running(pid) for pid in pids)
    finally:
        await up.cleanup(pids)


async def test_up_exits_when_no_member_is_left(derecho_command: list[str], tmp_path: Path):
    directory = tmp_path / "group"
    up = await Up.start(derecho_command, directory, 1)
    pids: list[int] = []
    try:
        await up.read_until("Ctrl-C stops every member.")
        pids = up.member_pids()
        os.kill(pids[0], signal.SIGKILL)
        code, lines = await up.finish()  # it notices on its own, no signal to `up`
        assert any(line.startswith("member 0 exited (code -9, SIGKILL)") for line in lines), lines
        assert any(line.startswith("no member is running any more") for line in lines), lines
        assert code == 1
    finally:
        await up.cleanup(pids)


# -- end to end: members come back and join (needs joins in the sidecar runtime) ----------------------


async def test_a_killed_member_restarts_and_a_new_member_joins(derecho_command: list[str], tmp_path: Path):
    directory = tmp_path / "group"
    d = str(directory)
    up = await Up.start(derecho_command, directory, 3)
    pids: list[int] = []
    try:
        await up.read_until("Ctrl-C stops every member.")
        pids = up.member_pids()

        since = up.mark()
        assert run(derecho_command, "signal", "--dir", d, "--member", "2", "kill").returncode == 0
        await up.expect(re.escape(f"member 2 exited (code -9, SIGKILL); `derecho restart --dir {d} --member 2`"), since)
        await up.expect_view([0, 1], since)
        wait_until(lambda: one_view(derecho_command, directory, [0, 1]), "the survivors' view of members 0 and 1")

        since = up.mark()
        result = await asyncio.to_thread(
            run, derecho_command, "restart", "--dir", d, "--member", "2", timeout=JOIN_DEADLINE
        )
        pids += up.member_pids()
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"removing the stale {directory / 'member-2' / 'sidecar.pid'}" in result.stdout
        assert re.search(r"^member 2 rejoined the group in view \d+: members \[0, 1, 2\]$", result.stdout, re.M), (
            result.stdout
        )
        wait_until(lambda: one_view(derecho_command, directory, [0, 1, 2]), "members 0, 1, 2 in one view")
        await up.expect(r"^member 2 started \(pid \d+\)", since)
        await up.expect_view([0, 1, 2], since)

        since = up.mark()
        result = await asyncio.to_thread(run, derecho_command, "add", "--dir", d, timeout=JOIN_DEADLINE)
        pids += up.member_pids()
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"^member 3 joined the group in view \d+: members \[0, 1, 2, 3\]$", result.stdout, re.M), (
            result.stdout
        )
        joined = tomllib.loads((directory / "member-3" / "sidecar.toml").read_text())
        assert sorted(joined["membership"]["join"]) == sorted(peer_address(directory / f"member-{i}") for i in range(3))
        wait_until(lambda: one_view(derecho_command, directory, [0, 1, 2, 3]), "members 0 to 3 in one view")
        await up.expect(r"^member 3 started \(pid \d+\)", since)
        await up.expect_view([0, 1, 2, 3], since)

        # `up` started 0 and 1 (their exit codes are its to see), `restart` and `add` the others.
        await up.terminate("member 0 exit 0, member 1 exit 0, member 2 stopped, member 3 stopped")
        assert not any(running(pid) for pid in pids)
    finally:
        await up.cleanup(pids)


async def test_up_join_adds_members_to_a_running_group(derecho_command: list[str], tmp_path: Path):
    main = await Up.start(derecho_command, tmp_path / "group", 3)
    joiners: Up | None = None
    pids: list[int] = []
    try:
        await main.read_until("Ctrl-C stops every member.")
        pids = main.member_pids()
        address = peer_address(tmp_path / "group" / "member-0")
        since = main.mark()
        joiners = await Up.start(derecho_command, tmp_path / "more", 2, "--join", address, "--first-id", "3")
        lines = await joiners.read_until("Ctrl-C stops every member.", timeout=JOIN_DEADLINE)
        pids += joiners.member_pids()
        assert f"members 3, 4 joined the group through {address}; they run in {tmp_path / 'more'}" in lines
        assert view_members(lines[-3]) == [0, 1, 2, 3, 4], lines  # the view they joined
        await main.expect_view([0, 1, 2, 3, 4], since)

        since = main.mark()
        await joiners.terminate("member 3 exit 0, member 4 exit 0")
        await main.expect_view([0, 1, 2], since)  # they left; the group goes on
        assert main.process.returncode is None

        await main.terminate("member 0 exit 0, member 1 exit 0, member 2 exit 0")
        assert not any(running(pid) for pid in pids)
    finally:
        if joiners is not None:
            await joiners.cleanup(pids)
        await main.cleanup(pids)
