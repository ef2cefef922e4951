"""Scripted scenarios for the protocol core, in the style of etcd raft's datadriven testdata.

Each file in tests/unit/testdata/*.txt is a list of blocks separated by blank lines. A block is
one command, a line `----`, and the output the command must produce:

    submit 0 hello world
    ----
    n0#0 "hello"
    n0#1 "world"

Lines starting with `#` are comments and stay as they are. Outputs never contain blank lines.

Commands (one group of GroupCore instances per file; every frame waits on a FIFO link per
ordered pair of nodes until a `deliver-frames` hands it over):

    view members=0,1,2 [senders=0,1] [mode=ordered|raw] [vid=N] [window=N] [max-bytes=N]
        Start fresh cores for a view with one shard (0,0). Prints the SST column names.
    submit NODE PAYLOAD...
        The node's application submits one message per PAYLOAD. `x*60` is 60 bytes of "x".
        Prints the message ids: nNODE#MSG_NO and the payload.
    flush NODE... | flush all
        Run each node's rules and print its actions, one per line, prefixed by `NODE:`:
          data i=FIRST_INDEX ID... -> PEERS      SendData (the frames are queued on the links)
          row COLUMN=VALUE... -> PEERS           SendRow, a diff of the node's own SST row
          deliver ID@SEQ...                      Deliver in an ordered shard (ID at global seq SEQ)
          deliver-raw ID...                      Deliver in a raw shard
          stable ID...                           Stable: raw receipts for the node's own messages
        `NODE: -` means the flush produced nothing.
    deliver-frames SRC -> DST [n=K] | deliver-frames all
        Hand the queued frames (all, or the first K) of a link to the receiver, printing each as
        `SRC -> DST: data ...` or `SRC -> DST: row ...`. `all` empties every link, in link order.
    stabilize
        Rounds of `flush all` then `deliver-frames all` until nothing moves; prints the actions
        only, under a `-- round N` line for each round that had any.
    status NODE... | status all
        The shard's frontiers at each node (sent, received, delivered, stable, ...).

Any exception a command raises is printed as `error: TYPE: MESSAGE`.

To regenerate the expected outputs after a deliberate change, run
    REWRITE=1 python -m pytest tests/unit/test_scenarios.py
then read the diff (`git diff tests/unit/testdata`) as carefully as code before committing it.
"""

from __future__ import annotations

import difflib
import os
import shlex
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

from derecho.core.actions import Deliver, Msg, SendData, SendRow, Stable
from derecho.core.group import GroupCore
from derecho.core.ordered import ORDERED_COLUMNS
from derecho.core.view import DeliveryMode, ShardLayout, View

TESTDATA = Path(__file__).parent / "testdata"
KEY = (0, 0)
ORDERED_NAMES = ("sent", "received", "delivered", "released")
assert len(ORDERED_NAMES) == ORDERED_COLUMNS


# -- the file format ---------------------------------------------------------------------------


@dataclass
class Block:
    line: int  # 1-based line of the command, for error messages
    command: str
    expected: list[str] | None  # None when the block has no `----` yet


Item = str | Block  # comment and blank lines are kept verbatim as strings


def parse(text: str) -> list[Item]:
    lines = text.splitlines()
    items: list[Item] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            items.append(line)
            i += 1
            continue
        block = Block(i + 1, line, None)
        i += 1
        if i < len(lines) and lines[i] == "----":
            i += 1
            block.expected = []
            while i < len(lines) and lines[i].strip():
                block.expected.append(lines[i])
                i += 1
        items.append(block)
    return items


def render(items: list[Item], outputs: dict[int, list[str]]) -> str:
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        else:
            out.append(item.command)
            out.append("----")
            out.extend(outputs[item.line])
    return "\n".join(out) + "\n"


# -- the driver --------------------------------------------------------------------------------


@dataclass
class DataFrame:
    sender: int
    first_index: int
    messages: list[tuple[int, bytes]]


@dataclass
class RowFrame:
    sender: int
    diff: list[int]


class Scenario:
    def __init__(self) -> None:
        self.cores: dict[int, GroupCore] = {}
        self.links: dict[tuple[int, int], deque[DataFrame | RowFrame]] = {}
        self.column_names: list[str] = []

    # formatting

    @staticmethod
    def msg_id(sender: int, msg_no: int) -> str:
        return f"n{sender}#{msg_no}"

    @staticmethod
    def payload(data: bytes) -> str:
        if len(data) > 8 and data == data[:1] * len(data):
            return f"{data[:1].decode('latin-1')}*{len(data)}"
        return '"' + data.decode("latin-1") + '"'

    def row(self, diff: list[int]) -> str:
        return " ".join(f"{self.column_names[c]}={v}" for c, v in zip(diff[::2], diff[1::2], strict=True))

    def action(self, action) -> str:
        if isinstance(action, SendData):
            ids = " ".join(self.msg_id(m.sender, m.msg_no) for m in action.messages)
            return f"data i={action.first_index} {ids} -> {','.join(map(str, action.to))}"
        if isinstance(action, SendRow):
            return f"row {self.row(action.diff)} -> {','.join(map(str, action.to))}"
        if isinstance(action, Deliver):
            if action.ordered:
                return "deliver " + " ".join(f"{self.msg_id(m.sender, m.msg_no)}@{m.seq}" for m in action.messages)
            return "deliver-raw " + " ".join(self.msg_id(m.sender, m.msg_no) for m in action.messages)
        if isinstance(action, Stable):
            return "stable " + " ".join(self.msg_id(m.sender, m.msg_no) for m in action.messages)
        return repr(action)

    def frame(self, frame: DataFrame | RowFrame) -> str:
        if isinstance(frame, DataFrame):
            ids = " ".join(self.msg_id(frame.sender, no) for no, _ in frame.messages)
            return f"data i={frame.first_index} {ids}"
        return f"row {self.row(frame.diff)}"

    # commands

    def run(self, command: str) -> list[str]:
        words = shlex.split(command)
        name, args = words[0], words[1:]
        handler = getattr(self, "cmd_" + name.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {name!r}")
        try:
            return handler(args) or ["ok"]
        except Exception as exc:  # the scenario shows the error; the test compares it like any output
            return [f"error: {type(exc).__name__}: {exc}"]

    def nodes(self, args: list[str]) -> list[int]:
        return list(self.cores) if args == ["all"] else [int(a) for a in args]

    def cmd_view(self, args: list[str]) -> list[str]:
        opts = dict(a.split("=", 1) for a in args)
        members = [int(n) for n in opts.pop("members").split(",")]
        senders = [int(n) for n in opts.pop("senders").split(",")] if "senders" in opts else members
        mode = DeliveryMode(opts.pop("mode", "ordered"))
        vid = int(opts.pop("vid", "0"))
        core_args = {}
        if "window" in opts:
            core_args["window"] = int(opts.pop("window"))
        if "max-bytes" in opts:
            core_args["max_inflight_bytes"] = int(opts.pop("max-bytes"))
        if opts:
            raise ValueError(f"unknown view options {sorted(opts)}")
        view = View(vid, tuple(members), ((ShardLayout(tuple(members), tuple(senders), mode),),))
        self.cores = {n: GroupCore(my_node=n, view=view, **core_args) for n in members}
        self.links = {(a, b): deque() for a in members for b in members if a != b}
        if mode is DeliveryMode.ORDERED:
            self.column_names = list(ORDERED_NAMES)
        else:
            self.column_names = ["sent"] + [f"recv{s}" for s in senders]
        return ["columns: " + " ".join(f"{i}={n}" for i, n in enumerate(self.column_names))]

    def cmd_submit(self, args: list[str]) -> list[str]:
        node = int(args[0])
        out = []
        for word in args[1:]:
            text, star, count = word.rpartition("*")
            data = (text * int(count)).encode() if star and count.isdigit() else word.encode()
            msg = self.cores[node].submit(KEY, data)
            out.append(f"{self.msg_id(node, msg.msg_no)} {self.payload(data)}")
        return out

    def flush(self, node: int) -> list[str]:
        actions = self.cores[node].flush()
        for action in actions:
            if isinstance(action, SendData):
                entries = [(m.msg_no, bytes(m.payload)) for m in action.messages]
                for peer in action.to:
                    self.links[(node, peer)].append(DataFrame(node, action.first_index, entries))
            elif isinstance(action, SendRow):
                for peer in action.to:
                    self.links[(node, peer)].append(RowFrame(node, list(action.diff)))
        return [f"{node}: {self.action(a)}" for a in actions]

    def cmd_flush(self, args: list[str]) -> list[str]:
        out = []
        for node in self.nodes(args):
            out.extend(self.flush(node) or [f"{node}: -"])
        return out

    def pump(self, src: int, dst: int, limit: int | None = None) -> list[str]:
        link = self.links[(src, dst)]
        out = []
        while link and (limit is None or len(out) < limit):
            frame = link.popleft()
            out.append(f"{src} -> {dst}: {self.frame(frame)}")
            core = self.cores[dst]
            if isinstance(frame, DataFrame):
                msgs = [Msg(frame.sender, no, payload) for no, payload in frame.messages]
                core.receive_data(frame.sender, KEY, frame.first_index, msgs)
            else:
                core.receive_row(frame.sender, frame.diff)
        return out

    def cmd_deliver_frames(self, args: list[str]) -> list[str]:
        if args == ["all"]:
            out = []
            for src, dst in self.links:
                out.extend(self.pump(src, dst))
            return out or ["(no frames)"]
        if len(args) not in (3, 4) or args[1] != "->":
            raise ValueError("usage: deliver-frames SRC -> DST [n=K] | deliver-frames all")
        limit = int(args[3].removeprefix("n=")) if len(args) == 4 else None
        return self.pump(int(args[0]), int(args[2]), limit) or ["(no frames)"]

    def cmd_stabilize(self, args: list[str]) -> list[str]:
        out: list[str] = []
        for round_no in range(1, 1001):
            lines = [line for node in self.cores for line in self.flush(node)]
            if lines:
                out.append(f"-- round {round_no}")
                out.extend(lines)
            moved = False
            for src, dst in self.links:
                moved = bool(self.pump(src, dst)) or moved
            if not moved and not lines:
                return out or ["(nothing to do)"]
        raise RuntimeError("no quiescence after 1000 rounds")

    def cmd_status(self, args: list[str]) -> list[str]:
        out = []
        for node in self.nodes(args):
            front = self.cores[node].shards[KEY].frontiers()
            out.append(f"{node}: " + " ".join(f"{k}={v}" for k, v in front.items()))
        return out


# -- the test ----------------------------------------------------------------------------------

FILES = sorted(TESTDATA.glob("*.txt"))


def test_there_are_scenarios():
    assert len(FILES) >= 3, f"expected scenario files in {TESTDATA}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path: Path):
    text = path.read_text()
    items = parse(text)
    scenario = Scenario()
    outputs: dict[int, list[str]] = {}
    for item in items:
        if isinstance(item, Block):
            outputs[item.line] = scenario.run(item.command)
    actual = render(items, outputs)
    if os.environ.get("REWRITE"):
        path.write_text(actual)
        return
    missing = [b.line for b in items if isinstance(b, Block) and b.expected is None]
    assert not missing, f"{path.name}: commands at lines {missing} have no `----` expectation; run with REWRITE=1"
    if actual != text:
        diff = "".join(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"{path.name} (expected)",
                tofile=f"{path.name} (actual)",
            )
        )
        pytest.fail(f"scenario output differs; if the change is intended, rerun with REWRITE=1\n{diff}", pytrace=False)
