"""Renders the Kubernetes manifests (deploy/k8s), validates their schemas, and reads them.

Reading covers the objects themselves and each pod as `codream` would see it: its arguments
after $(VAR) expansion, parsed by the program's own parser, its env, and the files its mounts
hold. The checks live in manifest_kubernetes_checks and manifest_cli_checks; each returns a
list of problems, naming the object, and never asserts.
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


# ---- pods as the program sees them: flags, env, mounted files -------------------------------
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
