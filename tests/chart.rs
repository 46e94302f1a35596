//! The Helm chart: lint, render, and the CRDs it ships are the generated ones.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// helm from the cached tools (tests/cluster/tools.sh fetches it once).
fn helm() -> PathBuf {
    let out = Command::new("bash")
        .arg(root().join("tests/cluster/tools.sh"))
        .output()
        .expect("tools.sh runs");
    assert!(
        out.status.success(),
        "tools.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("helm")
}

fn helm_run(args: &[&str]) -> (bool, String) {
    let out = Command::new(helm()).args(args).current_dir(root()).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn chart_lints_strictly_and_renders() {
    let (ok, out) = helm_run(&[
        "lint",
        "--strict",
        "charts/kauth",
        "--set",
        "issuer=https://auth.example.com",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = helm_run(&[
        "template",
        "kauth",
        "charts/kauth",
        "-n",
        "kauth",
        "--set",
        "issuer=https://auth.example.com",
        "--set",
        "podDisruptionBudget.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
    ]);
    assert!(ok, "{out}");
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
    ] {
        assert!(out.contains(&format!("kind: {kind}\n")), "{kind} missing");
    }
    for restricted in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [ALL]",
        "type: RuntimeDefault",
    ] {
        assert!(out.contains(restricted), "{restricted} missing");
    }
    assert!(out.contains("--issuer=https://auth.example.com"));
    assert!(!out.contains("delete"), "the controller never needs delete");
}

#[test]
fn chart_refuses_bad_values() {
    let (ok, out) = helm_run(&["template", "kauth", "charts/kauth"]);
    assert!(!ok && out.contains("issuer"), "issuer is required: {out}");
    let (ok, out) = helm_run(&["template", "kauth", "charts/kauth", "--set", "issuer=ftp://x"]);
    assert!(!ok && out.contains("issuer"), "issuer must be http(s): {out}");
    let (ok, _) = helm_run(&[
        "template",
        "kauth",
        "charts/kauth",
        "--set",
        "issuer=https://a",
        "--set",
        "replicaCount=2",
    ]);
    assert!(!ok, "several replicas need the shared store");
    let (ok, out) = helm_run(&[
        "template",
        "kauth",
        "charts/kauth",
        "--set",
        "issuer=https://a",
        "--set",
        "replicaCount=2",
        "--set",
        "sharedStore.enabled=true",
    ]);
    assert!(
        !ok && out.contains("name"),
        "the shared store needs the Secret holding its URL: {out}"
    );
    let (ok, out) = helm_run(&[
        "template",
        "kauth",
        "charts/kauth",
        "--set",
        "issuer=https://a",
        "--set",
        "replicaCount=2",
        "--set",
        "sharedStore.enabled=true",
        "--set",
        "sharedStore.urlSecret.name=kauth-db",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("KAUTH_STORE_URL") && out.contains("name: \"kauth-db\", key: \"url\""),
        "the URL comes from the Secret: {out}"
    );
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let chart = std::fs::read_to_string(root().join("charts/kauth/crds/kauth.dev.yaml")).unwrap();
    let generated = std::fs::read_to_string(root().join("crds/kauth.dev.yaml")).unwrap();
    assert!(chart == generated, "charts/kauth/crds is stale: run `make crds`");
}
