"""`codream node`: flags, token and TLS files to NodeOptions; signals to a clean stop.

The daemon reads no files, environment or flags (only the CLI does); it receives finished options.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from codream.cli import preflight
from codream.cli.parsing import add_command
from codream.config import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from client_node.node_options import NodeOptions

log = logging.getLogger(__name__)

TOKEN_ENVIRONMENT = "CODREAM_NODE_TOKEN"
ENVIRONMENT = (TOKEN_ENVIRONMENT,)  # every variable `codream node` reads (the deploy tests check it)
DEFAULT_COORDINATOR_PORT = 50051  # the coordinator's own default --port
DEFAULT_HEALTH_PORT = 50053  # not the coordinator's 50052: both may run on one host
DEFAULT_METRICS_PORT = 9091
AUTHENTICATION_MODES = ("auto", "required", "off")
_SECURITY_FLAGS = {"ca_file": "--tls-ca", "cert_file": "--tls-cert", "key_file": "--tls-key",
                   "server_name": "--tls-server-name", "token": f"--token-file/${TOKEN_ENVIRONMENT}"}


def add_node_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    node = add_command(subparsers, "node", "run a node daemon that joins a coordinator")
    node.add_argument("--coordinator", required=True, metavar="HOST[:PORT]",
                      help=f"where the coordinator serves (port {DEFAULT_COORDINATOR_PORT} when "
                           "none is given)")
    node.add_argument("--node-id", dest="node_id", required=True, metavar="ID",
                      help="this node's id on the coordinator's roster")
    node.add_argument("--token-file", dest="token_file", metavar="FILE",
                      help=f"file holding just the bearer token (else ${TOKEN_ENVIRONMENT})")
    node.add_argument("--tls-ca", dest="tls_ca", help="CA bundle the coordinator's certificate "
                      "must chain to (without it: plaintext, for loopback development)")
    node.add_argument("--tls-cert", dest="tls_cert", help="this node's certificate, for mTLS")
    node.add_argument("--tls-key", dest="tls_key", help="this node's private key, for mTLS")
    node.add_argument("--tls-server-name", dest="tls_server_name",
                      help="name to check the coordinator's certificate against")
    node.add_argument("--identity-key", dest="identity_key", metavar="PEM",
                      help="this node's Ed25519 identity key, for authenticated secure aggregation "
                           "(with --peer-identities)")
    node.add_argument("--peer-identities", dest="peer_identities", metavar="TOML",
                      help="the roster this node pins: [identities] node id = hex raw Ed25519 "
                           "public key, this node's own included; it then joins only authenticated "
                           "secure sessions whose keys are the roster's")
    node.add_argument("--secagg-authentication", dest="secagg_authentication",
                      choices=AUTHENTICATION_MODES, default="auto",
                      help="auto: authenticated secure aggregation whenever this node has an "
                           "identity (--peer-identities, or mTLS files whose certificate carries "
                           "its identity key, as `codream certs` writes), and then it refuses "
                           "unauthenticated sessions; required: refuse to start without one; off: "
                           "no identity, unauthenticated sessions only")
    node.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    node.add_argument("--dataset", metavar="SPEC", help="override the run's data set (e.g. "
                      "npz:PATH local to this node)")
    node.add_argument("--max-message-mb", dest="max_message_mb", type=int, default=256,
                      metavar="MIB", help="largest gRPC message, in MiB (2^20 bytes)")
    node.add_argument("--partition", default="auto", choices=("auto", "all", "index"),
                      help="all: train on the whole --dataset (an organisation's own data); index: "
                           "this node's partition of the run's data set, as `codream simulate` "
                           "(auto: all when --dataset is given, else index)")
    node.add_argument("--state-dir", dest="state_dir", metavar="DIR",
                      help="keep the node's round-start snapshot here, so a restart resumes its "
                           "model, and the secure-aggregation sessions it began, so a restart "
                           "never begins one again")
    node.add_argument("--pull-wait", dest="pull_wait", type=float, default=10.0,
                      metavar="SECONDS", help="long-poll seconds per PullTask")
    node.add_argument("--listen-host", dest="listen_host", default="0.0.0.0",
                      help="address for the health and metrics ports (the node serves nothing else)")
    node.add_argument("--health-port", dest="health_port", type=int, default=DEFAULT_HEALTH_PORT,
                      help="plaintext gRPC health: \"\" while running, codream.node.Membership while "
                           "joined (0: any free one)")
    node.add_argument("--no-health", dest="no_health", action="store_true", help="no health port")
    node.add_argument("--metrics-port", dest="metrics_port", type=int, default=DEFAULT_METRICS_PORT,
                      help="Prometheus /metrics over HTTP (0: any free one)")
    node.add_argument("--no-metrics", dest="no_metrics", action="store_true",
                      help="serve no metrics endpoint")
    node.add_argument("--after-run", dest="after_run", choices=("exit", "wait"), default="exit",
                      help="wait: when the coordinator ends the run, stay up (idle, not ready) until "
                           "SIGTERM instead of exiting, so a Kubernetes pod is not restarted into "
                           "a finished run")
    node.set_defaults(func=run_node)
    return node


def read_token(token_file: str | None, environ: Mapping[str, str]) -> str | None:
    """The token from --token-file, else the environment, else None (mTLS or open loopback)."""
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise ConfigError(f"--token-file: no such file {token_file}")
        token = path.read_text().strip()
        if not token:
            raise ConfigError(f"--token-file {token_file}: the file is empty")
        return token
    return environ.get(TOKEN_ENVIRONMENT, "").strip() or None


def coordinator_address(target: str) -> str:
    """--coordinator as gRPC dials it: HOST gets the default port (said in a log line, since
    gRPC alone would take 443); HOST:PORT and [IPv6]:PORT are checked; a URI is left as it is."""
    if "://" in target or target.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return target
    if target.startswith("["):
        host, bracket, rest = target[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ConfigError(f"--coordinator: expected HOST[:PORT] or [IPv6][:PORT], got {target!r}")
        port = rest[1:] if rest else None
        host = f"[{host}]"
    elif target.count(":") > 1:  # a bare IPv6 address: no port can be told apart
        host, port = f"[{target}]", None
    else:
        host, _, port = target.partition(":")
        port = port if ":" in target else None
    if not host.strip("[]"):
        raise ConfigError(f"--coordinator: no host in {target!r}; expected HOST[:PORT]")
    if port is None:
        log.warning("--coordinator %s has no port: dialling %s:%d, the coordinator's default",
                    target, host, DEFAULT_COORDINATOR_PORT)
        return f"{host}:{DEFAULT_COORDINATOR_PORT}"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"--coordinator: port must be in [1, 65535], got {port!r} in {target!r}")
    return f"{host}:{int(port)}"


@dataclass(frozen=True)
class NodeIdentity:
    """Where this node's secure-aggregation identity comes from (see --secagg-authentication)."""

    key: Ed25519PrivateKey | None = field(default=None, repr=False)
    roster: dict[str, bytes] | None = None  # pinned roster mode
    ca_pem: bytes | None = None  # mTLS-bound mode: the CA that vouches for identity certificates
    required: bool = False


def node_identity(args: argparse.Namespace) -> NodeIdentity:
    """The identity the flags give: a pinned roster (--identity-key/--peer-identities), else
    the one an mTLS certificate carries (derived from --tls-key, checked against --tls-cert);
    ConfigError (one line, naming the flag) when --secagg-authentication cannot be satisfied."""
    from codream import identity_certificates as certs

    mode = getattr(args, "secagg_authentication", "auto")
    key_file, roster_file = getattr(args, "identity_key", None), getattr(args, "peer_identities", None)
    if mode == "off":
        if key_file is not None or roster_file is not None:
            raise ConfigError("--secagg-authentication off: drop --identity-key/--peer-identities "
                              "(they turn authentication on)")
        return NodeIdentity()
    key, roster = read_identity(args.node_id, key_file, roster_file)
    if roster is not None:
        return NodeIdentity(key, roster, required=True)
    if args.tls_cert and args.tls_key and args.tls_ca:
        cert_pem, key_pem = Path(args.tls_cert).read_bytes(), Path(args.tls_key).read_bytes()
        try:
            own = certs.load_certificates(cert_pem, args.tls_cert)[0]
            carried = certs.identity_key_of(own)
        except ValueError as error:
            raise ConfigError(f"--tls-cert: {error}") from None
        if carried is not None:
            try:
                derived = certs.derive_identity_key(certs.load_tls_key(key_pem, args.tls_key))
            except ValueError as error:
                raise ConfigError(f"--tls-key: {error}") from None
            if derived.public_key().public_bytes_raw() != carried:
                raise ConfigError(f"--tls-cert {args.tls_cert}: the identity key it carries is not "
                                  f"the one derived from --tls-key {args.tls_key}")
            try:
                certs.load_certificates(Path(args.tls_ca).read_bytes(), args.tls_ca)
            except ValueError as error:
                raise ConfigError(f"--tls-ca: {error}") from None
            return NodeIdentity(derived, ca_pem=Path(args.tls_ca).read_bytes(), required=True)
        if mode == "auto":
            log.warning("--tls-cert %s carries no identity key: this node takes part in "
                        "unauthenticated secure sessions only (give --identity-key/"
                        "--peer-identities, or a certificate from `codream certs`)", args.tls_cert)
    if mode == "required":
        raise ConfigError("--secagg-authentication required: this node has no identity; give "
                          "--identity-key and --peer-identities, or mTLS (--tls-ca/--tls-cert/"
                          "--tls-key) with a certificate that carries its identity key "
                          "(`codream certs` writes one)")
    return NodeIdentity()


def read_identity(node_id: str, key_file: str | None, roster_file: str | None
                  ) -> tuple[Ed25519PrivateKey | None, dict[str, bytes] | None]:
    """--identity-key and --peer-identities (both or neither), checked against each other;
    ConfigError names the flag at fault."""
    from codream.cli import identities

    if key_file is None and roster_file is None:
        return None, None
    if key_file is None or roster_file is None:
        raise ConfigError("--identity-key/--peer-identities: give both (this node's identity key "
                          "and the roster it pins) or neither")
    try:
        key = identities.load_identity_key(key_file)
    except ValueError as error:
        raise ConfigError(f"--identity-key: {error}") from None
    try:
        roster = identities.load_roster(roster_file)
        identities.check_own_key(node_id, key, roster)
    except ValueError as error:
        raise ConfigError(f"--peer-identities: {error}") from None
    return key, roster


def node_options(args: argparse.Namespace, environ: Mapping[str, str]) -> NodeOptions:
    """NodeOptions from parsed flags; ConfigError names the flag at fault."""
    # Deferred: the node's modules load grpc, imported only when a node runs, so that
    # `codream simulate` never loads it (its parser holds this subcommand too).
    from client_node.channel import ChannelSecurity
    from client_node.node_options import NodeOptions

    for flag, value in (("--tls-ca", args.tls_ca), ("--tls-cert", args.tls_cert),
                        ("--tls-key", args.tls_key)):
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"{flag}: no such file {value}")
    if args.max_message_mb <= 0:
        raise ConfigError(f"--max-message-mb: must be > 0, got {args.max_message_mb}")
    for flag, port in (("--health-port", args.health_port), ("--metrics-port", args.metrics_port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{flag}: must be in [0, 65535], got {port}")
    if not args.pull_wait > 0:
        raise ConfigError(f"--pull-wait: must be > 0, got {args.pull_wait}")
    if not (args.device in ("auto", "cpu", "cuda") or args.device.startswith("cuda:")):
        raise ConfigError(f"--device: must be auto, cpu, cuda or cuda:N, got {args.device!r}")
    preflight.check_device(args.device, "--device")
    if args.dataset:  # the node's own data: a mistake in it is found now, not after joining
        preflight.check_dataset(args.dataset, "--dataset")
    identity = node_identity(args)
    try:
        security = ChannelSecurity(ca_file=args.tls_ca, cert_file=args.tls_cert,
                                   key_file=args.tls_key, server_name=args.tls_server_name,
                                   token=read_token(args.token_file, environ))
    except ValueError as error:
        message = str(error)
        for field, flag in _SECURITY_FLAGS.items():
            message = message.replace(f"ChannelSecurity.{field}", flag).replace(field, flag)
        raise ConfigError(message) from None
    return NodeOptions(coordinator_address(args.coordinator), args.node_id, security, device=args.device,
                       dataset=args.dataset, max_message_bytes=args.max_message_mb * 2**20,
                       pull_wait=args.pull_wait, state_dir=args.state_dir, partition=args.partition,
                       identity_key=identity.key, peer_identities=identity.roster,
                       identity_ca=identity.ca_pem, require_authentication=identity.required)


def run_node(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    """Runs the daemon until SIGTERM/SIGINT or `stop` (exit 0), a shutdown task (0; with
    --after-run wait, idles until stopped) or a refusal (3); a --state-dir whose record of
    begun secure sessions cannot be read is a ConfigError (exit 2) before anything starts."""
    # Deferred: grpc, which `codream simulate` must not load (see node_options).
    from client_node.daemon import EXIT_OK
    from client_node.node_endpoints import observed_daemon
    from client_node.used_sessions import UsedSessionsError

    options = node_options(args, os.environ)
    stop = stop or threading.Event()
    try:
        daemon, endpoints = observed_daemon(options, stop, args.listen_host,
                                            None if args.no_health else args.health_port,
                                            None if args.no_metrics else args.metrics_port)
    except UsedSessionsError as error:  # the node cannot tell which sessions it began
        raise ConfigError(f"--state-dir: {error}") from None
    except OSError as error:  # a taken port: say which, rather than a traceback
        raise ConfigError(f"--health-port/--metrics-port on {args.listen_host}: {error}") from None
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        code = daemon.run()
        if code == EXIT_OK and args.after_run == "wait" and not stop.is_set():
            log.info("node %s: the run is over; idle until stopped", options.node_id)
            stop.wait()
        return code
    finally:
        endpoints.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
