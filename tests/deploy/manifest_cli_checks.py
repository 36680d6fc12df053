"""Checks of the rendered manifests against `codream` itself; each returns a list of problems.

Every container's arguments are parsed with the program's own parser and its run config loaded
with its own loader, so the manifests cannot drift from `codream coordinator` / `codream node`:
ports, probes, env, paths, the run config, the node roster and the coordinator's address.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from manifest_objects import (
    READINESS_SERVICE,
    SOURCES,
    Pod,
    Problems,
    env_values,
    file_in,
    mount_for,
    name_of,
    of_kind,
    pod_labels,
    pod_names,
    pod_spec,
    pods,
    read_file,
    selects,
    service_link_env,
)

# Read by a library in the process rather than by codream (torch's OpenMP runtime).
RUNTIME_ENV = frozenset({"OMP_NUM_THREADS"})
# Flags naming files or directories, and those the program writes to.
PATH_FLAGS = ("config", "tls_cert", "tls_key", "tls_client_ca", "tls_ca", "tokens_file", "token_file",
              "ready_file", "out", "state_dir", "identity_key", "peer_identities", "identities")
WRITTEN = {"out": True, "state_dir": True, "ready_file": False}  # flag -> must persist


# ---- each pod: ports and probes, env, paths -------------------------------------------------
def port_problems(pod: Pod) -> Problems:
    """Named containerPorts equal the ports the process binds; probes hit its health port."""
    problems = []

    def bound(flag: str, off: str | None = None) -> int | None:
        return None if off and getattr(pod.args, off, False) else getattr(pod.args, flag, None)

    binds = {"grpc": bound("port"), "health": bound("health_port", "no_health"),
             "metrics": bound("metrics_port", "no_metrics")}
    for port in pod.container.get("ports", []):
        name = port.get("name")
        if binds.get(name) is None:
            problems.append(f"{pod.where}: containerPort {name or port['containerPort']} is not a port "
                            f"`codream {pod.command}` serves")
        elif port["containerPort"] != binds[name]:
            problems.append(f"{pod.where}: containerPort {name} {port['containerPort']} but the process "
                            f"binds {binds[name]}")
    for name, port in binds.items():
        if port is not None and pod.port(name) is None:
            problems.append(f"{pod.where}: the process serves {name} on {port}, no containerPort declares it")
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = pod.container.get(kind)
        if probe is None:
            continue
        if "grpc" not in probe:
            problems.append(f"{pod.where}: {kind} is not a native gRPC probe")
            continue
        if probe["grpc"].get("port") != binds["health"]:
            problems.append(f"{pod.where}: {kind} port {probe['grpc'].get('port')} is not the health port "
                            f"{binds['health']}")
        wanted = READINESS_SERVICE[pod.command] if kind == "readinessProbe" else ""
        if probe["grpc"].get("service", "") != wanted:
            problems.append(f"{pod.where}: {kind} checks service {probe['grpc'].get('service', '')!r}, "
                            f"expected {wanted!r}")
    return problems


def env_problems(pod: Pod, objects: list[dict]) -> Problems:
    """Every env var is used in $(VAR) or read by the program; CODREAM_* must load as run config."""
    from codream.cli.node_command import ENVIRONMENT as NODE_ENVIRONMENT
    from codream.cli.run_config import load_run_config
    from codream.config import ConfigError

    problems = []
    spec = pod_spec(pod.workload)
    env = env_values(pod.container, pod.name)
    if pod.container.get("envFrom"):
        problems.append(f"{pod.where}: envFrom: variables that cannot be checked against the program")
    for name in env:
        read = (name in RUNTIME_ENV or name in pod.used
                or (pod.command == "node" and name in NODE_ENVIRONMENT)
                or (pod.command == "coordinator" and name.startswith("CODREAM_")))
        if not read:
            problems.append(f"{pod.where}: env {name} is neither used in the args nor read by "
                            f"`codream {pod.command}`")
    if spec.get("enableServiceLinks", True) is not False:
        env = {**service_link_env(objects), **env}
    if pod.command == "coordinator":
        try:
            load_run_config(None, {k: v for k, v in env.items() if k.startswith("CODREAM_")}, {})
        except ConfigError as error:
            problems.append(f"{pod.where}: its environment is not a valid run config: {error}")
    return problems


def path_problems(pod: Pod, objects: list[dict]) -> Problems:
    """Every path in a flag lies in a mounted volume; outputs on writable, persistent ones."""
    problems = []
    paths = {flag: getattr(pod.args, flag, None) for flag in PATH_FLAGS}
    dataset = getattr(pod.args, "dataset", None) or ""
    if dataset.startswith("npz:"):
        paths["dataset"] = dataset[len("npz:"):]
    for flag, path in paths.items():
        if path is None:
            continue
        option = "--" + flag.replace("_", "-")
        found = mount_for(pod, path) if PurePosixPath(path).is_absolute() else None
        if found is None:
            problems.append(f"{pod.where}: {option} {path} is not under any volumeMount")
            continue
        mount, volume = found
        if flag in WRITTEN and mount.get("readOnly"):
            problems.append(f"{pod.where}: {option} {path} is on a read-only mount")
        if WRITTEN.get(flag) and not volume.get("persistentVolumeClaim"):
            problems.append(f"{pod.where}: {option} {path} is not on a persistent volume")
        key = str(PurePosixPath(path).relative_to(mount["mountPath"]))
        for field, kind, name_field in SOURCES:
            if field not in volume:
                continue
            rendered, content = file_in(objects, kind, volume[field][name_field], key)
            if rendered and content is None:
                problems.append(f"{pod.where}: {option} {path}: {kind} {volume[field][name_field]} has no "
                                f"key {key}")
    return problems


# ---- the federation: run config, roster, addresses ------------------------------------------
def federation_problems(objects: list[dict], scratch: Path) -> Problems:
    """The whole CLI picture: flags parse, ports, env, paths, run config, roster, addresses."""
    # config_flags is exactly the flags-to-config mapping the CLI uses.
    from codream.cli.run_config import config_flags, load_run_config
    from codream.config import ConfigError

    found, problems = pods(objects)
    for pod in found:
        problems += port_problems(pod) + env_problems(pod, objects) + path_problems(pod, objects)
    coordinators = [p for p in found if p.command == "coordinator"]
    nodes = [p for p in found if p.command == "node"]
    node_sets = {name_of(p.workload): p.workload for p in nodes}
    if len(coordinators) != 1 or len(node_sets) != 1:
        return problems + [f"expected one coordinator pod and one node workload, found "
                           f"{len(coordinators)} and {len(node_sets)}"]
    coordinator, (node_set,) = coordinators[0], node_sets.values()
    deployment, where = coordinator.workload, coordinator.where
    if deployment["kind"] != "Deployment" or node_set["kind"] != "StatefulSet":
        problems.append("the coordinator must be a Deployment and the nodes a StatefulSet")
    if deployment["spec"].get("replicas", 1) != 1:
        problems.append(f"{name_of(deployment)}: replicas is not 1")
    if deployment["spec"].get("strategy", {}).get("type") != "Recreate":
        problems.append(f"{name_of(deployment)}: strategy is not Recreate "
                        "(two coordinators would share one checkpoint)")
    grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    if not grace > coordinator.args.grace_seconds:
        problems.append(f"{where}: terminationGracePeriodSeconds {grace} is not longer than "
                        f"--grace-seconds {coordinator.args.grace_seconds:g}")
    # The run config as the coordinator would build it: TOML < CODREAM_* env < flags.
    config = None
    toml = read_file(coordinator, objects, coordinator.args.config or "")
    if toml is None:
        problems.append(f"{where}: --config is not a file of a rendered ConfigMap")
    else:
        run_toml = scratch / "run.toml"
        run_toml.write_bytes(toml)
        environ = {k: v for k, v in env_values(coordinator.container, coordinator.name).items()
                   if k.startswith("CODREAM_")}
        try:
            load_run_config(str(run_toml), {}, {})
            config = load_run_config(str(run_toml), environ, config_flags(coordinator.args))
        except ConfigError as error:
            problems.append(f"{where}: run config does not load: {error}")
    replicas = node_set["spec"].get("replicas", 1)
    roster = [n.strip() for n in (coordinator.args.node_ids or "").split(",") if n.strip()]
    if config is not None and config.clients != replicas:
        problems.append(f"run config clients = {config.clients} but {name_of(node_set)} has "
                        f"{replicas} replicas")
    if roster != pod_names(node_set):
        problems.append(f"{where}: --node-ids {roster} is not the node pods {pod_names(node_set)}")
    for pod in nodes:
        if pod.args.node_id != pod.name:
            problems.append(f"{pod.where}: --node-id in pod {pod.name} is {pod.args.node_id!r}")
    # A process that exits 0 after the run is restarted by Kubernetes (restartPolicy Always).
    for pod, wanted in [(coordinator, "serve")] + [(pod, "wait") for pod in nodes[:1]]:
        if getattr(pod.args, "after_run", "exit") != wanted:
            problems.append(f"{pod.where}: without --after-run={wanted} a finished run ends the process "
                            "and Kubernetes restarts it")
    problems += address_problems(objects, coordinator, nodes)
    problems += identity_problems(objects, coordinator, nodes, config)
    return list(dict.fromkeys(problems))  # one per container, not one per pod


def identity_problems(objects: list[dict], coordinator: Pod, nodes: list[Pod], config) -> Problems:
    """Secure aggregation is authenticated or refused: the run requires it, each node requires
    it, and every identity the pods are given agrees: a node's --identity-key is the key its
    certificate carries and the one the roster (--peer-identities, the coordinator's
    --identities) pins for its node id."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from codream import identity_certificates

    problems = []
    if config is not None and config.secagg.enabled and config.secagg.authentication != "required":
        problems.append(f"{coordinator.where}: secagg.authentication is "
                        f"{config.secagg.authentication!r}, not 'required'")
    rosters = {}
    if getattr(coordinator.args, "identities", None):
        rosters[coordinator.where] = read_file(coordinator, objects, coordinator.args.identities)
    for pod in nodes:
        if getattr(pod.args, "secagg_authentication", "auto") != "required":
            problems.append(f"{pod.where}: --secagg-authentication is not required")
        node_pem = read_file(pod, objects, pod.args.tls_cert or "")
        carried = None
        if node_pem is not None:
            carried = identity_certificates.identity_key_of(x509.load_pem_x509_certificate(node_pem))
            if carried is None:
                problems.append(f"{pod.where}: its certificate carries no identity key")
        key_pem = read_file(pod, objects, getattr(pod.args, "identity_key", None) or "")
        if key_pem is not None:
            raw = serialization.load_pem_private_key(key_pem, None).public_key().public_bytes_raw()
            if carried is not None and raw != carried:
                problems.append(f"{pod.where}: --identity-key is not the key its certificate carries")
            roster_toml = read_file(pod, objects, pod.args.peer_identities or "")
            rosters[pod.where] = roster_toml
            for where, text in rosters.items():
                pinned = _roster(text).get(pod.args.node_id) if text is not None else None
                if pinned != raw:
                    problems.append(f"{where}: the roster does not pin {pod.args.node_id}'s identity key")
    return problems


def _roster(text: bytes) -> dict[str, bytes]:
    from codream.toml_compat import tomllib

    table = tomllib.loads(text.decode()).get("identities", {})
    return {node: bytes.fromhex(value) for node, value in table.items()}


def address_problems(objects: list[dict], coordinator: Pod, nodes: list[Pod]) -> Problems:
    """Nodes dial a Service of the coordinator's gRPC port by a name its certificate carries."""
    from cryptography import x509

    problems = []
    grpc_port = coordinator.port("grpc")
    names, ports = set(), set()
    for service in of_kind(objects, "Service"):
        if not selects(service["spec"].get("selector"), pod_labels(coordinator.workload)):
            continue
        name, namespace = service["metadata"]["name"], service["metadata"].get("namespace", "default")
        names |= {name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
                  f"{name}.{namespace}.svc.cluster.local"}
        ports |= {p["port"] for p in service["spec"]["ports"]
                  if p.get("targetPort", p["port"]) in ("grpc", grpc_port)}
    server_pem = read_file(coordinator, objects, coordinator.args.tls_cert or "")
    sans = None
    if server_pem is not None:
        certificate = x509.load_pem_x509_certificate(server_pem)
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = set(sans.get_values_for_type(x509.DNSName))
    for pod in nodes:
        host, _, port = pod.args.coordinator.rpartition(":")
        if host not in names or not port.isdigit() or int(port) not in ports:
            problems.append(f"{pod.where}: --coordinator {pod.args.coordinator} is not a coordinator "
                            f"Service's gRPC port (names {sorted(names)}, ports {sorted(ports)})")
        if sans is not None and (pod.args.tls_server_name or host) not in sans:
            problems.append(f"{pod.where}: the server certificate does not name {host} (SANs {sorted(sans)})")
        node_pem = read_file(pod, objects, pod.args.tls_cert or "")
        if node_pem is not None:
            subject = x509.load_pem_x509_certificate(node_pem).subject
            common_name = subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
            if common_name != pod.args.node_id:
                problems.append(f"{pod.where}: certificate CN {common_name!r} is not the node id "
                                f"{pod.args.node_id!r}")
    return problems
