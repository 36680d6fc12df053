"""Where a node's secure-aggregation identity comes from (`--secagg-authentication`): the pinned
roster, else its mTLS certificate's identity key, else none; each impossible set-up a one-line
ConfigError naming the flag."""

import argparse
import shutil

import pytest

from codream.cli import identities
from codream.cli.certs_command import write_pki
from codream.cli.node_command import add_node_command, node_options
from codream.config import ConfigError

NODES = ("node-0", "node-1")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return write_pki(tmp_path_factory.mktemp("pki") / "pki", NODES, ("localhost",), force=False)


def options(*extra):
    parser = argparse.ArgumentParser()
    add_node_command(parser.add_subparsers(dest="command", required=True))
    return node_options(parser.parse_args(["node", "--coordinator", "127.0.0.1:7000", "--node-id",
                                           "node-1", *extra]), {})


def mtls(pki, node="node-1", key=None):
    return ["--tls-ca", str(pki.ca_cert), "--tls-cert", str(pki.node_certs[node]),
            "--tls-key", str(key or pki.node_keys[node])]


def test_mtls_files_alone_give_the_certificates_identity_and_require_authentication(pki):
    got = options(*mtls(pki))
    expected = identities.load_identity_key(pki.identity_keys["node-1"])
    assert identities.raw_public_key(got.identity_key) == identities.raw_public_key(expected)
    assert got.identity_ca == pki.ca_cert.read_bytes() and got.peer_identities is None
    assert got.require_authentication


def test_a_pinned_roster_wins_over_the_certificate(pki):
    got = options(*mtls(pki), "--identity-key", str(pki.identity_keys["node-1"]),
                  "--peer-identities", str(pki.roster))
    assert got.peer_identities is not None and got.identity_ca is None and got.require_authentication


def test_no_identity_means_unauthenticated_unless_required(pki):
    plain = options()
    assert plain.identity_key is None and not plain.require_authentication
    with pytest.raises(ConfigError, match="^--secagg-authentication required: this node has no "
                                          "identity; give --identity-key"):
        options("--secagg-authentication", "required")


def test_off_drops_the_certificates_identity_and_refuses_identity_flags(pki):
    off = options(*mtls(pki), "--secagg-authentication", "off")
    assert off.identity_key is None and off.identity_ca is None and not off.require_authentication
    with pytest.raises(ConfigError, match="^--secagg-authentication off: drop --identity-key"):
        options("--secagg-authentication", "off", "--identity-key", str(pki.identity_keys["node-1"]),
                "--peer-identities", str(pki.roster))


def test_a_certificate_whose_identity_is_not_its_keys_is_refused(pki, tmp_path):
    other_key = tmp_path / "other.key"  # node-0's TLS key beside node-1's certificate
    shutil.copy(pki.node_keys["node-0"], other_key)
    with pytest.raises(ConfigError, match="^--tls-cert .*: the identity key it carries is not the "
                                          "one derived from --tls-key"):
        options(*mtls(pki, key=other_key))
