"""Checks over the rendered Kubernetes manifests (deploy/k8s); each returns a list of problems.

A check never asserts: it returns what is wrong, naming the object, so the tests can require an
empty list for the real manifests and a non-empty one for a deliberately broken copy. The CLI
checks parse every container's arguments with the program's own parser and run config loader,
so the manifests cannot drift from `codream coordinator` / `codream node`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBE_VERSIONS = ("1.27.0", "1.37.0")  # the oldest (native gRPC probes GA) and newest supported
WORKLOADS = ("Deployment", "StatefulSet")
READINESS_SERVICE = {"coordinator": "codream.v1.Coordinator", "node": "codream.node.Membership"}
# Read by a library in the process rather than by codream (torch's OpenMP runtime).
RUNTIME_ENV = frozenset({"OMP_NUM_THREADS"})
# Flags naming files or directories, and those the program writes to.
PATH_FLAGS = ("config", "tls_cert", "tls_key", "tls_client_ca", "tls_ca", "tokens_file", "token_file",
              "ready_file", "out", "state_dir")
WRITTEN = {"out": True, "state_dir": True, "ready_file": False}  # flag -> must persist
SOURCES = (("configMap", "ConfigMap", "name"), ("secret", "Secret", "secretName"))  # file volumes
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

Problems = list[str]


# ---- rendering ------------------------------------------------------------------------------
def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


def render_dev(scratch: Path) -> list[dict[str, Any]]:
    """Renders overlays/dev from a copy, after its generator script wrote certs/ there."""
    copy = scratch / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("certs"))
    script = copy / "overlays" / "dev" / "generate-certs.sh"
    # The venv's bin holds `codream`; the script finds it on PATH.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise AssertionError(f"{script.name} failed:\n{result.stdout}{result.stderr}")
    return render(copy / "overlays" / "dev")


# ---- lookups --------------------------------------------------------------------------------
def name_of(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def of_kind(objects: Iterable[dict], *kinds: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] in kinds]


def find(objects: Iterable[dict], kind: str, name: str) -> dict | None:
    return next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name), None)


def pod_spec(workload: Mapping[str, Any]) -> dict:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Mapping[str, Any]) -> dict:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def pod_names(workload: Mapping[str, Any]) -> list[str]:
    """StatefulSet pods are <name>-<ordinal>; a Deployment's get a random suffix."""
    name = workload["metadata"]["name"]
    if workload["kind"] == "StatefulSet":
        return [f"{name}-{i}" for i in range(workload["spec"].get("replicas", 1))]
    return [f"{name}-5d9c7b6f4-x2x7q"]


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---- schemas --------------------------------------------------------------------------------
def schema_problems(objects: Iterable[dict], versions: Iterable[str] = KUBE_VERSIONS) -> Problems:
    problems = []
    for obj in objects:
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                problems.append(f"{name_of(obj)}: invalid for Kubernetes {version}: {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                problems.append(f"{name_of(obj)}: {error.message}")
    return problems


# ---- pods: security, probes, resources, images ---------------------------------------------
def image_problem(image: str) -> str | None:
    if "@" in image:
        return None  # pinned by digest
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no explicit tag"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} is :latest"
    return None


def pod_problems(objects: list[dict]) -> Problems:
    """Restricted security contexts, probes, resources, pinned images, no API token."""
    problems = []
    for namespace in of_kind(objects, "Namespace"):
        if namespace["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
            problems.append(f"{name_of(namespace)}: pod-security.kubernetes.io/enforce is not restricted")
    for workload in of_kind(objects, *WORKLOADS):
        spec, where = pod_spec(workload), name_of(workload)
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken is not false")
        account = find(objects, "ServiceAccount", spec.get("serviceAccountName", "default"))
        if account is not None and account.get("automountServiceAccountToken") is not False:
            problems.append(f"{name_of(account)}: automountServiceAccountToken is not false")
        pod_context = spec.get("securityContext", {})
        for container in spec.get("initContainers", []) + spec["containers"]:
            at = f"{where} container {container['name']}"
            context = container.get("securityContext", {})

            def effective(key: str, context: dict = context, pod_context: dict = pod_context) -> Any:
                return context.get(key, pod_context.get(key))

            if effective("runAsNonRoot") is not True:
                problems.append(f"{at}: runAsNonRoot is not true")
            if not isinstance(effective("runAsUser"), int) or effective("runAsUser") == 0:
                problems.append(f"{at}: runAsUser is not a non-zero uid")
            if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{at}: seccompProfile is not RuntimeDefault")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{at}: readOnlyRootFilesystem is not true")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at}: allowPrivilegeEscalation is not false")
            if "ALL" not in context.get("capabilities", {}).get("drop", []):
                problems.append(f"{at}: capabilities do not drop ALL")
            if context.get("capabilities", {}).get("add"):
                problems.append(f"{at}: adds capabilities")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in container:
                    problems.append(f"{at}: no {probe}")
            for part in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(container.get("resources", {}).get(part, {}))
                if missing:
                    problems.append(f"{at}: resources.{part} lacks {', '.join(sorted(missing))}")
            problem = image_problem(container.get("image", ""))
            if problem:
                problems.append(f"{at}: {problem}")
    return problems


def service_problems(objects: list[dict]) -> Problems:
    """Every Service selects pods, and every targetPort is a containerPort of each of them."""
    problems = []
    workloads = of_kind(objects, *WORKLOADS)
    for service in of_kind(objects, "Service"):
        where, selector = name_of(service), service["spec"].get("selector")
        chosen = [w for w in workloads if selects(selector, pod_labels(w))]
        if not chosen:
            problems.append(f"{where}: selector {selector} selects no workload's pods")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            protocol = port.get("protocol", "TCP")
            for workload in chosen:
                declared = [p for c in pod_spec(workload)["containers"] for p in c.get("ports", [])
                            if p.get("protocol", "TCP") == protocol]
                key = "name" if isinstance(target, str) else "containerPort"
                if not any(p.get(key) == target for p in declared):
                    problems.append(f"{where}: port {port.get('name', port['port'])} targetPort {target!r} "
                                    f"is no {protocol} containerPort of {name_of(workload)}")
    for statefulset in of_kind(objects, "StatefulSet"):
        governing = find(objects, "Service", statefulset["spec"].get("serviceName", ""))
        if governing is None or governing["spec"].get("clusterIP") != "None":
            problems.append(f"{name_of(statefulset)}: serviceName is not a headless Service here")
        elif not selects(governing["spec"].get("selector"), pod_labels(statefulset)):
            problems.append(f"{name_of(statefulset)}: its headless Service does not select its pods")
    return problems


# ---- the command line -----------------------------------------------------------------------
def parse(argv: list[str]) -> tuple[argparse.Namespace | None, str | None]:
    """The program's own parser; a flag it lacks is an error message, not an exit."""
    from codream.cli import make_parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return make_parser().parse_args(argv), None
    except SystemExit:
        lines = stderr.getvalue().strip().splitlines()
        return None, f"codream rejects {argv}: {lines[-1] if lines else 'exit'}"


def env_values(container: Mapping[str, Any], pod_name: str) -> dict[str, str]:
    """What each env var would hold in the pod; only metadata.name matters to the checks."""
    values = {}
    for var in container.get("env", []):
        source = var.get("valueFrom", {})
        if "value" in var:
            values[var["name"]] = str(var["value"])
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            values[var["name"]] = pod_name
        elif "resourceFieldRef" in source:
            values[var["name"]] = "2"
        else:
            values[var["name"]] = "placeholder"
    return values


def expand(container: Mapping[str, Any], pod_name: str) -> tuple[list[str], set[str], Problems]:
    """argv after Kubernetes' $(VAR) expansion; (argv, the variables used, undefined ones)."""
    values = env_values(container, pod_name)
    used: set[str] = set()
    problems: Problems = []

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        var = match.group(1)
        used.add(var)
        if var not in values:
            problems.append(f"$({var}) is not defined in the container's env")
            return match.group(0)
        return values[var]

    command = container.get("command", [])
    if command and PurePosixPath(command[0]).name != "codream":
        problems.append(f"command {command} does not run codream")
    words = list(command[1:]) + list(container.get("args", []))
    return [_VAR.sub(substitute, word) for word in words], used, problems


def service_link_env(objects: list[dict]) -> dict[str, str]:
    """The variables the kubelet injects for each ClusterIP Service unless enableServiceLinks is false."""
    env = {}
    for service in of_kind(objects, "Service"):
        if service["spec"].get("clusterIP") == "None":
            continue
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        port = service["spec"]["ports"][0]["port"]
        env.update({f"{prefix}_SERVICE_HOST": "10.96.0.10", f"{prefix}_SERVICE_PORT": str(port),
                    f"{prefix}_PORT": f"tcp://10.96.0.10:{port}"})
    return env


class Pod:
    """One pod of a workload as the program would see it: parsed flags, env, mounts."""

    def __init__(self, workload: dict, container: dict, name: str, args: argparse.Namespace,
                 used: set[str]):
        self.workload, self.container, self.name, self.args, self.used = workload, container, name, args, used
        self.where = f"{name_of(workload)} container {container['name']}"
        self.command = args.command

    def port(self, name: str) -> int | None:
        ports = self.container.get("ports", [])
        return next((p["containerPort"] for p in ports if p.get("name") == name), None)


def pods(objects: list[dict]) -> tuple[list[Pod], Problems]:
    found, problems = [], []
    for workload in of_kind(objects, *WORKLOADS):
        for container in pod_spec(workload)["containers"]:
            for pod_name in pod_names(workload):
                argv, used, undefined = expand(container, pod_name)
                at = f"{name_of(workload)} container {container['name']}"
                problems += [f"{at}: {p}" for p in undefined]
                args, error = parse(argv)
                if error:
                    problems.append(f"{at}: {error}")
                elif args.command not in READINESS_SERVICE:
                    problems.append(f"{at}: runs `codream {args.command}`, not coordinator or node")
                else:
                    found.append(Pod(workload, container, pod_name, args, used))
    return found, list(dict.fromkeys(problems))


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
    from client_node.cli import ENVIRONMENT as NODE_ENVIRONMENT
    from codream.cli import load_run_config
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


def mount_for(pod: Pod, path: str) -> tuple[dict, dict] | None:
    """(volumeMount, volume) that holds `path`: the longest mountPath containing it."""
    mounts = [m for m in pod.container.get("volumeMounts", [])
              if PurePosixPath(path).is_relative_to(m["mountPath"])]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volumes = {v["name"]: v for v in pod_spec(pod.workload).get("volumes", [])}
    claims = {t["metadata"]["name"] for t in pod.workload["spec"].get("volumeClaimTemplates", [])}
    if mount["name"] in claims:  # one claim per pod, from the StatefulSet's template
        return mount, {"name": mount["name"], "persistentVolumeClaim": {"claimName": mount["name"]}}
    volume = volumes.get(mount["name"], {})
    return mount, volume


def file_in(objects: list[dict], kind: str, name: str, key: str) -> tuple[bool, bytes | None]:
    """(is the object rendered, the key's content or None)."""
    obj = find(objects, kind, name)
    if obj is None:
        return False, None
    if key in obj.get("data", {}):
        value = obj["data"][key]
        return True, base64.b64decode(value) if kind == "Secret" else value.encode()
    return True, None


def read_file(pod: Pod, objects: list[dict], path: str) -> bytes | None:
    """The file's content from the rendered ConfigMap/Secret behind its mount, if there is one."""
    found = mount_for(pod, path)
    if found is None:
        return None
    mount, volume = found
    key = str(PurePosixPath(path).relative_to(mount["mountPath"]))
    for field, kind, name_field in SOURCES:
        if field in volume:
            return file_in(objects, kind, volume[field][name_field], key)[1]
    return None


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


def federation_problems(objects: list[dict], scratch: Path) -> Problems:
    """The whole CLI picture: flags parse, ports, env, paths, run config, roster, addresses."""
    # _flags is private, but it is exactly the flags-to-config mapping the CLI uses.
    from codream.cli import _flags, load_run_config
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
            config = load_run_config(str(run_toml), environ, _flags(coordinator.args))
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
    return list(dict.fromkeys(problems))  # one per container, not one per pod


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


# ---- network policies -----------------------------------------------------------------------
def _peers_are(peers: list[dict], pod_selector: Mapping[str, str], namespace: str | None) -> bool:
    """Every peer is exactly pods matching pod_selector, in `namespace` (None: this namespace)."""
    for peer in peers:
        if set(peer) - {"podSelector", "namespaceSelector"} or "podSelector" not in peer:
            return False
        if peer["podSelector"].get("matchExpressions") or not selects(peer["podSelector"].get("matchLabels"),
                                                                       pod_selector):
            return False
        labels = peer.get("namespaceSelector", {}).get("matchLabels", {})
        in_namespace = labels.get("kubernetes.io/metadata.name")
        if in_namespace != namespace or (namespace is None and "namespaceSelector" in peer):
            return False
    return bool(peers)


def _ports(rule: Mapping[str, Any]) -> set[tuple[str, Any]]:
    return {(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports", [])}


def network_problems(objects: list[dict]) -> Problems:
    """Default deny; nodes reach only the coordinator's gRPC port and DNS; metrics from monitoring."""
    problems = []
    policies = of_kind(objects, "NetworkPolicy")
    if not any(p["spec"].get("podSelector") in ({}, {"matchLabels": {}})
               and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies):
        problems.append("no default-deny NetworkPolicy (all pods, Ingress and Egress, no rules)")
    workloads = {w["metadata"]["name"]: w for w in of_kind(objects, *WORKLOADS)}
    coordinator, node = workloads.get("codream-coordinator"), workloads.get("codream-node")
    if coordinator is None or node is None:
        return problems + ["network policies: no codream-coordinator / codream-node workload to check"]
    grpc = next(p["containerPort"] for c in pod_spec(coordinator)["containers"] for p in c.get("ports", [])
                if p.get("name") == "grpc")
    metrics = {p["containerPort"] for w in (coordinator, node) for c in pod_spec(w)["containers"]
               for p in c.get("ports", []) if p.get("name") == "metrics"}
    dns = {"k8s-app": "kube-dns"}
    to_coordinator = to_dns = False
    for policy in policies:
        spec, where = policy["spec"], name_of(policy)
        selector = spec.get("podSelector", {})
        if selector.get("matchExpressions"):
            problems.append(f"{where}: matchExpressions are not checked; use matchLabels")
            continue
        targets = [w for w in (coordinator, node) if all(pod_labels(w).get(k) == v
                                                         for k, v in selector.get("matchLabels", {}).items())]
        for rule in spec.get("egress", []) if node in targets else []:
            peers = rule.get("to", [])
            if _peers_are(peers, pod_labels(coordinator), None) and _ports(rule) == {("TCP", grpc)}:
                to_coordinator = True
            elif (_peers_are(peers, dns, "kube-system") and _ports(rule)
                  and _ports(rule) <= {("UDP", 53), ("TCP", 53)}):
                to_dns = True
            else:
                problems.append(f"{where}: node egress rule {rule} is neither the coordinator's gRPC port "
                                "nor DNS")
        for rule in spec.get("ingress", []):
            ports = _ports(rule)
            monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
            from_monitoring = all(peer == monitoring for peer in rule.get("from", []))
            if ports and {port for _, port in ports} <= metrics and rule.get("from") and from_monitoring:
                continue
            if (targets == [coordinator] and ports == {("TCP", grpc)}
                    and _peers_are(rule.get("from", []), pod_labels(node), None)):
                continue
            problems.append(f"{where}: ingress rule {rule} is neither gRPC from the nodes nor metrics "
                            f"from the namespace monitoring")
    if not to_coordinator:
        problems.append("no NetworkPolicy lets the nodes reach the coordinator's gRPC port")
    if not to_dns:
        problems.append("no NetworkPolicy lets the nodes reach DNS (kube-dns, port 53)")
    return problems


# ---- the GPU overlay ------------------------------------------------------------------------
def gpu_problems(base: list[dict], gpu: list[dict]) -> Problems:
    """The GPU overlay changes the node StatefulSet's image, device, GPU limit and toleration only."""
    import copy

    problems = []
    node = find(gpu, "StatefulSet", "codream-node")
    if node is None:
        return ["gpu overlay: no StatefulSet/codream-node"]
    container = pod_spec(node)["containers"][0]
    if int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) < 1:
        problems.append("gpu overlay: the node asks for no nvidia.com/gpu")
    args, error = parse(expand(container, "codream-node-0")[0])
    if error or not args.device.startswith("cuda"):
        problems.append(f"gpu overlay: the node does not run with --device cuda ({error or args.device})")
    if not container.get("image", "").endswith("-cuda"):
        problems.append(f"gpu overlay: node image {container.get('image')} is not a -cuda tag")
    tolerations = pod_spec(node).get("tolerations", [])
    if not any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule" for t in tolerations):
        problems.append("gpu overlay: no toleration for nvidia.com/gpu NoSchedule")
    # Undo exactly those changes; what remains must be the base.
    undone = copy.deepcopy(node)
    base_node = find(base, "StatefulSet", "codream-node")
    base_container = pod_spec(base_node)["containers"][0]
    spec, changed = pod_spec(undone), pod_spec(undone)["containers"][0]
    changed["image"] = base_container["image"]
    changed["args"] = [a if not a.startswith("--device") else d
                       for a, d in zip(changed["args"], base_container["args"], strict=False)]
    changed.get("resources", {}).get("limits", {}).pop("nvidia.com/gpu", None)
    spec["tolerations"] = [t for t in tolerations if t.get("key") != "nvidia.com/gpu"]
    if not spec["tolerations"]:
        del spec["tolerations"]
    if undone != base_node:
        problems.append("gpu overlay: the node StatefulSet differs from base beyond image, device, GPU "
                        "and toleration")
    rest = [o for o in gpu if o is not node]
    if rest != [o for o in base if o is not base_node]:
        problems.append("gpu overlay: objects other than the node StatefulSet differ from base")
    return problems
