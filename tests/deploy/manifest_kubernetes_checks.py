"""Checks of the rendered manifests as Kubernetes objects; each returns a list of problems.

Pod security (restricted contexts, no API token), probes, resources and pinned images; that
Services select pods and target their ports; that NetworkPolicies deny by default and allow
only the federation's traffic; and that the GPU overlay differs from base only where it must.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from manifest_objects import (
    WORKLOADS,
    Problems,
    expand,
    find,
    name_of,
    of_kind,
    parse,
    pod_labels,
    pod_spec,
    selects,
)


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
