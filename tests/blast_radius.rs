//! Blast radius (DESIGN.md T9–T12), each rule tried by an attacker: a hostile team with nothing
//! but objects in its own namespace, or a hostile caller on the network, must not take kauth
//! down, out-grow a shared record, keep what was withdrawn or choose who it is.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

mod support;

use support::binary::{copy_examples, issuer_url, spawn_reading, standalone_command, token, wait_up_to};

/// Templates that allocate gigabytes in a few instructions (issue 14's two, and a condition on
/// the real secret that the sample values used to sidestep).
const TEMPLATE_BOMBS: &str = r#"
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: bomb, namespace: evil}
spec:
  secret:
    template:
      BOMB: '{{ ("x" * 100000000 ~ "x" * 100000000) | length }}'
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: abort, namespace: evil}
spec:
  secret:
    template:
      BOMB: '{{ (["x" * 100000000] * 60) | join | length }}'
---
apiVersion: kauth.dev/v1alpha1
kind: OAuthClient
metadata: {name: hidden, namespace: evil}
spec:
  secret:
    template:
      BOMB: '{% if client_secret != "secret" %}{{ "x" * 3000000000 }}{% endif %}'
"#;

/// `kauth standalone` whose address space is capped at `bytes` (as `prlimit --as` would), with
/// few malloc arenas so the cap leaves room for real work.
fn standalone_limited(manifests: &Path, state: &Path, bytes: u64) -> std::process::Command {
    let mut command = standalone_command(&[
        "--manifests".as_ref(),
        manifests.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    command.env("MALLOC_ARENA_MAX", "2");
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// T9: one team's templates cannot take kauth down. Under a 1 GiB address-space limit (the
/// first bomb alone used to peak at 881 MiB, the second to abort asking for 3.2 GB), kauth
/// starts, names each bomb as an invalid template, serves everyone else, keeps serving when
/// more arrive while it runs, and starts again cleanly with them in place.
#[tokio::test]
async fn template_bombs_are_refused_and_kauth_stays_up_under_a_memory_limit() {
    const LIMIT: u64 = 1024 * 1024 * 1024;
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
    copy_examples(&manifests);
    std::fs::write(manifests.join("evil.yaml"), TEMPLATE_BOMBS).unwrap();

    let (mut running, first, lines) = spawn_reading(standalone_limited(&manifests, &state, LIMIT));
    let url = issuer_url(&first);
    let summary: Vec<String> = lines.iter().take_while(|l| !l.starts_with("Get a token")).collect();
    for bomb in ["evil/bomb", "evil/abort", "evil/hidden"] {
        let line = summary
            .iter()
            .find(|l| l.contains(&format!("OAuthClient {bomb}")))
            .unwrap_or_else(|| panic!("{bomb} is not named in {summary:#?}"));
        assert!(
            line.contains("spec.secret.template.BOMB") && line.contains("arithmetic"),
            "{line}"
        );
    }
    assert_eq!(
        token(&url, &state, "orders.read").await.0,
        200,
        "other teams are served"
    );

    // More bombs while it runs, with a new client beside them: the reload serves the client.
    let more = TEMPLATE_BOMBS
        .replace("name: bomb", "name: bomb2")
        .replace("name: abort", "name: abort2");
    std::fs::write(manifests.join("evil-more.yaml"), more).unwrap();
    let extra = std::fs::read_to_string(manifests.join("client-m2m.yaml"))
        .unwrap()
        .replace("name: shop-backend", "name: shop-extra");
    std::fs::write(manifests.join("extra.yaml"), extra).unwrap();
    wait_up_to(Duration::from_secs(5), "the reload", async || {
        state.join("secrets/shop/shop-extra-oauth/CLIENT_SECRET").exists()
    })
    .await;
    assert!(running.0.try_wait().unwrap().is_none(), "kauth is still running");
    assert_eq!(token(&url, &state, "orders.read").await.0, 200);
    drop(running);

    let (mut running, first, _) = spawn_reading(standalone_limited(&manifests, &state, LIMIT));
    let url = issuer_url(&first);
    assert_eq!(token(&url, &state, "orders.read").await.0, 200, "a clean restart");
    assert!(running.0.try_wait().unwrap().is_none());
}
