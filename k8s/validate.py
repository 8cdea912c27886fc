#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests (the output of `kubectl kustomize`).

  k8s/validate.py [-k 1.32.0] RENDERED.yaml...

Two passes over every object, each failure printed with the file, kind and name:

1. Schema, strict (unknown fields rejected): built-in kinds against kubernetes-validate's bundled
   schemas (the same check as `kubernetes-validate --strict`); custom kinds against the schemas in
   k8s/schemas/ (see the note at the top of each); a kind with neither fails.
2. References that a schema cannot see and kustomize does not check, each of which would deploy
   without error and then misbehave: names ($(VAR) in env, volumes, ConfigMaps, named ports, the
   StatefulSet's serviceName, bootstrap Service names) and selectors (Services, PDBs, PodMonitors
   select pods; two StatefulSets never select each other's pods).

Exit status 0 when everything passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"
# Custom kinds this kit uses, and the file holding each one's schema.
CUSTOM = {
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.monitoring.coreos.com-v1.yaml",
}
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
LABEL_REF = re.compile(r"^metadata\.labels\['([^']+)'\]$")


def selects(selector: dict | None, labels: dict) -> bool:
    """True if a matchLabels selector (the only form this kit uses) selects these labels."""
    want = (selector or {}).get("matchLabels", selector or {})
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


class Checker:
    def __init__(self, version: str) -> None:
        self.version = version
        self.errors: list[str] = []
        self.counts: dict[str, int] = {}

    def fail(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    def schema(self, where: str, obj: dict) -> None:
        key = (obj.get("apiVersion"), obj.get("kind"))
        try:
            kubernetes_validate.validate(obj, self.version, strict=True)
            return
        except kubernetes_validate.SchemaNotFoundError:
            pass
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            self.fail(where, f"schema ({self.version}, strict): {path}: {e.message}")
            return
        if key not in CUSTOM:
            self.fail(where, f"no schema for {key[0]} {key[1]}: add one to k8s/schemas/")
            return
        schema = yaml.safe_load((SCHEMAS / CUSTOM[key]).read_text())
        for e in jsonschema.Draft7Validator(schema).iter_errors(obj):
            path = "/".join(str(p) for p in e.path)
            self.fail(where, f"schema (k8s/schemas/{CUSTOM[key]}): {path}: {e.message}")

    def references(self, file: str, objs: list[dict]) -> None:
        by_kind: dict[str, dict[str, dict]] = {}
        for o in objs:
            by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
        services = by_kind.get("Service", {})
        configmaps = by_kind.get("ConfigMap", {})
        # Pod templates: (owner name, template labels, container ports by name).
        templates = []
        for name, sts in by_kind.get("StatefulSet", {}).items():
            where = f"{file}: StatefulSet/{name}"
            spec = sts["spec"]
            pod = spec["template"]
            labels = pod["metadata"].get("labels", {})
            if not selects(spec["selector"], labels):
                self.fail(where, "spec.selector does not select the pod template's labels")
            svc = services.get(spec.get("serviceName", ""))
            if svc is None:
                self.fail(where, f"serviceName {spec.get('serviceName')!r} is not a Service here")
            else:
                if svc["spec"].get("clusterIP") != "None":
                    self.fail(where, f"Service {svc['metadata']['name']} is not headless")
                if not svc["spec"].get("publishNotReadyAddresses"):
                    self.fail(where, f"Service {svc['metadata']['name']} hides not-ready pods "
                              "from DNS: no pod could bootstrap, so none would become ready")
                if not selects(svc["spec"].get("selector"), labels):
                    self.fail(where, f"Service {svc['metadata']['name']} does not select its pods")
            volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
            claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
            for v in volumes.values():
                cm = v.get("configMap", {}).get("name")
                if cm is not None and cm not in configmaps:
                    self.fail(where, f"volume {v['name']}: ConfigMap {cm} is not rendered here")
            ports: dict[str, int] = {}
            for c in pod["spec"]["containers"]:
                cwhere = f"{where} container {c['name']}"
                cports = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
                ports.update(cports)
                defined: set[str] = set()
                for e in c.get("env", []):
                    for ref in VAR_REF.findall(e.get("value", "")):
                        if ref not in defined:
                            self.fail(cwhere, f"env {e['name']} uses $({ref}) before (or without) "
                                      "defining it: Kubernetes would pass it unexpanded")
                    field = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
                    m = LABEL_REF.match(field)
                    if m and m.group(1) not in labels:
                        self.fail(cwhere, f"env {e['name']} reads pod label {m.group(1)}, "
                                  "which the template does not set")
                    if e["name"] == "BUTTER_BOOTSTRAP":
                        for entry in e.get("value", "").split(","):
                            host = entry.rsplit(":", 1)[0]
                            if ".$(POD_NAMESPACE)." in host and host.split(".")[0] not in services:
                                self.fail(cwhere, f"bootstrap {entry}: no Service "
                                          f"{host.split('.')[0]} here")
                    defined.add(e["name"])
                for m in c.get("volumeMounts", []):
                    if m["name"] not in volumes and m["name"] not in claims:
                        self.fail(cwhere, f"volumeMount {m['name']} has no volume")
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    port = c.get(probe, {}).get("httpGet", {}).get("port")
                    if isinstance(port, str) and port not in cports:
                        self.fail(cwhere, f"{probe} port {port!r} is not a container port")
            templates.append((name, labels, ports))

        for a, la, _ in templates:
            for b, _, _ in templates:
                sel = by_kind["StatefulSet"][b]["spec"]["selector"]
                if a != b and selects(sel, la):
                    self.fail(f"{file}: StatefulSet/{b}", f"selector also selects StatefulSet/{a}'s pods")

        def selected(where: str, selector: dict | None) -> list:
            hit = [t for t in templates if selects(selector, t[1])]
            if not hit:
                self.fail(where, "selector matches no pod template rendered here")
            return hit

        for name, svc in services.items():
            where = f"{file}: Service/{name}"
            for _, _, ports in selected(where, svc["spec"].get("selector")):
                for p in svc["spec"].get("ports", []):
                    t = p.get("targetPort")
                    if isinstance(t, str) and t not in ports:
                        self.fail(where, f"targetPort {t!r} is not a port of the selected pods")
        for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
            selected(f"{file}: PodDisruptionBudget/{name}", pdb["spec"].get("selector"))
        for name, pm in by_kind.get("PodMonitor", {}).items():
            where = f"{file}: PodMonitor/{name}"
            for _, _, ports in selected(where, pm["spec"].get("selector")):
                for ep in pm["spec"]["podMetricsEndpoints"]:
                    if "port" in ep and ep["port"] not in ports:
                        self.fail(where, f"port {ep['port']!r} is not a port of the selected pods")

    def file(self, path: str) -> None:
        objs = [o for o in yaml.safe_load_all(Path(path).read_text()) if o]
        if not objs:
            self.fail(path, "renders no objects")
        seen = set()
        for o in objs:
            kind, meta = o.get("kind", "?"), o.get("metadata", {})
            ident = (kind, meta.get("namespace", ""), meta.get("name", "?"))
            where = f"{path}: {kind}/{ident[2]}"
            if ident in seen:
                self.fail(where, "rendered twice")
            seen.add(ident)
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.schema(where, o)
        self.references(path, objs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", "--kubernetes-version", default="1.32.0")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    checker = Checker(args.kubernetes_version)
    for f in args.files:
        checker.file(f)
    for e in checker.errors:
        print(f"FAIL {e}", file=sys.stderr)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(checker.counts.items()))
    status = "failed" if checker.errors else "passed"
    print(f"validate.py: {len(args.files)} render(s), {sum(checker.counts.values())} objects "
          f"({kinds}): {status}, {len(checker.errors)} problem(s)")
    return 1 if checker.errors else 0


if __name__ == "__main__":
    sys.exit(main())
