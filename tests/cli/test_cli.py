"""The `derecho` command as a user runs it: real subprocesses, real sidecars, signals.

Waits poll for an event with a deadline (a line printed, a process gone); the deadline only
bounds a hang and is never a claim about speed.
"""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import tomli_w
from up_process import DEADLINE, MEMBER_LINE, Up, run, running, wait_until

from derecho.localgroup import LocalGroup, free_ports

# -- derecho sidecar --config -------------------------------------------------------------------


def good_config(tmp_path: Path) -> dict:
    port = free_ports(1)[0]
    return {
        "node_id": 0,
        "group": "cli",
        "data_dir": str(tmp_path / "member"),
        "members": [{"id": 0, "address": f"127.0.0.1:{port}"}],
    }


def write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "sidecar.toml"
    path.write_text(tomli_w.dumps(config))
    return path


def test_sidecar_with_a_good_config_serves_until_sigterm(derecho_command: list[str], tmp_path: Path):
    # The baseline the bad configurations below differ from by one key each.
    config = good_config(tmp_path)
    member = Path(config["data_dir"])
    with open(tmp_path / "sidecar.log", "wb") as log:
        process = subprocess.Popen(
            [*derecho_command, "sidecar", "--config", str(write(tmp_path, config))], stdout=log, stderr=log
        )
    try:
        wait_until(lambda: (member / "sidecar.pid").exists() or process.poll() is not None, "the pid file")
        assert process.poll() is None, (tmp_path / "sidecar.log").read_text()
        assert int((member / "sidecar.pid").read_text()) == process.pid
        assert stat.S_ISSOCK((member / "derecho.sock").stat().st_mode)
        status = run(derecho_command, "status", "--socket", str(member / "derecho.sock"), "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["ready"] is True
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not (member / "sidecar.pid").exists()
    assert not (member / "derecho.sock").exists()


BAD_CONFIGS = {
    # name: (change to the good config, what the message must name)
    "unknown-key": (lambda c: c.update(nodes=3), ["nodes", "unknown key"]),
    "unknown-nested-key": (lambda c: c.update(multicast={"windw": 16}), ["multicast.windw", "unknown key"]),
    "wrong-type": (lambda c: c.update(multicast={"window": "big"}), ["multicast.window", "'big'"]),
    "wrong-type-top": (lambda c: c.update(node_id="zero"), ["node_id", "'zero'"]),
    "float-for-int": (lambda c: c.update(client={"hold_bytes": 1.5e6}), ["client.hold_bytes"]),
    "below-minimum": (lambda c: c.update(client={"hold_bytes": 1024}), ["client.hold_bytes", "65536"]),
    "missing-key": (lambda c: c.pop("node_id"), ["node_id", "required key is missing"]),
    "not-a-member": (lambda c: c.update(node_id=5), ["node_id 5", "members"]),
    "bad-address": (lambda c: c["members"][0].update(address="nowhere"), ["members.0.address", "HOST:PORT"]),
    "bad-level": (lambda c: c.update(log={"level": "loud"}), ["log.level"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_sidecar_refuses_a_bad_config_naming_the_key(derecho_command: list[str], tmp_path: Path, case: str):
    change, named = BAD_CONFIGS[case]
    config = good_config(tmp_path)
    change(config)
    path = write(tmp_path, config)
    result = run(derecho_command, "sidecar", "--config", str(path), timeout=30)
    assert result.returncode == 2, result.stderr
    assert "bad configuration" in result.stderr
    for words in named:
        assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert not Path(config["data_dir"]).exists()  # refused before touching anything


def test_sidecar_refuses_a_missing_config_file(derecho_command: list[str], tmp_path: Path):
    missing = tmp_path / "nowhere.toml"
    result = run(derecho_command, "sidecar", "--config", str(missing), timeout=30)
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "does not exist" in result.stderr


def test_sidecar_refuses_invalid_toml_naming_the_line(derecho_command: list[str], tmp_path: Path):
    path = tmp_path / "sidecar.toml"
    path.write_text('node_id = 0\ngroup = "unterminated\n')
    result = run(derecho_command, "sidecar", "--config", str(path), timeout=30)
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr
    assert "line 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_sidecar_whose_peer_port_is_taken_exits_1(derecho_command: list[str], tmp_path: Path):
    config = good_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config["members"][0]["address"] = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run(derecho_command, "sidecar", "--config", str(write(tmp_path, config)), timeout=30)
    assert result.returncode == 1, result.stderr
    assert "cannot start member 0" in result.stderr
    assert "Traceback" not in result.stderr


# -- derecho status -----------------------------------------------------------------------------


def test_status_describes_a_running_member(derecho_command: list[str], local_group: LocalGroup):
    member = local_group.members[0]
    result = run(derecho_command, "status", "--socket", str(member.socket))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "member 0 of group 'local': ready"
    assert lines[1] == "  view 0: members [0, 1, 2]"
    assert lines[2] == "  how it came: initial view"
    assert any(line.startswith("  history 0/0: ") and "(complete)" in line for line in lines)
    assert any(line.startswith("  shard 0/0: ") and "delivered" in line for line in lines)
    assert "  peers: 1: connected, 2: connected" in lines
    assert any(line.startswith("  apps connected: ") and str(member.socket) in line for line in lines)


def test_status_json_is_the_status_document(derecho_command: list[str], local_group: LocalGroup):
    for member in local_group.members:
        result = run(derecho_command, "status", "--socket", str(member.socket), "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["node_id"] == member.node_id
        assert doc["ready"] is True
        assert doc["group"] == "local"
        assert doc["view"]["members"] == [0, 1, 2]
        assert doc["pid"] == member.process.pid
        assert doc["socket"] == str(member.socket)


def test_status_without_a_sidecar_says_so(derecho_command: list[str], tmp_path: Path):
    result = run(derecho_command, "status", "--socket", str(tmp_path / "derecho.sock"), timeout=30)
    assert result.returncode == 1
    assert "no sidecar answers" in result.stderr
    assert "Traceback" not in result.stderr


# -- derecho up ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "sig"),
    [(3, signal.SIGTERM), (3, signal.SIGINT), (9, signal.SIGTERM)],
    ids=["3-SIGTERM", "3-SIGINT", "9-SIGTERM"],
)
async def test_up_runs_a_group_until_signalled(derecho_command: list[str], tmp_path: Path, members: int, sig: int):
    directory = tmp_path / "group"
    up = await Up.start(derecho_command, directory, members)
    pids: list[int] = []
    try:
        lines = await up.read_until("Ctrl-C stops every member.")
        assert f"local group of {members} members is ready in {directory}" in lines
        listed = [MEMBER_LINE.fullmatch(line) for line in lines if line.startswith("  member ")]
        assert all(listed) and [int(m[1]) for m in listed] == list(range(members)), lines
        for i, match in enumerate(listed):
            member = directory / f"member-{i}"
            assert match[2] == str(member / "derecho.sock")
            assert stat.S_ISSOCK((member / "derecho.sock").stat().st_mode)
            pid = int((member / "sidecar.pid").read_text())
            assert pid == int(match[3])
            assert running(pid)
            pids.append(pid)
        assert up.process.returncode is None

        up.process.send_signal(sig)
        code, lines = await up.finish()
        assert code == 0, "\n".join(lines)
        stopped = ", ".join(f"member {i} exit 0" for i in range(members))
        assert f"stopped: {stopped}" in lines
        assert not any(running(pid) for pid in pids)
        for i in range(members):
            assert not (directory / f"member-{i}" / "sidecar.pid").exists()
            assert not (directory / f"member-{i}" / "derecho.sock").exists()
    finally:
        await up.cleanup(pids)


@pytest.mark.parametrize("members", ["0", "65", "three"])
def test_up_refuses_a_bad_member_count(derecho_command: list[str], tmp_path: Path, members: str):
    result = run(derecho_command, "up", "--members", members, "--dir", str(tmp_path / "group"), timeout=30)
    assert result.returncode == 2
    assert "--members" in result.stderr
    assert not (tmp_path / "group").exists()


# -- derecho demo -------------------------------------------------------------------------------


def test_demo_passes(derecho_command: list[str], tmp_path: Path):
    result = run(derecho_command, "demo", "--messages", "500", "--dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Demo passed" in result.stdout
    assert "in exactly the same order" in result.stdout
    assert "Stopped every member." in result.stdout
    assert not list((tmp_path / "demo").glob("member-*/sidecar.pid"))


def test_demo_shows_a_member_failing_the_group_carrying_on_and_the_member_rejoining(
    derecho_command: list[str], tmp_path: Path
):
    result = run(derecho_command, "demo", "--messages", "300", "--fail", "--dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())  # rich wraps long lines
    assert "Now member 2 crashes (kill -9" in out
    assert "the survivors installed view 1 (members [0, 1], failed [2])" in out
    assert "every survivor delivered them in the same order, all in view 1" in out
    assert "The group carried on without the failed member." in out
    # Then it restarts and joins again, through a view change of its own.
    assert "Now member 2 restarts and asks the survivors to let it back in" in out
    assert "it rejoined in view 2 (members [0, 1, 2])" in out
    assert "Every member is back in one view." in out


def test_demo_fail_needs_three_members(derecho_command: list[str], tmp_path: Path):
    result = run(derecho_command, "demo", "--members", "2", "--fail", "--dir", str(tmp_path / "demo"))
    assert result.returncode == 2
    assert "--fail needs at least 3 members" in result.stdout + result.stderr
