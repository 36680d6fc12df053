"""`codream node` flags: defaults, the token from a file or the environment, errors naming the flag."""

import argparse

import pytest

from codream.cli.node_command import add_node_command, node_options
from codream.config import ConfigError

REQUIRED = ["node", "--coordinator", "coord:7000", "--node-id", "node-a"]


def parse(*extra):
    parser = argparse.ArgumentParser()
    add_node_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args([*REQUIRED, *extra])


def test_defaults():
    options = node_options(parse(), {})
    assert (options.coordinator, options.node_id, options.device, options.dataset) == (
        "coord:7000", "node-a", "auto", None)
    assert options.max_message_bytes == 256 * 2**20 and options.pull_wait == 10.0
    assert options.security.token is None and options.security.ca_file is None


def test_the_token_file_wins_over_the_environment_and_is_stripped(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    environ = {"CODREAM_NODE_TOKEN": "from-env"}
    assert node_options(parse("--token-file", str(token)), environ).security.token == "s3cret"
    assert node_options(parse(), environ).security.token == "from-env"


def test_the_token_never_shows_in_the_options_repr(tmp_path):
    assert "from-env" not in repr(node_options(parse(), {"CODREAM_NODE_TOKEN": "from-env"}))


@pytest.mark.parametrize("extra, flag", [
    (["--token-file", "/nonexistent/token"], "--token-file"),
    (["--tls-ca", "/nonexistent/ca.pem"], "--tls-ca"),
    (["--pull-wait", "0"], "--pull-wait"),
    (["--max-message-mb", "0"], "--max-message-mb"),
    (["--device", "tpu"], "--device"),
])
def test_bad_flags_are_config_errors_naming_the_flag(extra, flag):
    with pytest.raises(ConfigError, match=flag):
        node_options(parse(*extra), {})


def test_an_empty_token_file_is_an_error(tmp_path):
    token = tmp_path / "token"
    token.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        node_options(parse("--token-file", str(token)), {})


def test_a_client_certificate_without_its_key_names_both_flags(tmp_path):
    for name in ("ca.pem", "cert.pem"):
        (tmp_path / name).write_text("x")
    args = parse("--tls-ca", str(tmp_path / "ca.pem"), "--tls-cert", str(tmp_path / "cert.pem"))
    with pytest.raises(ConfigError, match="--tls-key.*--tls-cert|--tls-cert.*--tls-key"):
        node_options(args, {})


def test_a_coordinator_without_a_port_means_50051_and_says_so(caplog):
    import logging

    from codream.cli.node_command import coordinator_address

    with caplog.at_level(logging.WARNING):
        assert node_options(parse_with_coordinator("localhost"), {}).coordinator == "localhost:50051"
        assert coordinator_address("coord.example:7000") == "coord.example:7000"
        assert coordinator_address("[::1]") == "[::1]:50051"
        assert coordinator_address("[::1]:7000") == "[::1]:7000"
        assert coordinator_address("dns:///coord:7000") == "dns:///coord:7000"  # a gRPC URI: as given
    said = [r.getMessage() for r in caplog.records if "has no port" in r.getMessage()]
    assert said == ["--coordinator localhost has no port: dialling localhost:50051, the coordinator's "
                    "default", "--coordinator [::1] has no port: dialling [::1]:50051, the "
                    "coordinator's default"]


@pytest.mark.parametrize("target, phrase", [("coord:http", "port must be in [1, 65535]"),
                                            ("coord:0", "port must be in [1, 65535]"),
                                            (":7000", "no host"), ("[::1", "expected HOST[:PORT]")])
def test_a_bad_coordinator_address_names_the_flag(target, phrase):
    with pytest.raises(ConfigError, match=r"^--coordinator: ") as refused:
        node_options(parse_with_coordinator(target), {})
    assert phrase in str(refused.value)


def parse_with_coordinator(target):
    parser = argparse.ArgumentParser()
    add_node_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["node", "--coordinator", target, "--node-id", "node-a"])
