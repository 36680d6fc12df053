"""`codream cluster`: a coordinator and N node daemons as real processes on 127.0.0.1.

Each process logs to its own file under RUN_DIR/logs; credentials (bearer tokens, and a dev PKI
with --tls, whose node certificates carry the nodes' Ed25519 identity keys and so make secure
aggregation authenticated, mTLS-bound: each node checks its peers' certificates against the CA,
as `codream node` does by default with mTLS files) are generated per cluster under
RUN_DIR/secrets with 0600 files. The PKI's pinned roster (identities.toml) is written but not
handed out: pass `--identities` / `--identity-key --peer-identities` in coordinator_args and
node_args for that mode. The coordinator binds port 0 and
reports its ports in a ready file, so clusters never collide on ports. The same object backs the
integration tests: it can SIGKILL and restart any process, and it always tears everything down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from codream.atomic_files import atomic_write
from codream.cli.dev_certificates import generate_dev_pki
from coordinator.security import generate_tokens, write_private_file, write_tokens


def codream_command(log_json: bool = False) -> list[str]:
    """The `codream` entry point of this interpreter (works without the script on PATH)."""
    return [sys.executable, "-m", "codream.cli", "--log-level", "INFO", *(["--log-json"] if log_json else [])]


@dataclass
class LocalCluster:
    run_dir: Path
    nodes: int
    config_args: Sequence[str] = ()  # flags for the run config, passed to the coordinator
    coordinator_args: Sequence[str] = ()
    node_args: Sequence[str] = ()
    tls: bool = False
    log_json: bool = False  # structured logs from every process
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    port: int = 0
    health_port: int = 0
    metrics_port: int = 0

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.node_ids = [f"node-{i}" for i in range(self.nodes)]
        self.logs = self.run_dir / "logs"
        self.secrets = self.run_dir / "secrets"
        self._restarts: dict[str, int] = {}

    # ---- start ----------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        self.prepare()
        self.start_coordinator(timeout)
        for node in self.node_ids:
            self.start_node(node)

    def prepare(self) -> None:
        """Folders and per-cluster credentials: tokens, and a dev PKI with `tls`."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.secrets.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secrets, 0o700)
        tokens = generate_tokens(self.node_ids)
        write_tokens(self.secrets / "tokens.toml", tokens)
        for node, token in tokens.items():
            write_private_file(self.secrets / f"{node}.token", token.encode())
        if self.tls:
            generate_dev_pki(self.secrets / "pki", self.node_ids)

    def start_coordinator(self, timeout: float = 120.0, port: int = 0) -> None:
        """`port`: reuse a port (a restarted coordinator must be where its nodes dial)."""
        ready = self.run_dir / "coordinator.ready.json"
        ready.unlink(missing_ok=True)
        args = [*codream_command(self.log_json), "coordinator", *self.config_args,
                "--clients", str(self.nodes),
                "--out", str(self.run_dir), "--host", "127.0.0.1", "--port", str(port), "--health-port", "0",
                "--metrics-port", "0",
                "--tokens-file", str(self.secrets / "tokens.toml"), "--ready-file", str(ready),
                *self.coordinator_args]
        if self.tls:
            pki = self.secrets / "pki"
            args += ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                     "--tls-client-ca", str(pki / "ca.pem")]  # identities: from the certificates
        process = self._spawn("coordinator", args)
        deadline = time.monotonic() + timeout
        while not ready.is_file():
            if process.poll() is not None:
                raise RuntimeError(f"the coordinator exited ({process.returncode}) before serving; "
                                   f"see {self.logs / 'coordinator.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the coordinator did not serve within {timeout:.0f} s")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.port, self.health_port = info["port"], info["health_port"]
        self.metrics_port = info["metrics_port"]

    def start_node(self, node: str, extra: Sequence[str] = ()) -> None:
        args = [*codream_command(self.log_json), "node", "--coordinator", f"127.0.0.1:{self.port}",
                "--node-id", node, "--token-file", str(self.secrets / f"{node}.token"),
                "--state-dir", str(self.run_dir / "state"),
                "--listen-host", "127.0.0.1", "--health-port", "0", "--metrics-port", "0",
                *self.node_args, *extra]
        if self.tls:
            pki = self.secrets / "pki"
            args += ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / f"{node}.pem"),
                     "--tls-key", str(pki / f"{node}.key")]  # mTLS-bound identity
        self._spawn(node, args)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        count = self._restarts.get(name, 0)
        self._restarts[name] = count + 1
        log_path = self.logs / (f"{name}.log" if count == 0 else f"{name}.{count}.log")
        env = self.environment()
        with log_path.open("wb") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        self.processes[name] = process
        return process

    def environment(self) -> dict[str, str]:
        """Every process's environment: this one's, unbuffered output, and `env` on top. No
        thread-count variables: each process applies the run config's `threads` itself."""
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}

    # ---- control --------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """SIGKILL: no goodbye, no cleanup — what a crash looks like to the others."""
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def wait_coordinator(self, timeout: float) -> int:
        return self.processes["coordinator"].wait(timeout)

    def wait_all(self, timeout: float) -> dict[str, int | None]:
        deadline = time.monotonic() + timeout
        codes: dict[str, int | None] = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[name] = None
        return codes

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM everyone, then SIGKILL whatever is still there after `grace` seconds."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def gather_models(self) -> list[Path]:
        """Copies each node's final model from its state dir (STATE/NODE.model.pt, which the node
        wrote itself) to RUN/models/NODE.pt, beside the coordinator's: on one machine the
        launcher can gather what, in a real federation, each organisation keeps."""
        gathered = []
        for node in self.node_ids:
            source = self.run_dir / "state" / f"{node}.model.pt"  # client_node.final_model
            if source.is_file():
                target = self.run_dir / "models" / f"{node}.pt"
                target.parent.mkdir(parents=True, exist_ok=True)
                data = source.read_bytes()
                atomic_write(target, lambda stream, data=data: stream.write(data))
                gathered.append(target)
        return gathered

    def log_text(self, name: str) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob(f"{name}*.log")))

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
