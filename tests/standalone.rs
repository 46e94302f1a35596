//! Standalone tier: the real binary on a copy of examples/, as the README runs it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use support::binary::{
    Running, copy_examples, issuer_url, spawn_standalone, start, start_replica, token, wait_for, wait_up_to,
};

#[tokio::test]
async fn serves_examples_keeps_secrets_and_follows_edits_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("examples");
    let state = tmp.path().join("state");
    copy_examples(&manifests);

    let (server, url) = start(&manifests, &state);
    let (status, body) = token(&url, &state, "orders.read").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let secret = std::fs::read_to_string(state.join("secrets/shop/shop-backend-oauth/CLIENT_SECRET")).unwrap();
    drop(server);

    // Restart: same secret, still works.
    let (_server, url) = start(&manifests, &state);
    assert_eq!(
        std::fs::read_to_string(state.join("secrets/shop/shop-backend-oauth/CLIENT_SECRET")).unwrap(),
        secret
    );
    assert_eq!(token(&url, &state, "orders.read").await.0, 200);

    // Withdraw the grant: refused within a second.
    let scope_file = manifests.join("scope-orders.yaml");
    let text = std::fs::read_to_string(&scope_file).unwrap();
    std::fs::write(&scope_file, text.replace("namespaces: [shop]", "namespaces: []")).unwrap();
    let took = wait_for("grant withdrawal", async || {
        token(&url, &state, "orders.read").await.1["error"] == "invalid_scope"
    })
    .await;
    eprintln!("grant withdrawal took effect after {took:?}");

    // Delete the client: refused within a second.
    std::fs::remove_file(manifests.join("client-m2m.yaml")).unwrap();
    wait_for("client deletion", async || {
        token(&url, &state, "orders.read").await.1["error"] == "invalid_client"
    })
    .await;
}

#[test]
fn invalid_manifests_are_reported_by_file_resource_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("bad.yaml"),
        "apiVersion: kauth.dev/v1alpha1\nkind: OAuthClient\nmetadata: {name: app, namespace: team}\nspec:\n  accessTokenLifetime: forever\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kauth"))
        .args(["standalone", "--port", "0", "--ops-port", "0", "--manifests"])
        .arg(tmp.path())
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(out);
    let mut lines = BufReader::new(running.0.stdout.take().unwrap()).lines();
    let _issuer = lines.next();
    let problem = lines.next().unwrap().unwrap();
    assert!(
        problem.contains(
            "bad.yaml (document 1): OAuthClient team/app: spec.accessTokenLifetime: 'forever' is not a duration"
        ),
        "{problem}"
    );
}

#[test]
fn crds_folder_matches_the_types() {
    let out = Command::new(env!("CARGO_BIN_EXE_kauth")).arg("crds").output().unwrap();
    assert!(out.status.success());
    let checked_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/kauth.dev.yaml")).unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == checked_in,
        "crds/kauth.dev.yaml is stale: run `make crds` and commit the result"
    );
}

/// `kauth --log-format json standalone` on `manifests`, on free ports.
fn json_standalone(manifests: &Path, state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kauth"));
    cmd.args(["--log-format", "json", "standalone", "--port", "0", "--ops-port", "0"])
        .arg("--manifests")
        .arg(manifests)
        .arg("--state-dir")
        .arg(state);
    cmd
}

#[test]
fn json_logs_are_one_object_per_line() {
    let tmp = tempfile::tempdir().unwrap();
    copy_examples(&tmp.path().join("examples"));
    let mut child = json_standalone(&tmp.path().join("examples"), &tmp.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Removing a file makes the reload log a line; give it time, then stop.
    std::thread::sleep(Duration::from_millis(700));
    std::fs::remove_file(tmp.path().join("examples/client-m2m.yaml")).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{line}");
    }
}

/// Issue 26: password guesses spread over two replicas count against one limit (the store's),
/// not one per replica: of ten wrong passwords sent in turn to A and B, five are checked and the
/// rest refused, and then the right one too, on either replica.
#[tokio::test]
async fn password_guesses_spread_over_replicas_count_against_one_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("manifests"), tmp.path().join("state"));
    copy_examples(&manifests);
    let store = support::fresh_postgres_database().await;
    let issuer = "http://kauth.test";
    let (_a, a) = start_replica(&manifests, &state, issuer, &store);
    let (_b, b) = start_replica(&manifests, &state, issuer, &store);
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let started = browser
        .get(format!(
            "{a}/authorize?client_id=shop.shop-web&response_type=code&scope=openid&state=s&redirect_uri=http%3A%2F%2F127.0.0.1%3A8400%2Fcallback&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
        ))
        .send()
        .await
        .unwrap();
    let location = started.headers()["location"].to_str().unwrap().replacen(issuer, &a, 1);
    let page = browser.get(location).send().await.unwrap().text().await.unwrap();
    let (request, csrf) = (
        support::hidden_field(&page, "request"),
        support::hidden_field(&page, "csrf"),
    );
    let mut statuses = Vec::new();
    for (i, password) in ["wrong"; 10].iter().chain(&["alice-demo-password"]).enumerate() {
        let replica = if i % 2 == 0 { &a } else { &b };
        let form = [
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("username", "alice"),
            ("password", password),
        ];
        let r = browser
            .post(format!("{replica}/login"))
            .form(&form)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 401, 429, 429, 429, 429, 429, 429],
        "{statuses:?}"
    );
}

#[tokio::test]
async fn two_processes_sharing_postgres_complete_one_sign_in_between_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("manifests"), tmp.path().join("state"));
    copy_examples(&manifests);
    let store = support::fresh_postgres_database().await;
    let issuer = "http://kauth.test";
    // One after the other, so the first creates the keys and secrets the second reads.
    let (_a, a) = start_replica(&manifests, &state, issuer, &store);
    let (_b, b) = start_replica(&manifests, &state, issuer, &store);
    // A load balancer in front of both: the test sends each request to the replica it likes.
    let via = |replica: &str, location: &str| location.replacen(issuer, replica, 1);
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |url: String| {
        let browser = browser.clone();
        async move { browser.get(url).send().await.unwrap() }
    };
    let location = |r: &reqwest::Response| r.headers()["location"].to_str().unwrap().to_string();
    let callback = "http://127.0.0.1:8400/callback";
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let started = get(format!(
        "{a}/authorize?client_id=shop.shop-web&response_type=code&scope=openid%20offline_access&state=s&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        url::form_urlencoded::byte_serialize(callback.as_bytes()).collect::<String>()
    ))
    .await;
    assert_eq!(started.status(), 303);
    // Started on A, signed in on B...
    let page = get(via(&b, &location(&started))).await.text().await.unwrap();
    let form = [
        ("request", support::hidden_field(&page, "request")),
        ("csrf", support::hidden_field(&page, "csrf")),
        ("username", "alice".into()),
        ("password", "alice-demo-password".into()),
    ];
    let signed_in = browser.post(format!("{b}/login")).form(&form).send().await.unwrap();
    assert_eq!(signed_in.status(), 303, "{}", signed_in.text().await.unwrap());
    // ... consented on A ...
    let page = get(via(&a, &location(&signed_in))).await.text().await.unwrap();
    let form = [
        ("request", support::hidden_field(&page, "request")),
        ("csrf", support::hidden_field(&page, "csrf")),
        ("decision", "allow".into()),
    ];
    let consented = browser.post(format!("{a}/consent")).form(&form).send().await.unwrap();
    let back = url::Url::parse(&location(&consented)).unwrap();
    assert!(back.as_str().starts_with(callback), "{back}");
    let code = back.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    // ... and the code redeemed on B.
    let creds = state.join("secrets/shop/shop-web-oauth");
    let (id, secret) = (
        std::fs::read_to_string(creds.join("CLIENT_ID")).unwrap(),
        std::fs::read_to_string(creds.join("CLIENT_SECRET")).unwrap(),
    );
    let token = |at: String, form: Vec<(&'static str, String)>| {
        let (id, secret) = (id.clone(), secret.clone());
        async move {
            let r = reqwest::Client::new()
                .post(format!("{at}/token"))
                .basic_auth(id, Some(secret))
                .form(&form)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, tokens) = token(
        b.clone(),
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.clone()),
            ("redirect_uri", callback.into()),
            ("code_verifier", verifier.into()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["id_token"].is_string());
    // The code is spent for A too.
    let (status, replay) = token(
        a.clone(),
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", code),
            ("redirect_uri", callback.into()),
            ("code_verifier", verifier.into()),
        ],
    )
    .await;
    assert_eq!((status, replay["error"].as_str()), (400, Some("invalid_grant")));
    // The replay on A revoked the tokens B issued; B's mirror reads the store every second.
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let took = wait_up_to(Duration::from_secs(3), "B sees A's revocation", async || {
        let r = reqwest::Client::new()
            .get(format!("{b}/userinfo"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        r.status() == 401
    })
    .await;
    eprintln!("a revocation on one replica reached the other after {took:?}");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let (status, body) = token(
        a.clone(),
        vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "the family died with the replay"
    );
}

#[test]
fn hash_password_prints_an_argon2id_hash_that_users_yaml_accepts() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kauth"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"correct horse\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let people =
        kauth::people::Directory::parse(&format!("users:\n- username: a\n  passwordHash: '{hash}'\n")).unwrap();
    assert!(
        people.verify("a", "correct horse").is_some(),
        "the newline is not part of the password"
    );
    let empty = Command::new(env!("CARGO_BIN_EXE_kauth"))
        .arg("hash-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(2), "no password, no hash");
}

/// Slowloris: a connection that sends part of its headers and then nothing is closed after
/// the header-read timeout, and a full request on another connection is served meanwhile.
#[tokio::test]
async fn a_slow_client_is_cut_off_after_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    copy_examples(&tmp.path().join("m"));
    let (_running, first) = spawn_standalone(&[
        "--manifests".as_ref(),
        tmp.path().join("m").as_os_str(),
        "--state-dir".as_ref(),
        tmp.path().join("state").as_os_str(),
        "--header-read-timeout".as_ref(),
        "1s".as_ref(),
    ]);
    let url = issuer_url(&first);
    let addr = url.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /jwks HTTP/1.1\r\nHost: kauth\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let ok = reqwest::get(format!("{url}/jwks")).await.unwrap().status();
    assert_eq!(ok, 200, "others are served while the slow client dawdles");
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("closed within the timeout, not held open");
    assert!(matches!(read, Ok(0) | Err(_)), "the connection is closed: {read:?}");
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(900), "not before the timeout: {held:?}");
    eprintln!("a slow client was cut off after {held:?}");
}

/// No secret reaches the output: client secrets, passwords and a store URL's password are
/// used, right and wrong, and then looked for in everything the process printed.
#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("m");
    copy_examples(&manifests);
    let state = tmp.path().join("state");
    let log = tmp.path().join("log");
    let process = json_standalone(&manifests, &state)
        .env("RUST_LOG", "debug,hyper=info,sqlx=info")
        .stdout(std::fs::File::create(tmp.path().join("out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let running = Running(process);
    let out_path = tmp.path().join("out");
    let url = loop {
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        if let Some(line) = out.lines().next().filter(|l| l.contains("listening on")) {
            break issuer_url(line);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let dir = state.join("secrets/shop/shop-backend-oauth");
    let id = std::fs::read_to_string(dir.join("CLIENT_ID")).unwrap();
    let secret = std::fs::read_to_string(dir.join("CLIENT_SECRET")).unwrap();
    let http = reqwest::Client::new();
    for attempt in [secret.as_str(), "wrong-secret-d0c5"] {
        http.post(format!("{url}/token"))
            .basic_auth(&id, Some(attempt))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
    }
    http.post(format!("{url}/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", "posted-secret-7e1f"),
        ])
        .send()
        .await
        .unwrap();
    drop(running);
    let store = Command::new(env!("CARGO_BIN_EXE_kauth"))
        .args([
            "standalone",
            "--port",
            "0",
            "--ops-port",
            "0",
            "--store-url",
            "postgres-typo://kauth:pg-pass-91b2@db/kauth",
            "--state-dir",
        ])
        .arg(tmp.path().join("other"))
        .output()
        .unwrap();
    assert!(!store.status.success());
    let everything = format!(
        "{}{}{}{}",
        std::fs::read_to_string(&log).unwrap(),
        std::fs::read_to_string(&out_path).unwrap(),
        String::from_utf8_lossy(&store.stdout),
        String::from_utf8_lossy(&store.stderr),
    );
    assert!(
        everything.contains("postgres-typo"),
        "the store error was printed: {everything}"
    );
    for leaked in [
        secret.as_str(),
        "wrong-secret-d0c5",
        "posted-secret-7e1f",
        "pg-pass-91b2",
    ] {
        assert!(!everything.contains(leaked), "{leaked} reached the output");
    }
}

/// Starts the binary on the grant store `store_url` with a store deadline of 1 s; returns it
/// with the first line of its summary.
fn spawn_on_store(manifests: &Path, state: &Path, store_url: &str) -> (Running, String) {
    spawn_standalone(&[
        "--manifests".as_ref(),
        manifests.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--store-url".as_ref(),
        store_url.as_ref(),
        "--store-timeout".as_ref(),
        "1s".as_ref(),
    ])
}

/// `count` refresh families of alice at shop-web (the examples), one sign-in for all of them
/// (session and consent are remembered): the first refresh token of each.
async fn refresh_families(url: &str, state: &Path, count: usize) -> Vec<String> {
    let creds = state.join("secrets/shop/shop-web-oauth");
    let id = std::fs::read_to_string(creds.join("CLIENT_ID")).unwrap();
    let secret = std::fs::read_to_string(creds.join("CLIENT_SECRET")).unwrap();
    let browser = support::browser::Browser::new();
    let authorize = format!(
        "{url}/authorize?client_id={id}&response_type=code&scope=orders.read&state=s&redirect_uri=http%3A%2F%2F127.0.0.1%3A8400%2Fcallback"
    );
    let mut families = Vec::new();
    for _ in 0..count {
        let back = browser.sign_in(url, &authorize, ("alice", "alice-demo-password")).await;
        let code = support::browser::param(&back, "code").unwrap();
        let answer = reqwest::Client::new()
            .post(format!("{url}/token"))
            .basic_auth(&id, Some(&secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", "http://127.0.0.1:8400/callback"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.unwrap();
        families.push(body["refresh_token"].as_str().unwrap().to_string());
    }
    families
}

/// A PostgreSQL of the test's own (tests/postgres/up.sh), which it can freeze and thaw.
struct OwnPostgres {
    dir: tempfile::TempDir,
    url: String,
}

impl OwnPostgres {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let up = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/postgres/up.sh"))
            .arg(dir.path().join("pg"))
            .output()
            .unwrap();
        assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
        let url = String::from_utf8(up.stdout).unwrap().trim().to_string();
        Self { dir, url }
    }

    /// Sends `signal` to the server and every backend: STOP freezes it (connections hang
    /// rather than fail), CONT thaws it.
    fn signal(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.path().join("pg/data/postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_string();
        let children = Command::new("pgrep").args(["-P", &pid]).output().unwrap().stdout;
        let children = String::from_utf8(children).unwrap();
        for p in std::iter::once(pid.as_str()).chain(children.split_whitespace()) {
            Command::new("kill").args([&format!("-{signal}"), p]).status().unwrap();
        }
    }
}

impl OwnPostgres {
    /// Stops the server (`stop`) or starts it again on the same port (`start`).
    fn ctl(&self, action: &str) {
        let done = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/postgres/ctl.sh"))
            .arg(self.dir.path().join("pg"))
            .arg(action)
            .status()
            .unwrap();
        assert!(done.success(), "ctl.sh {action}");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/postgres/down.sh"))
            .arg(self.dir.path().join("pg"))
            .status();
    }
}

/// The grant store frozen: everything that needs it answers 503 with Retry-After within the
/// store deadline instead of hanging; what does not need it goes on; the store health says
/// so; and once the database thaws, the same refresh token works without a restart.
#[tokio::test]
async fn a_frozen_store_fails_fast_and_recovers_without_a_restart() {
    let pg = OwnPostgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
    copy_examples(&manifests);
    let (_running, first) = spawn_on_store(&manifests, &state, &pg.url);
    let url = issuer_url(&first);
    let ops = first
        .split("health and metrics on ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    let browser = support::browser::Browser::new();
    let authorize = format!(
        "{url}/authorize?client_id=shop.shop-web&response_type=code&scope=openid&state=s&redirect_uri=http%3A%2F%2F127.0.0.1%3A8400%2Fcallback"
    );
    let back = browser
        .sign_in(&url, &authorize, ("alice", "alice-demo-password"))
        .await;
    let code = support::browser::param(&back, "code").unwrap();
    let web = state.join("secrets/shop/shop-web-oauth");
    let web = (
        std::fs::read_to_string(web.join("CLIENT_ID")).unwrap(),
        std::fs::read_to_string(web.join("CLIENT_SECRET")).unwrap(),
    );
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        let (url, web) = (url.clone(), web.clone());
        async move {
            let started = Instant::now();
            let r = reqwest::Client::new()
                .post(format!("{url}{path}"))
                .basic_auth(&web.0, Some(&web.1))
                .form(&form)
                .send()
                .await
                .unwrap();
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body, retry, started.elapsed())
        }
    };
    let (status, tokens, _, _) = post(
        "/token",
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", code),
            ("redirect_uri", "http://127.0.0.1:8400/callback".into()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();

    pg.signal("STOP");
    let (status, body, retry, took) = post(
        "/token",
        vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", refresh.clone()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{body}"
    );
    assert_eq!(retry.as_deref(), Some("2"));
    assert!(took < Duration::from_secs(3), "failed fast: {took:?}");
    eprintln!("a refresh against a frozen store answered 503 after {took:?}");
    let (status, body, retry, _) = post("/revoke", vec![("token", refresh.clone())]).await;
    assert_eq!((status, retry.as_deref()), (503, Some("2")), "{body}");
    // What needs no store goes on: client_credentials and readiness.
    let (status, _) = token(&url, &state, "orders.read").await;
    assert_eq!(status, 200, "client_credentials needs no store");
    assert_eq!(reqwest::get(format!("{ops}/readyz")).await.unwrap().status(), 200);
    wait_up_to(
        Duration::from_secs(5),
        "the store's health says it is down",
        async || reqwest::get(format!("{ops}/readyz/store")).await.unwrap().status() == 503,
    )
    .await;
    let metrics = reqwest::get(format!("{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kauth_store_up 0"), "{metrics}");

    pg.signal("CONT");
    wait_up_to(Duration::from_secs(5), "the store's health recovers", async || {
        reqwest::get(format!("{ops}/readyz/store")).await.unwrap().status() == 200
    })
    .await;
    let (status, body, _, _) = post(
        "/token",
        vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(
        status, 200,
        "the same refresh token works once the store is back: {body}"
    );
}

/// One unreadable manifest (a dangling link, a file that is not UTF-8) stops nothing: the
/// summary names each, the rest is served, and later edits still apply.
#[tokio::test]
async fn unreadable_manifests_are_named_and_the_rest_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
    copy_examples(&manifests);
    std::os::unix::fs::symlink(manifests.join("gone.yaml"), manifests.join("dangling.yaml")).unwrap();
    std::fs::write(manifests.join("latin1.yaml"), b"description: caf\xe9\n").unwrap();
    let fifo = Command::new("mkfifo")
        .arg(manifests.join("pipe.yaml"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kauth"))
        .args(["standalone", "--port", "0", "--ops-port", "0", "--manifests"])
        .arg(&manifests)
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _running = Running(child);
    let first = lines.next().unwrap().unwrap();
    let url = issuer_url(&first);
    let summary: Vec<String> = lines.by_ref().take(5).map(|l| l.unwrap()).collect();
    assert!(
        summary.iter().any(|l| l.contains("dangling.yaml: skipped")),
        "{summary:#?}"
    );
    assert!(
        summary
            .iter()
            .any(|l| l.contains("latin1.yaml: skipped: not UTF-8 text")),
        "{summary:#?}"
    );
    assert!(
        summary
            .iter()
            .any(|l| l.contains("pipe.yaml: skipped: not a regular file")),
        "{summary:#?}"
    );
    let (status, _) = token(&url, &state, "orders.read").await;
    assert_eq!(status, 200, "the readable manifests are served");
    // A later edit applies although the broken files are still there.
    let scopes = std::fs::read_to_string(manifests.join("scope-orders.yaml")).unwrap();
    std::fs::write(
        manifests.join("scope-orders.yaml"),
        scopes.replace("namespaces: [shop]", "namespaces: []"),
    )
    .unwrap();
    wait_up_to(Duration::from_secs(3), "the edit applies", async || {
        token(&url, &state, "orders.read").await.1["error"] == "invalid_scope"
    })
    .await;
}

/// A reload of thousands of clients runs beside serving: answers keep coming while the pass
/// reads, judges and writes (it once ran on the serving threads and stopped new connections
/// for seconds). The bound is relative to the reload itself, not to the machine's speed.
#[tokio::test]
async fn a_big_reload_keeps_serving_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
    copy_examples(&manifests);
    let mut many = String::new();
    for i in 0..2000 {
        many.push_str(&format!(
            "---\napiVersion: kauth.dev/v1alpha1\nkind: OAuthClient\nmetadata: {{name: c{i}, namespace: team{}}}\nspec: {{scopes: [orders.read]}}\n",
            i % 20
        ));
    }
    std::fs::write(manifests.join("many.yaml"), &many).unwrap();
    let (_running, url) = start(&manifests, &state);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = tokio::spawn({
        let (url, stop) = (url.clone(), stop.clone());
        async move {
            // A new connection for every request: the accept loop is what a blocked runtime stops.
            let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
            let (mut last, mut longest, mut answered) = (Instant::now(), Duration::ZERO, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = http.get(format!("{url}/.well-known/openid-configuration")).send().await;
                assert_eq!(res.unwrap().status(), 200);
                longest = longest.max(last.elapsed());
                last = Instant::now();
                answered += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (longest, answered)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(
        manifests.join("many.yaml"),
        many + "---\napiVersion: kauth.dev/v1alpha1\nkind: OAuthClient\nmetadata: {name: late, namespace: team1}\nspec: {scopes: [orders.read]}\n",
    )
    .unwrap();
    let late = state.join("secrets/team1/late-oauth/CLIENT_SECRET");
    let reload = wait_up_to(Duration::from_secs(60), "the new client is written", async || {
        late.exists()
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (longest, answered) = prober.await.unwrap();
    eprintln!("reload took {reload:?}; {answered} answers meanwhile, longest wait {longest:?}");
    assert!(
        longest < reload / 2,
        "serving stopped for {longest:?} of a {reload:?} reload"
    );
}

/// `kill -9` in the middle of a refresh storm on SQLite (shared commits). After a restart on the
/// same state, each family goes on from its last acknowledged token, or, when the rotation in
/// flight at the kill was committed, refuses that token as reused and ends the family. No
/// family forks, and a revocation acknowledged before the kill still holds.
#[tokio::test]
async fn kill_9_during_a_refresh_storm_forks_nothing_and_keeps_revocations() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
    copy_examples(&manifests);
    let (mut running, url) = start(&manifests, &state);
    let creds = state.join("secrets/shop/shop-web-oauth");
    let id = std::fs::read_to_string(creds.join("CLIENT_ID")).unwrap();
    let secret = std::fs::read_to_string(creds.join("CLIENT_SECRET")).unwrap();
    let refresh = {
        let (id, secret) = (id.clone(), secret.clone());
        move |base: String, token: String| {
            let (id, secret) = (id.clone(), secret.clone());
            async move {
                let r = reqwest::Client::new()
                    .post(format!("{base}/token"))
                    .basic_auth(id, Some(secret))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", token.as_str())])
                    .send()
                    .await?;
                let status = r.status().as_u16();
                let body: Value = r.json().await?;
                Ok::<_, reqwest::Error>((status, body))
            }
        }
    };
    // Nine families, one sign-in (session and consent are remembered).
    let mut families = refresh_families(&url, &state, 9).await;
    // The ninth family is revoked before the storm, and kauth says so.
    let revoked = families.pop().unwrap();
    let answer = reqwest::Client::new()
        .post(format!("{url}/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", revoked.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // Each family rotates as fast as it can; the last token kauth acknowledged is kept.
    let acknowledged: Vec<_> = families
        .iter()
        .map(|t| std::sync::Arc::new(std::sync::Mutex::new(t.clone())))
        .collect();
    let storm: Vec<_> = acknowledged
        .iter()
        .map(|last| {
            let (last, url, refresh) = (last.clone(), url.clone(), refresh.clone());
            tokio::spawn(async move {
                let mut rotations = 0;
                loop {
                    let current = last.lock().unwrap().clone();
                    match refresh(url.clone(), current).await {
                        Ok((200, body)) => {
                            *last.lock().unwrap() = body["refresh_token"].as_str().unwrap().to_string();
                            rotations += 1;
                        }
                        Ok((status, body)) => panic!("refresh refused before the kill: {status} {body}"),
                        Err(_) => return rotations, // the process is gone
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    running.0.kill().unwrap(); // SIGKILL
    running.0.wait().unwrap();
    let mut rotations = 0;
    for task in storm {
        rotations += task.await.unwrap();
    }
    assert!(rotations > 16, "the storm rotated only {rotations} tokens");

    let (_again, url) = start(&manifests, &state);
    let (mut continued, mut ended) = (0, 0);
    for last in &acknowledged {
        let last = last.lock().unwrap().clone();
        let (status, body) = refresh(url.clone(), last.clone()).await.unwrap();
        if status == 200 {
            continued += 1;
            // No fork: the acknowledged token is now used; using it again ends the family,
            // the token just issued included.
            let next = body["refresh_token"].as_str().unwrap().to_string();
            assert_eq!(refresh(url.clone(), last).await.unwrap().0, 400);
            let (status, body) = refresh(url.clone(), next).await.unwrap();
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        } else {
            // The rotation in flight was committed and never acknowledged: a reuse.
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
            ended += 1;
        }
    }
    eprintln!("{rotations} rotations before kill -9; after restart {continued} families went on, {ended} ended");
    let (status, body) = refresh(url.clone(), revoked).await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "a revocation was lost"
    );
}

/// PostgreSQL stopped in the middle of a refresh load, then started again. During the outage
/// every refresh answers 503 `temporarily_unavailable` within the store deadline (none hangs,
/// none is a 500) while client_credentials goes on; after it, each family goes on from its last
/// acknowledged token, without a restart of kauth.
#[tokio::test]
async fn a_store_stopped_under_load_fails_fast_and_the_load_resumes() {
    let pg = OwnPostgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, state) = (tmp.path().join("m"), tmp.path().join("state"));
    copy_examples(&manifests);
    let (_running, first) = spawn_on_store(&manifests, &state, &pg.url);
    let url = issuer_url(&first);
    let creds = state.join("secrets/shop/shop-web-oauth");
    let id = std::fs::read_to_string(creds.join("CLIENT_ID")).unwrap();
    let secret = std::fs::read_to_string(creds.join("CLIENT_SECRET")).unwrap();
    let post = {
        let (url, id, secret) = (url.clone(), id.clone(), secret.clone());
        move |form: Vec<(&'static str, String)>| {
            let (url, id, secret) = (url.clone(), id.clone(), secret.clone());
            async move {
                let started = Instant::now();
                let r = reqwest::Client::new()
                    .post(format!("{url}/token"))
                    .basic_auth(id, Some(secret))
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                (status, body, started.elapsed())
            }
        }
    };
    let families: Vec<_> = refresh_families(&url, &state, 4)
        .await
        .into_iter()
        .map(|t| std::sync::Arc::new(std::sync::Mutex::new(t)))
        .collect();
    let outage = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0)); // 0 before, 1 during, 2 after
    let load: Vec<_> = families
        .iter()
        .map(|last| {
            let (last, post, outage) = (last.clone(), post.clone(), outage.clone());
            tokio::spawn(async move {
                let (mut refused, mut slowest) = (0, Duration::ZERO);
                while outage.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                    let token = last.lock().unwrap().clone();
                    let (status, body, took) =
                        post(vec![("grant_type", "refresh_token".into()), ("refresh_token", token)]).await;
                    match status {
                        200 => *last.lock().unwrap() = body["refresh_token"].as_str().unwrap().to_string(),
                        503 => {
                            assert_eq!(body["error"], "temporarily_unavailable", "{body}");
                            refused += 1;
                            slowest = slowest.max(took);
                        }
                        _ => panic!("refresh answered {status} {body}"),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (refused, slowest)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.ctl("stop");
    outage.store(1, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _) = token(&url, &state, "orders.read").await;
    assert_eq!(status, 200, "client_credentials needs no store");
    pg.ctl("start");
    tokio::time::sleep(Duration::from_secs(2)).await;
    outage.store(2, std::sync::atomic::Ordering::SeqCst);
    let (mut refused, mut slowest) = (0, Duration::ZERO);
    for task in load {
        let (r, s) = task.await.unwrap();
        refused += r;
        slowest = slowest.max(s);
    }
    eprintln!("{refused} refreshes refused during the outage, slowest refusal {slowest:?}");
    assert!(refused >= 4, "every family met the outage: {refused} refusals");
    assert!(slowest < Duration::from_secs(3), "a refusal took {slowest:?}");
    // Each family goes on from the token kauth last acknowledged.
    for last in &families {
        let token = last.lock().unwrap().clone();
        let (status, body, _) = wait_for_refresh(&post, token).await;
        assert_eq!(status, 200, "a family did not survive the outage: {body}");
    }
}

/// A refresh retried while the store may still be coming back (503), as a client would.
async fn wait_for_refresh<F, Fut>(post: &F, token: String) -> (u16, Value, Duration)
where
    F: Fn(Vec<(&'static str, String)>) -> Fut,
    Fut: std::future::Future<Output = (u16, Value, Duration)>,
{
    for _ in 0..50 {
        let answer = post(vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", token.clone()),
        ])
        .await;
        if answer.0 != 503 {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the store did not come back");
}

/// An HTTPS client that trusts only the CA certificate(s) in `ca` (PEM), keeping connections
/// open between requests. kauth's own rustls stack: reqwest is built without TLS here.
struct Trusting(
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Empty<bytes::Bytes>,
    >,
);

impl Trusting {
    fn new(ca: &Path) -> Self {
        Self(support::https_trusting(ca))
    }

    /// GET `url`: the status and body, or why the connection failed.
    async fn get(&self, url: &str) -> Result<(u16, Value), String> {
        use http_body_util::BodyExt;
        let res = self.0.get(url.parse().unwrap()).await.map_err(|e| format!("{e:?}"))?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}

/// Replaces `to` with `from` in one rename, as a Secret volume update does.
fn swap_in(from: &Path, to: &Path) {
    let staged = to.with_extension("staged");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

/// HTTPS from kauth itself (issue 11): the issuer and every URL it hands out are https; a
/// renewed certificate (here from another CA) is served to new connections within seconds, and
/// a connection opened before keeps working; `--tls self-signed` makes a local CA in the state
/// folder that clients can trust.
#[tokio::test]
async fn serves_https_and_takes_a_renewed_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (manifests, state) = (dir.path().join("manifests"), dir.path().join("state"));
    copy_examples(&manifests);
    let first_ca = kauth::tls::local_ca(&dir.path().join("first"), "127.0.0.1").unwrap();
    let renewed = kauth::tls::local_ca(&dir.path().join("renewed"), "127.0.0.1").unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    swap_in(&first_ca.cert, &cert);
    swap_in(&first_ca.key, &key);
    let (_kauth, first) = spawn_standalone(&[
        "--manifests".as_ref(),
        manifests.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--tls-cert-file".as_ref(),
        cert.as_os_str(),
        "--tls-key-file".as_ref(),
        key.as_os_str(),
    ]);
    let url = issuer_url(&first);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let discovery = format!("{url}/.well-known/openid-configuration");
    let old = Trusting::new(&first_ca.ca);
    let (_, doc) = old.get(&discovery).await.unwrap();
    assert_eq!(doc["issuer"], url.as_str());
    assert!(doc["token_endpoint"].as_str().unwrap().starts_with("https://"));
    let token_url = std::fs::read_to_string(state.join("secrets/shop/shop-backend-oauth/TOKEN_URL")).unwrap();
    assert_eq!(token_url, format!("{url}/token"));
    // Plain HTTP on the TLS port gets no HTTP answer (a TLS alert or a closed connection), and
    // the port keeps serving TLS afterwards: not just any failure counts.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut plain = tokio::net::TcpStream::connect(url.trim_start_matches("https://"))
            .await
            .expect("the TLS port accepts connections");
        plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
        assert!(
            !answer.starts_with(b"HTTP/"),
            "plain HTTP answered on the TLS port: {}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            answer.is_empty() || answer[0] == 0x15,
            "neither a TLS alert nor a close: {answer:?}"
        );
        assert_eq!(old.get(&discovery).await.unwrap().0, 200, "TLS still served");
    }

    // A request in flight across the renewal: headers and half the body now, the rest after.
    let (id, secret) = (
        std::fs::read_to_string(state.join("secrets/shop/shop-backend-oauth/CLIENT_ID")).unwrap(),
        std::fs::read_to_string(state.join("secrets/shop/shop-backend-oauth/CLIENT_SECRET")).unwrap(),
    );
    let in_flight = {
        use base64::Engine;
        use tokio::io::AsyncWriteExt;
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(support::tls_trusting(&first_ca.ca)));
        let address = url.trim_start_matches("https://").to_string();
        let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut stream = connector.connect(name, tcp).await.unwrap();
        let body = "grant_type=client_credentials&scope=orders.read";
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        let head = format!(
            "POST /token HTTP/1.1\r\nHost: {address}\r\nAuthorization: Basic {basic}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body.as_bytes()[..10]).await.unwrap();
        stream.flush().await.unwrap();
        (stream, body)
    };

    // Renewal: the key first, then the certificate; in between kauth keeps the old pair.
    swap_in(&renewed.key, &key);
    swap_in(&renewed.cert, &cert);
    let new = Trusting::new(&renewed.ca);
    let took = wait_up_to(Duration::from_secs(6), "the renewed certificate", async || {
        new.get(&discovery).await.is_ok()
    })
    .await;
    eprintln!("renewed certificate served after {took:?}");
    let kept = old
        .get(&discovery)
        .await
        .expect("the connection opened before stays up");
    assert_eq!(kept.0, 200);
    let (mut stream, body) = in_flight;
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(&body.as_bytes()[10..]).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "the request in flight completes: {answer}"
        );
    }
    // New connections get the renewed certificate: one trusting only the old CA fails its
    // check (not just any error), while one trusting the new CA is served.
    let fresh_old = Trusting::new(&first_ca.ca).get(&discovery).await;
    let refused = fresh_old.expect_err("new connections get the renewed certificate");
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("BadSignature") || refused.contains("certificate"),
        "refused for the certificate, not for another reason: {refused}"
    );
    assert_eq!(Trusting::new(&renewed.ca).get(&discovery).await.unwrap().0, 200);

    // A local CA for development.
    let (state2, manifests2) = (dir.path().join("state2"), dir.path().join("manifests2"));
    copy_examples(&manifests2);
    let (_local, first) = spawn_standalone(&[
        "--manifests".as_ref(),
        manifests2.as_os_str(),
        "--state-dir".as_ref(),
        state2.as_os_str(),
        "--tls".as_ref(),
        "self-signed".as_ref(),
    ]);
    let url = issuer_url(&first);
    assert!(url.starts_with("https://"), "{url}");
    let (status, doc) = Trusting::new(&state2.join("tls/ca.crt"))
        .get(&format!("{url}/.well-known/openid-configuration"))
        .await
        .unwrap();
    assert_eq!((status, doc["issuer"].as_str()), (200, Some(url.as_str())));
}

/// Runs `kauth login` with `args`; returns the child and its standard error, line by line.
fn spawn_login(args: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kauth"))
        .arg("login")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// The first line of `lines` containing `marker`, within 20 s.
fn line_with(lines: &std::sync::mpsc::Receiver<String>, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no line with {marker:?}"));
        if line.contains(marker) {
            return line;
        }
    }
}

/// What `kauth login` printed: the ExecCredential's token, after the process ended well.
fn credential_of(child: Child) -> (String, serde_json::Value) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cred: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cred["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(cred["kind"], "ExecCredential");
    let token = cred["status"]["token"].as_str().unwrap().to_string();
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    (token, claims)
}

/// `kauth login` as kubectl runs it (issue 11): the device grant prints a code and ends with an
/// ExecCredential carrying the person's ID token; the token is cached readable by the user
/// alone and served from the cache; an expired one is refreshed without asking; the browser
/// flow comes back to a loopback port the client never registered (RFC 8252); a wrong issuer is
/// one line on stderr.
#[tokio::test]
async fn kauth_login_signs_in_caches_privately_and_refreshes_silently() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (manifests, state, cache) = (dir.path().join("m"), dir.path().join("s"), dir.path().join("cache"));
    copy_examples(&manifests);
    std::fs::write(manifests.join("kubectl.yaml"), support::KUBECTL_CLIENT).unwrap();
    let (_kauth, url) = start(&manifests, &state);
    let cache_arg = format!("--cache-dir={}", cache.display());
    let issuer_arg = format!("--issuer={url}");
    let common = [issuer_arg.as_str(), "--client-id=kauth.kubectl", cache_arg.as_str()];
    let alice = ("alice", "alice-demo-password");

    let (child, stderr) = spawn_login(&[&common[..], &["--device"]].concat());
    let line = line_with(&stderr, "enter the code");
    let code = line.rsplit(' ').next().unwrap().to_string();
    let browser = support::browser::Browser::new();
    let (_, done) = browser.answer_device(&url, &code, alice, "allow").await;
    assert!(done.body.contains("Device signed in"), "{}", done.body);
    let (first, claims) = credential_of(child);
    assert_eq!(
        (claims["sub"].as_str(), claims["aud"].as_str()),
        (Some("alice"), Some("kauth.kubectl"))
    );
    // The tokens, beside the lock that keeps two runs from refreshing at once.
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o700);

    // From the cache: no sign-in (without a browser it would wait).
    let (child, _) = spawn_login(&[&common[..], &["--no-browser"]].concat());
    assert_eq!(credential_of(child).0, first);
    // Expired: refreshed, silently.
    let mut cached: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    cached["expires_at"] = 0.into();
    std::fs::write(&files[0], cached.to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // a new iat, so a new token
    let (child, _) = spawn_login(&[&common[..], &["--no-browser"]].concat());
    let (refreshed, claims) = credential_of(child);
    assert_ne!(refreshed, first);
    assert_eq!(claims["sub"], "alice");

    // The browser flow, on whatever loopback port kauth login got.
    std::fs::remove_file(&files[0]).unwrap();
    let (child, stderr) = spawn_login(&[&common[..], &["--no-browser"]].concat());
    let line = line_with(&stderr, "To sign in, open ");
    let authorize = line.trim_start_matches("To sign in, open ").to_string();
    let back = browser.sign_in(&url, &authorize, alice).await;
    assert_eq!(back.host_str(), Some("127.0.0.1"));
    assert_eq!(back.path(), "/callback");
    let answered = browser.get(back.as_str()).await;
    assert_eq!(answered.status, 200, "{}", answered.body);
    let (_, claims) = credential_of(child);
    assert_eq!(claims["sub"], "alice");

    let (child, stderr) = spawn_login(&["--issuer=http://127.0.0.1:9", "--client-id=x", cache_arg.as_str()]);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err: Vec<String> = stderr.iter().collect();
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].starts_with("kauth login: cannot read the discovery document"),
        "{err:?}"
    );
}

/// `kauth login` without a person (issue 25's CI mode): the CI's own client, with its secret
/// from a file, gets its access token for the cluster's audience (subject `client:<id>`, never
/// a person's), cached like a person's token but apart from it; a wrong secret and a scope the
/// client was not granted are one line on stderr; a person's options are refused with it.
#[tokio::test]
async fn kauth_login_for_ci_gets_the_clients_own_token_for_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (manifests, state, cache) = (dir.path().join("m"), dir.path().join("s"), dir.path().join("cache"));
    copy_examples(&manifests);
    std::fs::write(manifests.join("kubectl.yaml"), support::KUBECTL_CLIENT).unwrap();
    std::fs::write(manifests.join("ci.yaml"), support::CI_CLUSTER_ACCESS).unwrap();
    let (_kauth, url) = start(&manifests, &state);
    let secret = state.join("secrets/ci/deployer-oauth/CLIENT_SECRET");
    let issuer_arg = format!("--issuer={url}");
    let cache_arg = format!("--cache-dir={}", cache.display());
    let secret_arg = format!("--client-secret-file={}", secret.display());
    let ci = [
        issuer_arg.as_str(),
        "--client-id=ci.deployer",
        secret_arg.as_str(),
        "--scope=kubernetes",
        cache_arg.as_str(),
    ];
    let (child, _) = spawn_login(&ci);
    let (token, claims) = credential_of(finished(child, "the CI login"));
    assert_eq!(
        (claims["sub"].as_str(), claims["aud"].as_str(), claims["scope"].as_str()),
        (Some("client:ci.deployer"), Some("kauth.kubectl"), Some("kubernetes")),
        "{claims}"
    );
    // The next kubectl command: from the cache.
    let (child, _) = spawn_login(&ci);
    assert_eq!(credential_of(finished(child, "the cached CI login")).0, token);

    let one_line = |args: &[&str], expected: &str| {
        let (child, stderr) = spawn_login(args);
        let out = finished(child, expected).wait_with_output().unwrap();
        assert!(!out.status.success() && out.stdout.is_empty(), "{expected}");
        let err: Vec<String> = stderr.iter().collect();
        assert!(err.iter().any(|l| l.contains(expected)), "{expected}: {err:?}");
    };
    let wrong = dir.path().join("wrong-secret");
    std::fs::write(&wrong, "not the secret").unwrap();
    let wrong_arg = format!("--client-secret-file={}", wrong.display());
    one_line(
        &[
            &issuer_arg,
            "--client-id=ci.deployer",
            &wrong_arg,
            "--scope=kubernetes",
            &cache_arg,
            "--scope=other",
        ],
        "invalid_client",
    );
    // shop's backend (the examples') was not granted the cluster.
    let shop = state.join("secrets/shop/shop-backend-oauth/CLIENT_SECRET");
    let shop_arg = format!("--client-secret-file={}", shop.display());
    one_line(
        &[
            &issuer_arg,
            "--client-id=shop.shop-backend",
            &shop_arg,
            "--scope=kubernetes",
            &cache_arg,
        ],
        "invalid_scope",
    );
    one_line(&[&ci[..], &["--account=alice"]].concat(), "cannot be used with");
}

/// Waits up to 30 s for `child` to end; a run still going has fallen back to a sign-in.
fn finished(mut child: Child, what: &str) -> Child {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{what}: still running (waiting for a sign-in?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// The cache files of `dir` (the tokens, not their locks), by the `sub` of their ID token.
fn cached_by_person(dir: &Path) -> std::collections::BTreeMap<String, (std::path::PathBuf, Value)> {
    use base64::Engine;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let cached: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let payload = cached["id_token"]
                .as_str()
                .unwrap()
                .split('.')
                .nth(1)
                .unwrap()
                .to_string();
            let claims: Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap(),
            )
            .unwrap();
            (claims["sub"].as_str().unwrap().to_string(), (p, cached))
        })
        .collect()
}

/// `kauth login` people keep (issue 25): two accounts on one issuer side by side, each with its
/// own cached tokens; two kubectl runs refreshing one expired token at once both succeed (a
/// lock: the second finds the first's fresh token instead of replaying the rotated refresh
/// token, which would revoke the family); `kauth login logout` revokes the refresh token at
/// the issuer and drops that account's cache only.
#[tokio::test]
async fn kauth_login_keeps_accounts_apart_refreshes_once_and_logs_out() {
    let dir = tempfile::tempdir().unwrap();
    let (manifests, state, cache) = (dir.path().join("m"), dir.path().join("s"), dir.path().join("cache"));
    copy_examples(&manifests);
    std::fs::write(manifests.join("people.yaml"), support::people()).unwrap();
    std::fs::write(manifests.join("kubectl.yaml"), support::KUBECTL_CLIENT).unwrap();
    let (_kauth, url) = start(&manifests, &state);
    let cache_arg = format!("--cache-dir={}", cache.display());
    let issuer_arg = format!("--issuer={url}");
    let common = [issuer_arg.as_str(), "--client-id=kauth.kubectl", cache_arg.as_str()];

    for (account, user) in [("alice", ("alice", "wonderland")), ("bob", ("bob", "builder"))] {
        let flag = format!("--account={account}");
        let (child, stderr) = spawn_login(&[&common[..], &["--device", flag.as_str()]].concat());
        let line = line_with(&stderr, "enter the code");
        let code = line.rsplit(' ').next().unwrap().to_string();
        let (_, done) = support::browser::Browser::new()
            .answer_device(&url, &code, user, "allow")
            .await;
        assert!(done.body.contains("Device signed in"), "{}", done.body);
        assert_eq!(credential_of(child).1["sub"], account);
    }
    // An account answered by someone else is refused, and caches nothing.
    let (child, stderr) = spawn_login(&[&common[..], &["--device", "--account=carol"]].concat());
    let line = line_with(&stderr, "enter the code");
    let code = line.rsplit(' ').next().unwrap().to_string();
    support::browser::Browser::new()
        .answer_device(&url, &code, ("alice", "wonderland"), "allow")
        .await;
    let out = finished(child, "a refused account").wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr.iter().any(|l| l.contains("signed in as alice, not carol")),
        "the refusal names both"
    );
    let cached = cached_by_person(&cache);
    assert_eq!(cached.keys().collect::<Vec<_>>(), ["alice", "bob"]);
    // From the cache, each account is its own person (without a browser a sign-in would wait).
    for account in ["alice", "bob"] {
        let flag = format!("--account={account}");
        let (child, _) = spawn_login(&[&common[..], &["--no-browser", flag.as_str()]].concat());
        assert_eq!(credential_of(finished(child, account)).1["sub"], account);
    }

    // bob's token expired; two runs at once: both get a token, by one refresh.
    let (bob_file, mut bob_cached) = cached["bob"].clone();
    bob_cached["expires_at"] = 0.into();
    std::fs::write(&bob_file, bob_cached.to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // a new iat, so a new token
    let runs: Vec<Child> = (0..2)
        .map(|_| spawn_login(&[&common[..], &["--no-browser", "--account=bob"]].concat()).0)
        .collect();
    for run in runs {
        assert_eq!(credential_of(finished(run, "a concurrent refresh")).1["sub"], "bob");
    }
    // The family was not revoked for a replay: it refreshes again.
    let (bob_file, mut bob_cached) = cached_by_person(&cache)["bob"].clone();
    bob_cached["expires_at"] = 0.into();
    std::fs::write(&bob_file, bob_cached.to_string()).unwrap();
    let (child, _) = spawn_login(&[&common[..], &["--no-browser", "--account=bob"]].concat());
    assert_eq!(credential_of(finished(child, "a refresh after them")).1["sub"], "bob");

    // alice signs out: her refresh token no longer works, her cache is gone, bob's stays.
    let alice_refresh = cached["alice"].1["refresh_token"].as_str().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_kauth"))
        .args(["login", "logout", "--account=alice"])
        .args(common)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refresh token revoked"));
    let refreshed = reqwest::Client::new()
        .post(format!("{url}/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", alice_refresh.as_str()),
            ("client_id", "kauth.kubectl"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 400);
    assert_eq!(cached_by_person(&cache).keys().collect::<Vec<_>>(), ["bob"]);
    let again = Command::new(env!("CARGO_BIN_EXE_kauth"))
        .args(["login", "logout", "--account=alice"])
        .args(common)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("not signed in"));
}

/// OpenTelemetry: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, kauth sends its spans to the
/// collector (here an OTLP/HTTP receiver in the test, taking JSON): a server span per request
/// that joins the caller's `traceparent`, and the grant-store call a request makes as its child.
#[tokio::test]
async fn traces_reach_an_otlp_collector_and_join_the_callers_trace() {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = received.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            sink.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).expect("OTLP JSON"));
            axum::Json(serde_json::json!({}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let dir = tempfile::tempdir().unwrap();
    let (manifests, state) = (dir.path().join("manifests"), dir.path().join("state"));
    copy_examples(&manifests);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kauth"))
        .args(["standalone", "--port", "0", "--ops-port", "0", "--manifests"])
        .arg(&manifests)
        .arg("--state-dir")
        .arg(&state)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector_url)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_SERVICE_NAME", "kauth-under-test")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = issuer_url(&lines.next().unwrap().unwrap());
    std::thread::spawn(move || lines.for_each(|l| eprintln!("kauth: {}", l.unwrap_or_default())));
    let _running = Running(child);

    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let creds = state.join("secrets/shop/shop-backend-oauth");
    let id = std::fs::read_to_string(creds.join("CLIENT_ID")).unwrap();
    let secret = std::fs::read_to_string(creds.join("CLIENT_SECRET")).unwrap();
    let http = reqwest::Client::new();
    let issued: Value = http
        .post(format!("{url}/token"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "orders.read")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = issued["access_token"].as_str().expect("a token").to_string();
    let revoked = http
        .post(format!("{url}/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", access_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);

    // Every span received, with its batch's service name.
    let spans = || -> Vec<(String, Value)> {
        let batches = received.lock().unwrap();
        let mut out = Vec::new();
        for batch in batches.iter() {
            for rs in batch["resourceSpans"].as_array().into_iter().flatten() {
                let service = rs["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "service.name")
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .unwrap_or_default()
                    .to_string();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        out.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        out
    };
    let named = |name: &str| spans().into_iter().find(|(_, s)| s["name"] == name);
    wait_up_to(Duration::from_secs(10), "the request and store spans", async || {
        named("POST /token").is_some() && named("POST /revoke").is_some() && named("revoke").is_some()
    })
    .await;
    let (service, token_span) = named("POST /token").unwrap();
    assert_eq!(service, "kauth-under-test");
    assert_eq!(
        token_span["traceId"], trace_id,
        "joins the caller's trace: {token_span}"
    );
    assert_eq!(token_span["parentSpanId"], caller_span);
    let (_, revoke_span) = named("POST /revoke").unwrap();
    let (_, store_span) = named("revoke").unwrap();
    assert_eq!(store_span["traceId"], revoke_span["traceId"]);
    assert_eq!(
        store_span["parentSpanId"], revoke_span["spanId"],
        "the store call is the request's child"
    );
    let text = serde_json::to_string(&received.lock().unwrap().clone()).unwrap();
    assert!(
        !text.contains(&secret) && !text.contains(&access_token),
        "no secret or token in a span"
    );
}
