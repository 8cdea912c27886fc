#!/usr/bin/env python3
"""Shows that k8s/validate.py catches the mistakes it is there for.

  k8s/test_validate.py TWO_SITES.yaml MONITORING.yaml

Each case takes a render that passes, breaks one thing, and expects validate.py to name it.
Prints one line per case and a closing 'N passed, N failed'; exit status 1 on any failure.
"""

from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path
from typing import Callable

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import validate  # noqa: E402

Objs = list[dict]


def first(objs: Objs, kind: str) -> dict:
    return next(o for o in objs if o["kind"] == kind)


def container(objs: Objs) -> dict:
    return first(objs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]


def env(objs: Objs, name: str) -> dict:
    return next(e for e in container(objs)["env"] if e["name"] == name)


def bootstrap_first(objs: Objs) -> None:
    c = container(objs)
    c["env"].insert(0, c["env"].pop(c["env"].index(env(objs, "BUTTER_BOOTSTRAP"))))


def rename_headless(objs: Objs) -> None:
    name = first(objs, "StatefulSet")["spec"]["serviceName"]
    next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == name)[
        "metadata"]["name"] = "elsewhere"


def shared_selector(objs: Objs) -> None:
    a, b = [o for o in objs if o["kind"] == "StatefulSet"][:2]
    b["spec"]["selector"] = copy.deepcopy(a["spec"]["selector"])
    b["spec"]["template"]["metadata"]["labels"].update(a["spec"]["selector"]["matchLabels"])


# (render index, what breaks, mutation, expected words in a failure)
CASES: list[tuple[int, str, Callable[[Objs], None], str]] = [
    (0, "unknown field in a built-in kind",
     lambda o: container(o).update(resource={}), "'resource' was unexpected"),
    (0, "wrong type in a built-in kind",
     lambda o: first(o, "StatefulSet")["spec"].update(replicas="3"), "replicas"),
    (1, "unknown field in the PodMonitor",
     lambda o: first(o, "PodMonitor")["spec"]["podMetricsEndpoints"][0].update(intervall="15s"),
     "'intervall' was unexpected"),
    (1, "bad duration in the PodMonitor",
     lambda o: first(o, "PodMonitor")["spec"]["podMetricsEndpoints"][0].update(interval="15"),
     "does not match"),
    (1, "a custom kind with no schema",
     lambda o: o.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                         "metadata": {"name": "x"}, "spec": {}}), "no schema for"),
    (0, "$(POD_NAMESPACE) used before it is defined", bootstrap_first, "before (or without)"),
    (0, "headless Service hiding not-ready pods",
     lambda o: next(s for s in o if s["kind"] == "Service" and s["spec"].get("clusterIP") == "None")
     ["spec"].update(publishNotReadyAddresses=False), "hides not-ready pods"),
    (0, "serviceName with no Service", rename_headless, "is not a Service here"),
    (0, "probe on a port name the container lacks",
     lambda o: container(o)["readinessProbe"]["httpGet"].update(port="metrics"), "readinessProbe"),
    (0, "site read from a label the pod lacks",
     lambda o: env(o, "BUTTER_SITE")["valueFrom"]["fieldRef"].update(
         fieldPath="metadata.labels['site']"), "does not set"),
    (0, "bootstrap naming a Service that is not rendered",
     lambda o: env(o, "BUTTER_BOOTSTRAP").update(
         value="butter-site-c.$(POD_NAMESPACE).svc.cluster.local:7000"), "no Service butter-site-c"),
    (0, "two StatefulSets selecting the same pods", shared_selector, "selects StatefulSet"),
    (0, "PDB selecting nothing",
     lambda o: first(o, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].update(
         app="nope"), "matches no pod template"),
    (1, "PodMonitor scraping a port the pods lack",
     lambda o: first(o, "PodMonitor")["spec"]["podMetricsEndpoints"][0].update(port="metrics"),
     "'metrics' is not a port"),
    (0, "ConfigMap volume with no ConfigMap",
     lambda o: o.remove(first(o, "ConfigMap")), "is not rendered here"),
]


def run(objs: Objs) -> list[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump_all(objs, f)
        f.flush()
        checker = validate.Checker("1.32.0")
        checker.file(f.name)
        return checker.errors


def main() -> int:
    renders = [[o for o in yaml.safe_load_all(Path(p).read_text()) if o] for p in sys.argv[1:3]]
    if len(renders) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    passed = failed = 0
    for i, objs in enumerate(renders):
        errors = run(objs)
        ok = not errors
        print(f"{'ok  ' if ok else 'FAIL'} render {i} as rendered passes {errors if errors else ''}")
        passed, failed = passed + ok, failed + (not ok)
    for i, what, mutate, expect in CASES:
        objs = copy.deepcopy(renders[i])
        mutate(objs)
        errors = run(objs)
        ok = any(expect in e for e in errors)
        print(f"{'ok  ' if ok else 'FAIL'} rejects {what}" + ("" if ok else f": got {errors}"))
        passed, failed = passed + ok, failed + (not ok)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
