"""Sidecar configuration: TOML, validated in full, errors that name the key and say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from derecho.config import ConfigError, SidecarConfig, load_config, parse_config
from derecho.core.view import DeliveryMode, ShardLayout

MINIMAL_TOML = """
node_id = 1
data_dir = "/var/lib/derecho"

[[members]]
id = 1
address = "10.0.0.1:24000"

[[members]]
id = 2
address = "10.0.0.2:24000"
"""


def minimal(**overrides) -> dict:
    raw = {
        "node_id": 1,
        "data_dir": "/var/lib/derecho",
        "members": [{"id": 1, "address": "10.0.0.1:24000"}, {"id": 2, "address": "10.0.0.2:24000"}],
    }
    raw.update(overrides)
    return raw


def problems(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return str(info.value)


# -- valid configs -----------------------------------------------------------------------------


def test_minimal_config_and_its_defaults():
    cfg = parse_config(minimal())
    assert isinstance(cfg, SidecarConfig)
    assert cfg.node_id == 1
    assert cfg.group == "derecho"
    assert cfg.data_dir == Path("/var/lib/derecho")
    assert cfg.socket_path == Path("/var/lib/derecho/derecho.sock")
    assert cfg.me.id == 1 and cfg.me.host_port == ("10.0.0.1", 24000)
    assert cfg.multicast.window == 4096
    assert cfg.multicast.max_inflight_bytes == 64 << 20
    assert cfg.multicast.max_message_size == 64 << 20
    assert cfg.http.address == "127.0.0.1:0"
    assert cfg.log.level == "info" and cfg.log.format == "text"
    # No subgroups: one shard of everyone, all senders, ordered; it is called "default".
    view = cfg.initial_view()
    assert view.vid == 0 and view.members == (1, 2)
    assert view.subgroups == ((ShardLayout((1, 2), (1, 2), DeliveryMode.ORDERED),),)


def test_config_is_immutable():
    cfg = parse_config(minimal())
    with pytest.raises(ValueError, match="frozen"):
        cfg.node_id = 2  # type: ignore[misc]


def test_subgroups_build_the_initial_view():
    cfg = parse_config(
        minimal(
            members=[{"id": i, "address": f"h{i}:1"} for i in range(4)],
            socket="/run/d.sock",
            http={"address": ""},
            subgroups=[
                {"name": "kv", "shards": [{"members": [0, 1]}, {"members": [2, 3], "senders": [3]}]},
                {"name": "log", "shards": [{"members": [1, 2], "mode": "raw"}]},
            ],
        )
    )
    assert cfg.socket_path == Path("/run/d.sock")
    assert cfg.http.address is None  # empty disables the HTTP endpoint
    assert cfg.initial_view().subgroups == (
        (ShardLayout((0, 1), (0, 1)), ShardLayout((2, 3), (3,))),
        (ShardLayout((1, 2), (1, 2), DeliveryMode.RAW),),
    )


def test_ipv6_address():
    cfg = parse_config(minimal(members=[{"id": 1, "address": "[::1]:24000"}]))
    assert cfg.me.host_port == ("::1", 24000)


def test_load_config_reads_toml(tmp_path):
    path = tmp_path / "derecho.toml"
    path.write_text(MINIMAL_TOML + '\n[multicast]\nwindow = 16\n\n[log]\nformat = "json"\n')
    cfg = load_config(path)
    assert cfg.multicast.window == 16
    assert cfg.log.format == "json"
    assert [m.id for m in cfg.members] == [1, 2]
    assert load_config(str(path)) == cfg


# -- errors ------------------------------------------------------------------------------------


def test_unknown_key_is_named_with_the_fix():
    message = problems(minimal(windw=3))
    assert "windw: unknown key; remove it or check its spelling" in message
    assert "docs/config.md" in message


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"multicast": {"windw": 3}}, "multicast.windw"),
        ({"members": [{"id": 1, "adress": "h:1"}]}, "members.0.adress"),
        ({"subgroups": [{"name": "kv", "shards": [{"members": [1], "sender": [1]}]}]}, "subgroups.0.shards.0.sender"),
    ],
)
def test_unknown_nested_key_is_named_by_its_path(overrides, key):
    assert f"{key}: unknown key; remove it" in problems(minimal(**overrides))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"node_id": "one"}, "node_id: Input should be a valid integer"),
        ({"node_id": 1.5}, "node_id: Input should be a valid integer"),
        ({"node_id": -1}, "node_id: Input should be greater than or equal to 0"),
        ({"node_id": 70000}, "node_id: Input should be less than or equal to 65535"),
        ({"members": 3}, "members: Input should be a valid list (got 3)"),
        ({"members": []}, "members: List should have at least 1 item"),
        ({"http": {"address": "nowhere"}}, "http.address: 'nowhere' is not HOST:PORT"),
        (
            {"subgroups": [{"name": "kv", "shards": [{"members": [1], "senders": []}]}]},
            "subgroups.0.shards.0.senders: List should have at least 1 item",
        ),
        (
            {"subgroups": [{"name": "kv", "shards": [{"members": [1]}]}, {"name": "kv", "shards": [{"members": [2]}]}]},
            "subgroups: names must be unique",
        ),
        ({"multicast": {"window": 0}}, "multicast.window: Input should be greater than or equal to 1 (got 0)"),
        ({"multicast": {"window": "big"}}, "multicast.window: Input should be a valid integer"),
        ({"client": {"max_pending_bytes": 10}}, "client.max_pending_bytes: Input should be greater than or equal to"),
        ({"log": {"level": "loud"}}, "log.level: Input should be 'debug', 'info', 'warning' or 'error' (got 'loud')"),
        ({"group": ""}, "group: String should have at least 1 character"),
        ({"subgroups": [{"name": "kv", "shards": [{"members": [1], "mode": "fifo"}]}]}, "subgroups.0.shards.0.mode"),
    ],
)
def test_wrong_types_and_ranges_name_the_key(overrides, expected):
    assert expected in problems(minimal(**overrides))


def test_every_problem_is_reported_at_once():
    message = problems(minimal(node_id="one", group="", multicast={"window": 0}))
    assert message.startswith("config: 3 problem(s)")
    assert "node_id:" in message and "group:" in message and "multicast.window:" in message


def test_missing_required_keys():
    message = problems({"node_id": 1})
    assert "data_dir: required key is missing; add it" in message
    assert "members: required key is missing; add it" in message


def test_duplicate_member_ids():
    message = problems(minimal(members=[{"id": 1, "address": "a:1"}, {"id": 1, "address": "b:1"}]))
    assert "members: node ids must be unique, got [1, 1]" in message


def test_node_id_not_among_members():
    assert "node_id 5 is not among members [1, 2]; add it or fix node_id" in problems(minimal(node_id=5))


@pytest.mark.parametrize(
    "shard",
    [{"members": [1, 7]}, {"members": [1], "senders": [7]}],
    ids=["member", "sender"],
)
def test_subgroup_naming_an_unknown_node(shard):
    message = problems(minimal(subgroups=[{"name": "kv", "shards": [shard]}]))
    assert "subgroup 'kv' names node 7, which is not in members [1, 2]" in message


def test_subgroup_sender_outside_its_shard():
    message = problems(minimal(subgroups=[{"name": "kv", "shards": [{"members": [1], "senders": [2]}]}]))
    assert "sender 2 is not a member of the shard" in message


def test_node_in_two_shards_of_one_subgroup():
    message = problems(minimal(subgroups=[{"name": "kv", "shards": [{"members": [1, 2]}, {"members": [2]}]}]))
    assert "node 2 is in two shards of subgroup 0" in message


def test_subgroup_without_shards_or_name():
    assert "subgroups.0.shards: List should have at least 1 item" in problems(
        minimal(subgroups=[{"name": "kv", "shards": []}])
    )
    assert "subgroups.0.name: String should have at least 1 character" in problems(
        minimal(subgroups=[{"name": "", "shards": [{"members": [1]}]}])
    )


@pytest.mark.parametrize("address", ["nohost", ":24000", "host:", "host:port", "host:99999", "host:-1", "host: 80"])
def test_bad_member_address(address):
    message = problems(minimal(members=[{"id": 1, "address": address}]))
    assert f"members.0.address: {address!r} is not HOST:PORT (for example 127.0.0.1:24000)" in message


def test_bad_http_address():
    assert "http.address: 'localhost' is not HOST:PORT" in problems(minimal(http={"address": "localhost"}))


def test_invalid_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('node_id = 1\ndata_dir = "/x\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"config file {path} is not valid TOML" in message
    assert "line 2" in message
    assert "fix the syntax" in message


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="does not exist; pass --config with the path of a TOML file"):
        load_config(path)


def test_validation_errors_from_a_file_name_the_file(tmp_path):
    path = tmp_path / "derecho.toml"
    path.write_text(MINIMAL_TOML + "\ntypo_key = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: 1 problem(s)")
    assert "typo_key: unknown key" in str(info.value)
