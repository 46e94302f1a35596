//! The replica tier (`make test-replicas`): three `kauth standalone` replicas on one
//! PostgreSQL behind HAProxy (Debian's, round robin, a new connection to a replica for every
//! request), one issuer: the balancer's URL. Each test shows the replicas behaving as one
//! provider: what one spends, every other refuses; what one starts, another finishes; what one
//! revokes, all refuse within a second; limits are counted once for all; and a replica killed
//! under load costs no grant and no answer beyond its own requests in flight.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::binary::{Running, copy_examples, start_replica, wait_up_to};
use support::browser::{Browser, param};

/// Three replicas, their balancer, and what they share.
struct Replicas {
    /// The issuer: HAProxy's address.
    url: String,
    /// Each replica's own address (for a request sent to one on purpose).
    direct: Vec<String>,
    replicas: Vec<Option<Running>>,
    state: PathBuf,
    _balancer: Running,
    _dir: tempfile::TempDir,
}

const CALLBACK: &str = "http://127.0.0.1:8400/callback";

impl Replicas {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (manifests, state) = (dir.path().join("manifests"), dir.path().join("state"));
        copy_examples(&manifests);
        let store = support::fresh_postgres_database().await;
        let lb_port = support::free_port();
        let url = format!("http://127.0.0.1:{lb_port}");
        let mut replicas = Vec::new();
        let mut direct = Vec::new();
        // One after the other: the first makes the keys and secrets the others read.
        for _ in 0..3 {
            let (running, address) = start_replica(&manifests, &state, &url, &store);
            replicas.push(Some(running));
            direct.push(address);
        }
        let balancer = balancer(dir.path(), lb_port, &direct);
        let replicas = Self {
            url,
            direct,
            replicas,
            state,
            _balancer: balancer,
            _dir: dir,
        };
        wait_up_to(Duration::from_secs(10), "the balancer serves", async || {
            reqwest::get(format!("{}/.well-known/openid-configuration", replicas.url))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        replicas
    }

    fn credentials(&self, client: &str) -> (String, String) {
        let dir = self.state.join(format!("secrets/shop/{client}-oauth"));
        (
            std::fs::read_to_string(dir.join("CLIENT_ID")).unwrap(),
            std::fs::read_to_string(dir.join("CLIENT_SECRET")).unwrap(),
        )
    }

    /// A POST to /token at `at` (a replica, or the balancer) as the client `client`.
    async fn token(&self, at: &str, client: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let (id, secret) = self.credentials(client);
        post(&format!("{at}/token"), Some((&id, &secret)), form).await
    }

    /// alice signs in to shop-web through the balancer: the code on its redirect.
    async fn code(&self, browser: &Browser) -> String {
        let authorize = format!(
            "{}/authorize?client_id=shop.shop-web&response_type=code&scope=openid+offline_access+orders.read&state=s&redirect_uri={}",
            self.url,
            form_urlencoded::byte_serialize(CALLBACK.as_bytes()).collect::<String>()
        );
        let back = browser
            .sign_in(&self.url, &authorize, ("alice", "alice-demo-password"))
            .await;
        param(&back, "code").unwrap_or_else(|| panic!("{back}"))
    }

    fn kill(&mut self, i: usize) {
        self.replicas[i] = None;
    }
}

async fn post(url: &str, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let res = request.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

/// HAProxy in front of `replicas`: round robin, a new connection per request, health checks
/// every 100 ms, and a request that could not reach a replica sent to another.
fn balancer(dir: &Path, port: u16, replicas: &[String]) -> Running {
    let servers: String = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "    server r{i} {} check inter 100ms fall 1 rise 1\n",
                r.trim_start_matches("http://")
            )
        })
        .collect();
    let config = format!(
        "global\n    maxconn 2000\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    retries 3\n    option redispatch 1\n    option http-server-close\n\
         frontend kauth\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\
         backend replicas\n    balance roundrobin\n    option httpchk GET /.well-known/openid-configuration\n{servers}"
    );
    let file = dir.join("haproxy.cfg");
    std::fs::write(&file, config).unwrap();
    let bin = std::env::var("HAPROXY").unwrap_or_else(|_| "/usr/sbin/haproxy".into());
    let child = Command::new(&bin)
        .arg("-db")
        .arg("-f")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} ({e}): apt-get install haproxy"));
    Running(child)
}

#[tokio::test]
#[ignore = "needs PostgreSQL and HAProxy: make test-replicas"]
async fn a_code_and_a_refresh_token_are_good_once_across_replicas() {
    let r = Replicas::start().await;
    let (a, b, c) = (&r.direct[0], &r.direct[1], &r.direct[2]);
    let browser = Browser::new();
    let code = r.code(&browser).await;
    let redeem = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
    ];
    let (status, tokens) = r.token(a, "shop-web", &redeem).await;
    assert_eq!(status, 200, "{tokens}");
    let (status, replayed) = r.token(b, "shop-web", &redeem).await;
    assert_eq!(
        (status, replayed["error"].as_str()),
        (400, Some("invalid_grant")),
        "{replayed}"
    );
    // The replay revoked what the first redemption issued, on every replica.
    let issued = tokens["refresh_token"].as_str().unwrap();
    let (status, _) = r
        .token(
            c,
            "shop-web",
            &[("grant_type", "refresh_token"), ("refresh_token", issued)],
        )
        .await;
    assert_eq!(status, 400, "the refresh token of a replayed code");

    // Rotated on A, replayed on B: the family ends, so the token A gave is refused on C.
    let code = r.code(&browser).await;
    let redeem = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
    ];
    let (status, tokens) = r.token(a, "shop-web", &redeem).await;
    assert_eq!(status, 200, "{tokens}");
    let first = tokens["refresh_token"].as_str().unwrap().to_string();
    let refresh =
        |token: &str| [("grant_type", "refresh_token"), ("refresh_token", token)].map(|(k, v)| (k, v.to_string()));
    let form = refresh(&first);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, rotated) = r.token(a, "shop-web", &form).await;
    assert_eq!(status, 200, "{rotated}");
    let (status, _) = r.token(b, "shop-web", &form).await;
    assert_eq!(status, 400, "the rotated-out token, replayed on another replica");
    let next = refresh(rotated["refresh_token"].as_str().unwrap());
    let next: Vec<(&str, &str)> = next.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = r.token(c, "shop-web", &next).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "the family ended: {body}"
    );

    // One refresh token, twelve refreshes at once through the balancer: one winner.
    let code = r.code(&browser).await;
    let redeem = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
    ];
    let (_, tokens) = r.token(&r.url, "shop-web", &redeem).await;
    let token = tokens["refresh_token"].as_str().unwrap().to_string();
    let raced = (0..12).map(|_| {
        let token = token.clone();
        let r = &r;
        async move {
            let form = [("grant_type", "refresh_token"), ("refresh_token", token.as_str())];
            r.token(&r.url, "shop-web", &form).await.0
        }
    });
    let statuses = futures::future::join_all(raced).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL and HAProxy: make test-replicas"]
async fn a_device_sign_in_started_on_one_replica_completes_on_the_others() {
    let r = Replicas::start().await;
    let (status, started) = post(
        &format!("{}/device_authorization", r.direct[0]),
        None,
        &[("client_id", "shop.shop-cli"), ("scope", "openid orders.read")],
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let device_code = started["device_code"].as_str().unwrap();
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
        ("client_id", "shop.shop-cli"),
    ];
    let (status, pending) = post(&format!("{}/token", r.direct[2]), None, &poll).await;
    assert_eq!(
        (status, pending["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    // The person answers through the balancer (each page on whichever replica it picks).
    let (_, done) = Browser::new()
        .answer_device(
            &r.url,
            started["user_code"].as_str().unwrap(),
            ("alice", "alice-demo-password"),
            "allow",
        )
        .await;
    assert!(done.body.contains("Device signed in"), "{}", done.body);
    // The device's next poll (after its interval) on the third replica gets the tokens, once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, tokens) = post(&format!("{}/token", r.direct[1]), None, &poll).await;
    assert_eq!(status, 200, "{tokens}");
    let (status, again) = post(&format!("{}/token", r.direct[2]), None, &poll).await;
    assert_eq!(status, 400, "{again}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL and HAProxy: make test-replicas"]
async fn a_revocation_on_one_replica_holds_on_every_replica_within_a_second() {
    let r = Replicas::start().await;
    let (status, body) = r
        .token(
            &r.direct[0],
            "shop-backend",
            &[("grant_type", "client_credentials"), ("scope", "orders.read")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    let introspect = async |at: &str| {
        let (id, secret) = r.credentials("shop-backend");
        post(
            &format!("{at}/introspect"),
            Some((&id, &secret)),
            &[("token", token.as_str())],
        )
        .await
        .1["active"]
            .as_bool()
    };
    for at in &r.direct {
        assert_eq!(introspect(at).await, Some(true), "{at}");
    }
    let (id, secret) = r.credentials("shop-backend");
    let (status, _) = post(
        &format!("{}/revoke", r.direct[1]),
        Some((&id, &secret)),
        &[("token", token.as_str())],
    )
    .await;
    assert_eq!(status, 200);
    let revoked = Instant::now();
    for at in &r.direct {
        wait_up_to(Duration::from_millis(1500), "the revocation", async || {
            introspect(at).await == Some(false)
        })
        .await;
    }
    eprintln!("revoked on every replica within {:?}", revoked.elapsed());
}

#[tokio::test]
#[ignore = "needs PostgreSQL and HAProxy: make test-replicas"]
async fn password_guesses_through_the_balancer_meet_one_limit() {
    let r = Replicas::start().await;
    let browser = Browser::new();
    let authorize = format!(
        "{}/authorize?client_id=shop.shop-web&response_type=code&scope=openid&state=s&redirect_uri={}",
        r.url,
        form_urlencoded::byte_serialize(CALLBACK.as_bytes()).collect::<String>()
    );
    let started = browser.get(&authorize).await;
    let page = browser.get(&started.location.unwrap()).await.body;
    let (request, csrf) = (
        support::hidden_field(&page, "request"),
        support::hidden_field(&page, "csrf"),
    );
    let mut statuses = Vec::new();
    for _ in 0..9 {
        let step = browser.log_in(&r.url, &request, &csrf, ("alice", "wrong")).await;
        statuses.push(step.status.as_u16());
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 401, 429, 429, 429, 429],
        "three replicas, one limit"
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL and HAProxy: make test-replicas"]
async fn a_replica_killed_under_load_loses_no_grant_and_no_answer() {
    let mut r = Replicas::start().await;
    // A grant made before: its refresh token must survive the replica that issued it.
    let browser = Browser::new();
    let code = r.code(&browser).await;
    let redeem = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
    ];
    let (status, tokens) = r.token(&r.direct[1], "shop-web", &redeem).await;
    assert_eq!(status, 200, "{tokens}");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (id, secret) = r.credentials("shop-backend");
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, url, id, secret) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                r.url.clone(),
                id.clone(),
                secret.clone(),
            );
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = http
                        .post(format!("{url}/token"))
                        .basic_auth(&id, Some(&secret))
                        .form(&[("grant_type", "client_credentials"), ("scope", "orders.read")])
                        .send()
                        .await;
                    match sent {
                        Ok(res) if res.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ok.load(Ordering::Relaxed);
    r.kill(1); // SIGKILL, mid-stream
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "{ok} answered (of which {} after the kill), {failed} failed",
        ok - before
    );
    assert!(ok > before, "the others kept answering");
    assert!(
        failed <= 4,
        "no more failures than requests in flight at the killed replica: {failed}"
    );

    // The grant the killed replica issued lives on.
    let token = tokens["refresh_token"].as_str().unwrap();
    let (status, body) = r
        .token(
            &r.url,
            "shop-web",
            &[("grant_type", "refresh_token"), ("refresh_token", token)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL and HAProxy: make test-replicas"]
async fn a_pushed_request_made_on_one_replica_is_used_on_another_once() {
    let r = Replicas::start().await;
    let (id, secret) = r.credentials("shop-web");
    let (status, pushed) = post(
        &format!("{}/par", r.direct[0]),
        Some((&id, &secret)),
        &[
            ("response_type", "code"),
            ("scope", "openid"),
            ("state", "s"),
            ("redirect_uri", CALLBACK),
            ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{pushed}");
    let request_uri =
        form_urlencoded::byte_serialize(pushed["request_uri"].as_str().unwrap().as_bytes()).collect::<String>();
    let authorize = |at: &str| format!("{at}/authorize?client_id={id}&request_uri={request_uri}");
    let browser = Browser::new();
    let first = browser.get(&authorize(&r.direct[1])).await;
    assert_eq!(first.status, 303, "{}", first.body);
    assert!(
        first.location.as_deref().unwrap_or("").contains("/login?request="),
        "{first:?}"
    );
    // Spent: a second use on a third replica is refused (no redirect to trust: an error page).
    let again = browser.get(&authorize(&r.direct[2])).await;
    assert_eq!(again.status, 400, "used once: {again:?}");
}
