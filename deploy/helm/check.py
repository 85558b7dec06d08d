#!/usr/bin/env python3
"""Renders the meshgate chart offline for each values file and checks every manifest.

For each of values.yaml (HA: 3 hubs, Redis, 2 control planes on PostgreSQL) and
values-embedded.yaml (1 hub, 1 control plane on SQLite): `helm lint --strict`, `helm template`
(Helm v4's own Go library through helm-python-sdk; no cluster, no helm binary), then every
rendered document is validated, strictly (unknown fields are errors), against the Kubernetes
JSON schema of its kind for KUBE_VERSION (kubernetes-validate's vendored schemas).
Also renders the documented failure cases and checks they fail with their message.

Usage: check.py CHART_DIR  -> prints one JSON line, exit 1 on any problem.
"""
import json
import os
import sys

import helm_python as helm
import kubernetes_validate
import yaml

KUBE_VERSION = "1.30.0"


def render(chart, values, problems, label):
    try:
        out = chart.render(values, name="mg", namespace="mcp", is_install=True)
    except helm.HelmError as e:
        problems.append(f"{label}: render failed: {e}")
        return []
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    return docs


def main():
    chart_dir = sys.argv[1]
    chart = helm.Chart.load(chart_dir)
    problems = []
    summary = {"helm_sdk": helm.helm_sdk_version(), "kube_version": KUBE_VERSION, "values": {}}
    for vf in ["values.yaml", "values-embedded.yaml"]:
        with open(os.path.join(chart_dir, vf)) as f:
            values = helm.values_from_yaml(f.read()) if vf != "values.yaml" else {}
        lint = helm.lint(chart_dir, values, strict=True, kube_version="v" + KUBE_VERSION)
        for m in lint.get("messages", []):
            if m.get("severity", 0) >= 2:
                problems.append(f"{vf}: lint: {m.get('path')}: {m.get('error')}")
        for e in lint.get("errors") or []:
            problems.append(f"{vf}: lint: {e}")
        docs = render(chart, values, problems, vf)
        kinds = []
        for path, doc in docs:
            kind = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            kinds.append(kind)
            try:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{vf}: {path}: {kind}: {e.message} at {list(e.path)}")
            except Exception as e:  # unknown kind/version, schema missing
                problems.append(f"{vf}: {path}: {kind}: {type(e).__name__}: {e}")
        summary["values"][vf] = {"manifests": len(docs), "kinds": sorted(kinds)}
    # misconfigurations the chart refuses, each with its reason
    refusals = {
        "sqlite HA": ({"control": {"replicas": 2}, "postgres": {"enabled": False}}, "needs PostgreSQL"),
        "hubs without redis": ({"hub": {"replicas": 3}, "redis": {"enabled": False}}, "needs the shared session store"),
        "edge without tls secret": ({"hub": {"edge": {"enabled": True}}}, "hub.edge.tlsSecret is required"),
    }
    summary["refused"] = {}
    for label, (values, needle) in refusals.items():
        try:
            chart.render(values, name="mg", namespace="mcp", is_install=True)
            problems.append(f"{label}: rendered but must be refused")
        except helm.HelmError as e:
            if needle not in str(e):
                problems.append(f"{label}: refused for another reason: {e}")
            summary["refused"][label] = needle
    summary["problems"] = problems
    summary["ok"] = not problems
    print(json.dumps(summary))
    sys.exit(0 if not problems else 1)


if __name__ == "__main__":
    main()
