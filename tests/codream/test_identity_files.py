"""Identity files for authenticated secure aggregation: the dev PKI writes them, the node's and the
coordinator's flags read and check them, every mistake a one-line error naming the flag."""

import argparse
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from codream.cli import identities
from codream.cli.certs_command import write_pki
from codream.cli.coordinator_command import read_identities
from codream.cli.node_command import add_node_command, node_options
from codream.config import ConfigError

NODES = ("node-0", "node-1", "node-2")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return write_pki(tmp_path_factory.mktemp("pki") / "pki", NODES, ("localhost",), force=False)


def node_args(*extra):
    parser = argparse.ArgumentParser()
    add_node_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["node", "--coordinator", "127.0.0.1:7000", "--node-id", "node-1",
                              *extra])


def test_the_dev_pki_writes_private_identity_keys_and_a_roster_that_pins_them(pki):
    roster = identities.load_roster(pki.roster)
    assert list(roster) == list(NODES)
    for node in NODES:
        path = pki.identity_keys[node]
        assert path.name == f"{node}.identity.key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = identities.load_identity_key(path)
        assert roster[node] == identities.raw_public_key(key) and len(roster[node]) == 32
        identities.check_own_key(node, key, roster)


def test_the_node_flags_give_its_options_the_key_and_the_roster(pki):
    options = node_options(node_args("--identity-key", str(pki.identity_keys["node-1"]),
                                     "--peer-identities", str(pki.roster)), {})
    assert options.peer_identities == identities.load_roster(pki.roster)
    assert identities.raw_public_key(options.identity_key) == options.peer_identities["node-1"]
    plain = node_options(node_args(), {})
    assert plain.identity_key is None and plain.peer_identities is None


def _bad_roster(tmp_path, body):
    path = tmp_path / "roster.toml"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize("body, phrase", [
    ('[identities]\nnode-1 = "zz"\n', "64 hex digits"),
    ('[identities]\nnode-1 = "' + "ab" * 31 + '"\n', "64 hex digits"),
    ('[identities]\nnode-1 = "' + "g" * 64 + '"\n', "64 hex digits"),
    ('[tokens]\nnode-1 = "x"\n', "needs an [identities] table"),
    ('[identities\n', "cannot read it as TOML"),
    ('[identities]\nnode-0 = "' + "ab" * 32 + '"\n', "no key for this node ('node-1')"),
    ('[identities]\nnode-1 = "' + "ab" * 32 + '"\n', "is not the public key of this node's"),
], ids=["bad-hex", "short", "not-hex", "no-table", "not-toml", "missing-node", "not-matching"])
def test_a_bad_roster_is_a_one_line_error_naming_the_flag(pki, tmp_path, body, phrase):
    args = node_args("--identity-key", str(pki.identity_keys["node-1"]),
                     "--peer-identities", _bad_roster(tmp_path, body))
    with pytest.raises(ConfigError) as error:
        node_options(args, {})
    message = str(error.value)
    assert message.startswith("--peer-identities: ") and phrase in message and "\n" not in message


def test_another_nodes_key_does_not_match_the_roster(pki):
    args = node_args("--identity-key", str(pki.identity_keys["node-0"]), "--peer-identities",
                     str(pki.roster))
    with pytest.raises(ConfigError, match="^--peer-identities: the roster's key for 'node-1' is not"):
        node_options(args, {})


def test_a_bad_identity_key_file_is_a_one_line_error_naming_the_flag(pki, tmp_path):
    roster = str(pki.roster)
    not_pem = tmp_path / "junk.key"
    not_pem.write_text("not a key\n")
    with pytest.raises(ConfigError, match="^--identity-key: no such file"):
        node_options(node_args("--identity-key", str(tmp_path / "absent"),
                               "--peer-identities", roster), {})
    with pytest.raises(ConfigError, match="^--identity-key: .*not an unencrypted PEM private key$"):
        node_options(node_args("--identity-key", str(not_pem), "--peer-identities", roster), {})
    with pytest.raises(ConfigError, match="^--identity-key: .*not an Ed25519 key"):
        node_options(node_args("--identity-key", str(pki.node_keys["node-1"]),
                               "--peer-identities", roster), {})  # the TLS key: ECDSA
    with pytest.raises(ConfigError, match="^--identity-key/--peer-identities: give both"):
        node_options(node_args("--peer-identities", roster), {})
    with pytest.raises(ConfigError, match="^--peer-identities: no such file"):
        node_options(node_args("--identity-key", str(pki.identity_keys["node-1"]),
                               "--peer-identities", str(tmp_path / "absent")), {})


def test_the_coordinators_identities_need_a_key_for_every_roster_node(pki, tmp_path):
    assert read_identities(None, NODES) == {}
    assert read_identities(str(pki.roster), NODES) == identities.load_roster(pki.roster)
    with pytest.raises(ConfigError, match=r"^--identities .*: no key for node-3 \(every roster"):
        read_identities(str(pki.roster), (*NODES, "node-3"))
    with pytest.raises(ConfigError, match="^--identities: .*64 hex digits"):
        read_identities(_bad_roster(tmp_path, '[identities]\nnode-0 = "00"\n'), NODES)


def test_roster_toml_round_trips_quoted_ids(tmp_path):
    roster = {"a.b": Ed25519PrivateKey.generate().public_key().public_bytes_raw(), "plain": b"\1" * 32}
    identities.write_roster(tmp_path / "r.toml", roster)
    assert identities.load_roster(tmp_path / "r.toml") == roster
