//! Deployment files are checked, not just written:
//! - `deploy/compose/compose.yaml` parses as the Compose Specification (`compose_spec` types;
//!   docker does not run here), names the six services (hub, control plane, Redis, edge agent,
//!   two upstreams) plus the one-shot setup, and every bind-mounted file exists;
//! - the Helm chart `deploy/helm/meshgate` is linted and rendered offline by Helm v4's own
//!   library (PyPI `helm-python-sdk`, pinned in `deploy/helm/requirements.txt`, installed into
//!   `target/deploy-venv` by this test) for the HA and the embedded values, and every manifest is
//!   validated strictly against the Kubernetes 1.30 JSON schemas (`kubernetes-validate`).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn compose_file_is_valid_compose_spec() {
    let dir = repo().join("deploy/compose");
    let text = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    // YAML merge keys (`<<: *image`) are YAML, resolved before the Compose types see the file
    // (as docker compose does).
    let mut value: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    value.apply_merge().unwrap();
    let compose: compose_spec::Compose = yaml_serde::from_value(value)
        .unwrap_or_else(|e| panic!("compose.yaml is not valid Compose Specification: {e}"));
    // the check can fail: a misspelt key is refused
    let mut bad: yaml_serde::Value = yaml_serde::from_str(&text.replacen(
        "    command: [\"meshgate-load\"",
        "    comand: [\"meshgate-load\"",
        1,
    ))
    .unwrap();
    bad.apply_merge().unwrap();
    assert!(
        yaml_serde::from_value::<compose_spec::Compose>(bad).is_err(),
        "misspelt key accepted"
    );
    let names: Vec<String> = compose.services.keys().map(|k| k.to_string()).collect();
    for want in [
        "control",
        "setup",
        "redis",
        "upstream-a",
        "upstream-b",
        "hub",
        "edge",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "service {want} missing: {names:?}"
        );
    }
    // every ./file it bind-mounts exists next to it
    let raw: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    let mut mounts = 0;
    for (_, svc) in raw["services"].as_mapping().unwrap() {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let spec = v.as_str().unwrap();
            if let Some(rel) = spec.strip_prefix("./") {
                let file = rel.split(':').next().unwrap();
                assert!(dir.join(file).exists(), "bind mount {spec}: {file} missing");
                mounts += 1;
            } else {
                let vol = spec.split(':').next().unwrap();
                assert!(
                    raw["volumes"][vol].is_mapping(),
                    "named volume {vol} is not declared"
                );
            }
        }
    }
    assert!(mounts >= 3, "hub.yaml, edge.yaml and setup.sh are mounted");
    // the files it mounts are themselves valid: the hub and edge configs parse as YAML
    for f in ["hub.yaml", "edge.yaml"] {
        let _: yaml_serde::Value =
            yaml_serde::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
    }
    let out = Command::new("sh")
        .arg("-n")
        .arg(dir.join("setup.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn venv() -> PathBuf {
    let v = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("deploy-venv");
    if !v.join("bin/python").exists() {
        let out = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&v)
            .output()
            .expect("python3 (with venv) is needed for the chart check");
        assert!(
            out.status.success(),
            "python3 -m venv: {} (Debian: apt-get install -y python3-venv)",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(v.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", "-r"])
        .arg(repo().join("deploy/helm/requirements.txt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pip install -r deploy/helm/requirements.txt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

#[test]
fn helm_chart_renders_and_every_manifest_matches_the_kubernetes_schemas() {
    let v = venv();
    let out = Command::new(v.join("bin/python"))
        .arg(repo().join("deploy/helm/check.py"))
        .arg(repo().join("deploy/helm/meshgate"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).unwrap_or_else(|e| {
            panic!(
                "check.py said {stdout} {} ({e})",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(out.status.success() && summary["ok"] == true, "{summary:#}");
    let ha: Vec<&str> = summary["values"]["values.yaml"]["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    for want in [
        "Deployment/mg-hub",
        "Service/mg-hub-peers",
        "Deployment/mg-control",
        "Secret/mg-control-tls",
        "Deployment/mg-redis",
        "StatefulSet/mg-postgres",
    ] {
        assert!(ha.contains(&want), "HA render lacks {want}: {ha:?}");
    }
    let embedded: Vec<&str> = summary["values"]["values-embedded.yaml"]["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(embedded.contains(&"PersistentVolumeClaim/mg-control-data"));
    assert!(
        !embedded
            .iter()
            .any(|k| k.contains("redis") || k.contains("postgres")),
        "{embedded:?}"
    );
    assert_eq!(summary["refused"].as_object().unwrap().len(), 3);
    println!(
        "chart: {} + {} manifests valid against Kubernetes {} (Helm {})",
        ha.len(),
        embedded.len(),
        summary["kube_version"],
        summary["helm_sdk"]
    );
}
