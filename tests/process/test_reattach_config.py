"""ReattachConfig: the Terraform-style JSON form, and its typed errors."""

from __future__ import annotations

import json

import pytest

from aog_plugins.errors import ReattachError
from aog_plugins.process import ReattachConfig

TERRAFORM = (
    '{"name":{"Protocol":"grpc","ProtocolVersion":6,"Pid":123,"Test":true,'
    '"Addr":{"Network":"unix","String":"/tmp/plugin123"}}}'
)


def test_parses_terraform_form() -> None:
    config = ReattachConfig.from_json(TERRAFORM)
    assert config == ReattachConfig("grpc", 6, "unix", "/tmp/plugin123", 123, test=True)


def test_round_trip() -> None:
    config = ReattachConfig("grpc", 1, "tcp", "127.0.0.1:1234", 42)
    assert ReattachConfig.from_json(config.to_json("p"), "p") == config
    assert json.loads(config.to_json("p"))["p"]["Addr"] == {
        "Network": "tcp",
        "String": "127.0.0.1:1234",
    }


def test_picks_named_entry_among_several() -> None:
    a = ReattachConfig("grpc", 1, "unix", "/a", 1).to_dict()
    b = ReattachConfig("grpc", 1, "unix", "/b", 2).to_dict()
    text = json.dumps({"a": a, "b": b})
    assert ReattachConfig.from_json(text, "b").address == "/b"
    with pytest.raises(ReattachError, match="pass name="):
        ReattachConfig.from_json(text)
    with pytest.raises(ReattachError, match="no entry 'c'"):
        ReattachConfig.from_json(text, "c")


def _grpc(override: str) -> str:
    """A valid gRPC config with one field overridden (JSON text of that field)."""
    fields = json.loads(
        '{"Protocol": "grpc", "ProtocolVersion": 1, "Pid": 4321, '
        '"Addr": {"Network": "unix", "String": "/s"}}'
    )
    fields.update(json.loads("{" + override + "}"))
    return json.dumps(fields)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ("{}", "JSON object"),
        ('{"p": 3}', "must be an object"),
        ('{"p": {"Protocol": "grpc"}}', "needs Protocol"),
        ('{"p": {"Protocol":"grpc","Pid":"x","Addr":{"Network":"unix","String":"/s"}}}', "needs"),
        ('{"p": {"Protocol":"netrpc","Pid":1,"Addr":{"Network":"unix","String":"/s"}}}', "netrpc"),
        ('{"p": {"Protocol":"grpc","Pid":1,"Addr":{"Network":"udp","String":"/s"}}}', "udp"),
        ('{"p": {"Protocol":"grpc","Pid":0,"Addr":{"Network":"unix","String":"/s"}}}', "positive"),
        # Coerced before: true became pid 1 (init), 12.7 pid 12, null the address 'None'.
        (_grpc('"Pid": true'), "Pid must be a JSON integer"),
        (_grpc('"Pid": 12.7'), "Pid must be a JSON integer"),
        (_grpc('"Addr": {"Network": "unix", "String": null}'), "String is missing"),
        (_grpc('"Test": "false"'), "Test must be a JSON boolean"),
        (_grpc('"ProtocolVersion": null'), "ProtocolVersion must be"),
    ],
)
def test_bad_configs_raise_reattach_error(text: str, match: str) -> None:
    with pytest.raises(ReattachError, match=match):
        ReattachConfig.from_json(text)
