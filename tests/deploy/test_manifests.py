"""The Kubernetes manifests (deploy/k8s), rendered with kustomize and checked offline.

Every overlay is rendered with `kubectl kustomize`, validated against the Kubernetes schemas of
the oldest and newest supported versions, and checked against the program itself: container
arguments are parsed by `codream`'s own parser, the run config is loaded by its own loader.
Each check is also run against deliberately broken copies, so none of them can pass vacuously.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

INSTALL = "a test dependency: pip install -e '.[test]'"
pytest.importorskip("yaml", reason=f"PyYAML is {INSTALL}")
pytest.importorskip("kubernetes_validate", reason=f"kubernetes-validate is {INSTALL}")
if shutil.which("kubectl") is None:
    pytest.skip("kubectl (with its built-in kustomize) is not on PATH; CI machines have it",
                allow_module_level=True)

from manifest_cli_checks import federation_problems  # noqa: E402 — after the skips above
from manifest_kubernetes_checks import (  # noqa: E402
    gpu_problems,
    network_problems,
    pod_problems,
    service_problems,
)
from manifest_objects import (  # noqa: E402
    K8S,
    KUBE_VERSIONS,
    find,
    of_kind,
    pod_spec,
    render,
    render_dev,
    schema_problems,
)

OVERLAYS = ("base", "dev", "gpu")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    return {"base": render(K8S / "base"),
            "dev": render_dev(tmp_path_factory.mktemp("dev")),
            "gpu": render(K8S / "overlays" / "gpu")}


def all_problems(objects: list[dict], scratch: Path) -> list[str]:
    return (pod_problems(objects) + service_problems(objects) + federation_problems(objects, scratch)
            + network_problems(objects))


# ---- the real manifests ---------------------------------------------------------------------
def test_each_overlay_renders_the_same_federation(rendered):
    kinds = {"Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Service", "Deployment",
             "StatefulSet", "NetworkPolicy"}
    for overlay in OVERLAYS:
        assert {o["kind"] for o in rendered[overlay]} - {"Secret"} == kinds, overlay
        assert {o["metadata"].get("namespace", "codream") for o in rendered[overlay]} == {"codream"}, overlay
    assert len(rendered["base"]) == 13
    # dev: the two TLS Secrets, the identity keys' Secret and the roster's ConfigMap
    assert len(rendered["dev"]) == len(rendered["gpu"]) + 4 == len(rendered["base"]) + 4


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_supported_kubernetes_versions(rendered, overlay):
    assert KUBE_VERSIONS == ("1.27.0", "1.37.0")
    assert schema_problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_restricted_probed_limited_and_pinned(rendered, overlay):
    assert pod_problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_and_target_declared_ports(rendered, overlay):
    assert service_problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_arguments_match_the_program(rendered, overlay, tmp_path):
    """Flags parse with codream's parser; ports, env, paths, run config and roster agree."""
    assert federation_problems(rendered[overlay], tmp_path) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_open_only_the_federation(rendered, overlay):
    assert network_problems(rendered[overlay]) == []


def test_base_leaves_the_tls_secrets_to_the_user_and_dev_generates_them(rendered):
    assert of_kind(rendered["base"], "Secret") == []
    secrets = {s["metadata"]["name"]: s for s in of_kind(rendered["dev"], "Secret")}
    for workload in of_kind(rendered["dev"], "Deployment", "StatefulSet"):
        for volume in pod_spec(workload)["volumes"]:
            if "secret" in volume:
                # Rewritten to the generated (hashed) name, so federation_problems read real files.
                assert volume["secret"]["secretName"] in secrets
                assert volume["secret"]["defaultMode"] == 0o440
    node_tls = next(s for name, s in secrets.items() if name.startswith("codream-node-tls-"))
    pods = {f"codream-node-{i}.{ext}" for i in range(4) for ext in ("pem", "key")}
    assert set(node_tls["data"]) == {"ca.pem"} | pods


def test_dev_certificates_stay_out_of_the_repository():
    ignored = (K8S.parents[1] / ".gitignore").read_text().splitlines()
    assert "deploy/k8s/overlays/dev/certs/" in ignored


def test_gpu_overlay_changes_only_the_nodes_image_device_gpu_and_toleration(rendered):
    assert gpu_problems(rendered["base"], rendered["gpu"]) == []
    node = find(rendered["gpu"], "StatefulSet", "codream-node")
    assert pod_spec(node)["containers"][0]["image"] == "codream:0.1.0-cuda"
    coordinator = find(rendered["gpu"], "Deployment", "codream-coordinator")
    assert pod_spec(coordinator)["containers"][0]["image"] == "codream:0.1.0"


# ---- broken copies: every check must notice -------------------------------------------------
def container(objects: list[dict], kind: str, name: str) -> dict:
    return pod_spec(find(objects, kind, name))["containers"][0]


def coordinator(objects: list[dict]) -> dict:
    return container(objects, "Deployment", "codream-coordinator")


def coordinator_pod(objects: list[dict]) -> dict:
    return pod_spec(find(objects, "Deployment", "codream-coordinator"))


def node_pod(objects: list[dict]) -> dict:
    return pod_spec(find(objects, "StatefulSet", "codream-node"))


def node(objects: list[dict]) -> dict:
    return container(objects, "StatefulSet", "codream-node")


def set_arg(target: dict, flag: str, value: str | None) -> None:
    """Replaces `flag=...` in the args (None removes it)."""
    args = [a for a in target["args"] if not a.startswith(f"{flag}=")]
    target["args"] = args + ([f"{flag}={value}"] if value is not None else [])


def policy(objects: list[dict], name: str) -> dict:
    return find(objects, "NetworkPolicy", name)


def run_toml(objects: list[dict], text: str, old: str = "clients = 4") -> None:
    """Replaces `old` in run.toml by `text`."""
    config_map = next(c for c in of_kind(objects, "ConfigMap") if "run.toml" in c["data"])
    assert old in config_map["data"]["run.toml"], old
    config_map["data"]["run.toml"] = config_map["data"]["run.toml"].replace(old, text)


MUTANTS: dict[str, tuple[Callable[[list[dict]], Any], str]] = {
    "no readiness probe": (lambda o: coordinator(o).pop("readinessProbe"), "no readinessProbe"),
    "latest image": (lambda o: node(o).update(image="codream:latest"), "is :latest"),
    "untagged image": (lambda o: coordinator(o).update(image="registry:5000/codream"), "no explicit tag"),
    "root user": (lambda o: coordinator(o)["securityContext"].update(runAsUser=0), "runAsUser"),
    "no seccomp": (lambda o: [c.pop("seccompProfile") for c in (node_pod(o)["securityContext"],
                                                                 node(o)["securityContext"])],
                   "seccompProfile is not RuntimeDefault"),
    "writable root": (lambda o: node(o)["securityContext"].update(readOnlyRootFilesystem=False),
                      "readOnlyRootFilesystem"),
    "escalation": (lambda o: node(o)["securityContext"].update(allowPrivilegeEscalation=True),
                   "allowPrivilegeEscalation"),
    "capabilities kept": (lambda o: node(o)["securityContext"]["capabilities"].update(drop=[]), "drop ALL"),
    "no limits": (lambda o: node(o)["resources"].pop("limits"), "resources.limits"),
    "api token": (lambda o: node_pod(o).pop("automountServiceAccountToken"), "automountServiceAccountToken"),
    "namespace not restricted": (
        lambda o: of_kind(o, "Namespace")[0]["metadata"]["labels"].update(
            {"pod-security.kubernetes.io/enforce": "baseline"}), "enforce is not restricted"),
    "unknown flag": (lambda o: node(o)["args"].append("--no-such-flag"), "codream rejects"),
    "unknown coordinator flag": (lambda o: set_arg(coordinator(o), "--tls-client-cert", "/x"),
                                 "codream rejects"),
    "undefined variable": (lambda o: set_arg(node(o), "--node-id", "$(NODE_NAME)"),
                           "$(NODE_NAME) is not defined"),
    "moved containerPort": (lambda o: coordinator(o)["ports"][2].update(containerPort=9999), "binds 9090"),
    "flag moved, port not": (lambda o: set_arg(node(o), "--metrics-port", "9191"), "binds 9191"),
    "undeclared port": (lambda o: node(o)["ports"].pop(), "no containerPort declares it"),
    "probe on another port": (lambda o: node(o)["livenessProbe"]["grpc"].update(port=50052),
                              "not the health port"),
    "no health server": (lambda o: node(o)["args"].append("--no-health"), "not the health port None"),
    "coordinator exits after the run": (lambda o: set_arg(coordinator(o), "--after-run", None),
                                        "without --after-run=serve"),
    "node exits after the run": (lambda o: set_arg(node(o), "--after-run", "exit"),
                                 "without --after-run=wait"),
    "tcp probe": (lambda o: node(o).update(startupProbe={"tcpSocket": {"port": 50053}}), "not a native gRPC"),
    "readiness on the wrong service": (lambda o: coordinator(o)["readinessProbe"]["grpc"].pop("service"),
                                       "expected 'codream.v1.Coordinator'"),
    "unread env": (lambda o: node(o)["env"].append({"name": "FOO", "value": "bar"}), "env FOO"),
    "bad run-config env": (lambda o: coordinator(o)["env"].append({"name": "CODREAM_DREAM__GLOBAL_STEPS",
                                                                   "value": "0"}), "not a valid run config"),
    # Kubernetes would inject CODREAM_COORDINATOR_SERVICE_HOST..., which the coordinator refuses.
    "service links": (lambda o: coordinator_pod(o).pop("enableServiceLinks"),
                      "CODREAM_COORDINATOR_SERVICE_HOST (environment): unknown field"),
    "state outside volumes": (lambda o: set_arg(node(o), "--state-dir", "/srv/state"),
                              "not under any volumeMount"),
    "run dir not persistent": (lambda o: next(v for v in coordinator_pod(o)["volumes"] if v["name"] == "run")
                               .update(persistentVolumeClaim=None, emptyDir={}),
                               "not on a persistent volume"),
    "config not in the ConfigMap": (lambda o: set_arg(coordinator(o), "--config", "/etc/codream/run2.toml"),
                                    "has no key run2.toml"),
    "bad run.toml": (lambda o: run_toml(o, "clients = 4\nepochs = 3"), "epochs: unknown field"),
    "clients off replicas": (lambda o: run_toml(o, "clients = 5"), "clients = 5"),
    "replicas off roster": (lambda o: find(o, "StatefulSet", "codream-node")["spec"].update(replicas=3),
                            "has 3 replicas"),
    "roster off pods": (lambda o: set_arg(coordinator(o), "--node-ids", "node-0,node-1,node-2,node-3"),
                        "--node-ids"),
    "fixed node id": (lambda o: set_arg(node(o), "--node-id", "codream-node-0"),
                      "--node-id in pod codream-node-1"),
    "short grace": (lambda o: coordinator_pod(o).update(terminationGracePeriodSeconds=20),
                    "terminationGracePeriodSeconds 20"),
    "rolling update": (lambda o: find(o, "Deployment", "codream-coordinator")["spec"].update(
        strategy={"type": "RollingUpdate"}), "Recreate"),
    "two coordinators": (lambda o: find(o, "Deployment", "codream-coordinator")["spec"].update(replicas=2),
                         "replicas is not 1"),
    "wrong coordinator address": (lambda o: set_arg(node(o), "--coordinator", "coordinator:50051"),
                                  "--coordinator coordinator:50051"),
    "wrong coordinator port": (lambda o: set_arg(node(o), "--coordinator", "codream-coordinator:9090"),
                               "--coordinator codream-coordinator:9090"),
    "service target": (lambda o: find(o, "Service", "codream-coordinator")["spec"]["ports"][0].update(
        targetPort="grpcx"), "targetPort 'grpcx'"),
    "service selector": (lambda o: find(o, "Service", "codream-node")["spec"]["selector"].update(
        {"app.kubernetes.io/component": "nodes"}), "selects no workload"),
    "no default deny": (lambda o: o.remove(policy(o, "default-deny-all")), "default-deny"),
    "node egress anywhere": (lambda o: policy(o, "codream-node-egress")["spec"]["egress"].append({}),
                             "node egress rule"),
    "node egress to the metrics port": (
        lambda o: policy(o, "codream-node-egress")["spec"]["egress"][0]["ports"].append(
            {"protocol": "TCP", "port": 9090}), "node egress rule"),
    "no DNS": (lambda o: policy(o, "codream-node-egress")["spec"]["egress"].pop(), "reach DNS"),
    "metrics from anywhere": (lambda o: policy(o, "codream-metrics-ingress")["spec"]["ingress"][0]
                              .pop("from"), "ingress rule"),
    "unauthenticated run": (lambda o: run_toml(o, 'authentication = "auto"',
                                               old='authentication = "required"'),
                            "secagg.authentication is 'auto'"),
    "node without required authentication": (
        lambda o: set_arg(node(o), "--secagg-authentication", None), "--secagg-authentication is not"),
}


@pytest.mark.parametrize("name", MUTANTS)
def test_the_checks_catch_a_broken_manifest(rendered, name, tmp_path):
    objects = copy.deepcopy(rendered["base"])
    mutate, expected = MUTANTS[name]
    assert all_problems(objects, tmp_path) == []
    mutate(objects)
    problems = all_problems(objects, tmp_path)
    assert any(expected in p for p in problems), problems


def test_schema_validation_catches_an_unknown_field(rendered):
    objects = copy.deepcopy(rendered["base"])
    coordinator(objects)["readinesProbe"] = coordinator(objects)["readinessProbe"]
    problems = schema_problems(of_kind(objects, "Deployment"))
    assert len(problems) == len(KUBE_VERSIONS)
    assert all("Deployment/codream-coordinator" in p and "readinesProbe" in p for p in problems)


def test_the_pki_checks_catch_a_certificate_for_another_name(rendered, tmp_path):
    objects = copy.deepcopy(rendered["dev"])
    secrets = of_kind(objects, "Secret")
    node_tls = next(s for s in secrets if s["metadata"]["name"].startswith("codream-node-tls"))
    node_tls["data"]["codream-node-1.pem"] = node_tls["data"]["codream-node-2.pem"]
    set_arg(node(objects), "--coordinator", "codream-coordinator.codream.svc.cluster:50051")
    problems = federation_problems(objects, tmp_path)
    assert any("CN 'codream-node-2' is not the node id 'codream-node-1'" in p for p in problems), problems
    assert any("the server certificate does not name codream-coordinator.codream.svc.cluster" in p
               for p in problems), problems


def test_dev_pins_every_nodes_identity_key_in_one_roster(rendered):
    secrets = {s["metadata"]["name"]: s for s in of_kind(rendered["dev"], "Secret")}
    identity = next(s for name, s in secrets.items() if name.startswith("codream-node-identity-"))
    assert set(identity["data"]) == {f"codream-node-{i}.identity.key" for i in range(4)}
    roster = next(c for c in of_kind(rendered["dev"], "ConfigMap") if "identities.toml" in c["data"])
    assert roster["data"]["identities.toml"].count("\ncodream-node-") == 4  # public keys: a ConfigMap
    assert "--peer-identities=/etc/codream/roster/identities.toml" in node(rendered["dev"])["args"]
    assert "--identities=/etc/codream/roster/identities.toml" in coordinator(rendered["dev"])["args"]
    assert not any(a.startswith("--identity") for a in node(rendered["base"])["args"])  # mTLS-bound


def test_the_identity_checks_catch_a_key_of_another_node(rendered, tmp_path):
    objects = copy.deepcopy(rendered["dev"])
    assert federation_problems(objects, tmp_path) == []
    set_arg(node(objects), "--identity-key", "/etc/codream/identity/codream-node-0.identity.key")
    problems = federation_problems(objects, tmp_path)
    assert any("--identity-key is not the key its certificate carries" in p for p in problems), problems
    assert any("the roster does not pin codream-node-1's identity key" in p for p in problems), problems


@pytest.mark.parametrize("change", ["no gpu", "cpu device", "cpu image", "no toleration", "extra change",
                                    "coordinator changed"])
def test_the_gpu_check_catches_a_broken_overlay(rendered, change):
    gpu = copy.deepcopy(rendered["gpu"])
    target = node(gpu)
    if change == "no gpu":
        target["resources"]["limits"].pop("nvidia.com/gpu")
    elif change == "cpu device":
        set_arg(target, "--device", "cpu")
    elif change == "cpu image":
        target["image"] = "codream:0.1.0"
    elif change == "no toleration":
        node_pod(gpu).pop("tolerations")
    elif change == "extra change":
        target["resources"]["limits"]["memory"] = "16Gi"
    else:
        coordinator(gpu)["image"] = "codream:0.1.0-cuda"
    assert gpu_problems(rendered["base"], gpu) != []
