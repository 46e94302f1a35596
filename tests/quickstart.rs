//! The README's quick start, walked exactly as written (issue 15), as a newcomer would on a
//! machine without a cluster: the first command (in the repository, on port 8080), the token
//! curl, the sign-in URL through the real pages in headless Chromium and the code redeemed
//! with the README's curl, the device-grant curls, and `kauth login --device` against the
//! issuer the summary printed; then the same with `--tls self-signed`, using the curl the
//! summary prints and the CA it names. The commands are read from README.md, so a README that
//! drifts from what works fails here. Run by `make test-browser`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::Value;
use support::chromium::{chromedriver, headless_with, settled_text, type_password};

/// The demo account of `examples/people.yaml`, as the README names it (user alice).
const ALICE: (&str, &str) = ("alice", "alice-demo-password");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// The code blocks of the README section headed `heading`, in order.
fn blocks(heading: &str) -> Vec<String> {
    let text = readme();
    let start = text
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading}"));
    let section = &text[start + heading.len() + 4..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut out = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let body_start = after.find('\n').unwrap() + 1;
        let close = after[body_start..].find("```").unwrap();
        out.push(after[body_start..body_start + close].to_string());
        rest = &after[body_start + close + 3..];
    }
    out
}

/// Runs `script` with bash in the repository; its standard output.
fn sh(script: &str) -> String {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The repository's `.kauth-state` moved aside while the quick start makes its own, and put
/// back afterwards (a developer's local state survives the test).
struct FreshState {
    kept: Option<PathBuf>,
}

impl FreshState {
    fn new() -> Self {
        let state = root().join(".kauth-state");
        let kept = state.exists().then(|| {
            let aside = root().join(".kauth-state.before-quickstart");
            let _ = std::fs::remove_dir_all(&aside);
            std::fs::rename(&state, &aside).unwrap();
            aside
        });
        Self { kept }
    }
}

impl Drop for FreshState {
    fn drop(&mut self) {
        let state = root().join(".kauth-state");
        let _ = std::fs::remove_dir_all(&state);
        if let Some(aside) = &self.kept {
            let _ = std::fs::rename(aside, &state);
        }
    }
}

/// The README's first command, run as written (with `--tls self-signed` added when asked),
/// killed on drop: its summary lines as they come.
struct FirstCommand {
    child: Child,
    lines: Receiver<String>,
}

impl FirstCommand {
    fn start(tls: bool) -> (Self, Vec<String>) {
        let first = blocks("The two commands")[0].lines().next().unwrap().to_string();
        let command = first.split(" #").next().unwrap().trim().to_string();
        assert_eq!(command, "cargo run --release -- standalone --manifests examples/");
        let command = if tls {
            format!("{command} --tls self-signed")
        } else {
            command
        };
        // exec: the process killed is kauth itself (cargo hands over to it).
        let mut child = Command::new("bash")
            .args(["-c", &format!("exec {command}")])
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                eprintln!("kauth: {line}");
                let _ = tx.send(line);
            }
        });
        let mut running = Self { child, lines };
        let summary = running.summary();
        (running, summary)
    }

    /// The summary, up to its curl (the first build may take minutes).
    fn summary(&mut self) -> Vec<String> {
        let mut summary = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(1200))
                .unwrap_or_else(|_| panic!("no summary: {summary:#?}"));
            let done = line.trim_start().starts_with("curl ");
            summary.push(line);
            if done {
                return summary;
            }
        }
    }
}

impl Drop for FirstCommand {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a browser goes on from the page of `url`: signs alice in if asked, allows if asked;
/// returns the URL it lands on outside kauth.
async fn sign_in_and_allow(browser: &Client, issuer: &str) -> url::Url {
    for _ in 0..20 {
        let now = browser.current_url().await.unwrap();
        if !now.as_str().starts_with(issuer) {
            return now;
        }
        if browser.find(Locator::Id("password")).await.is_ok() {
            // Types the username (alice) and the password, and submits.
            type_password(browser, ALICE.1).await;
        } else if let Ok(allow) = browser.find(Locator::Css("button[value=allow]")).await {
            allow.click().await.unwrap();
        } else if browser.find(Locator::Css("h1")).await.is_ok() && browser.title().await.unwrap() == "Device signed in"
        {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the sign-in did not finish: {}", browser.current_url().await.unwrap());
}

fn param(url: &url::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// A README command for the issuer the summary printed: its http://127.0.0.1:8080 replaced,
/// and curl told the local CA when there is one.
fn for_issuer(command: &str, issuer: &str, ca: Option<&str>) -> String {
    let command = command.replace("http://127.0.0.1:8080", issuer).replace("\\\n", " ");
    match ca {
        Some(ca) => command.replace("curl -s ", &format!("curl -s --cacert {ca} ")),
        None => command,
    }
}

async fn walk(tls: bool) {
    let _state = FreshState::new();
    let (_kauth, summary) = FirstCommand::start(tls);
    let issuer = summary[0]
        .split("issuer ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_string();
    assert_eq!(
        issuer,
        if tls {
            "https://127.0.0.1:8080"
        } else {
            "http://127.0.0.1:8080"
        },
        "the README's port"
    );
    let ca = summary.iter().find_map(|l| {
        l.split("--cacert ")
            .nth(1)
            .map(|r| r.split(' ').next().unwrap().to_string())
    });
    assert_eq!(
        ca.is_some(),
        tls,
        "the printed curl trusts the local CA with TLS: {summary:#?}"
    );

    // The summary's curl, as printed; and the README's own (plain http only).
    let printed = summary.last().unwrap().trim().to_string();
    let token = json(&sh(&printed));
    assert!(token["access_token"].is_string(), "{token}");
    if !tls {
        let token = json(&sh(&blocks("Get a token")[0]));
        assert_eq!(token["scope"], "orders.read", "{token}");
    }

    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    // The local CA is the test's own: Chromium is told not to mind it, curl and kauth login
    // are given it.
    let browser_args: &[&str] = if tls { &["--ignore-certificate-errors"] } else { &[] };
    let browser = headless_with(&driver, profile.path(), browser_args).await;
    let result = async {
        // Sign a person in with the README's URL, and redeem the code with its curl.
        let sign_in = blocks("Sign a person in");
        let url = for_issuer(sign_in[0].trim(), &issuer, None);
        browser.goto(&url).await.unwrap();
        let back = sign_in_and_allow(&browser, &issuer).await;
        assert_eq!(back.path(), "/callback", "{back}");
        let redeem = for_issuer(&sign_in[1], &issuer, ca.as_deref()).replace("THE_CODE", &param(&back, "code"));
        let tokens = json(&sh(&redeem));
        assert!(tokens["id_token"].is_string(), "{tokens}");

        // The device grant with the README's curls.
        let device = blocks("Sign in on a device, or from a terminal");
        let started = json(&sh(&for_issuer(&device[0], &issuer, ca.as_deref())));
        browser
            .goto(started["verification_uri_complete"].as_str().unwrap())
            .await
            .unwrap();
        browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        sign_in_and_allow(&browser, &issuer).await;
        settled_text(&browser, "h1", |t| t == "Device signed in").await;
        let poll = for_issuer(&device[1], &issuer, ca.as_deref())
            .replace("THE_DEVICE_CODE", started["device_code"].as_str().unwrap());
        let tokens = json(&sh(&poll));
        assert!(tokens["id_token"].is_string(), "{tokens}");

        // kauth login --device, as the README writes it, against the printed issuer.
        let readme = readme();
        let login = readme
            .split('`')
            .find(|c| c.starts_with("kauth login --issuer"))
            .expect("the README's kauth login line")
            .replace('\n', " ");
        let mut args: Vec<String> = for_issuer(&login, &issuer, None)
            .split_whitespace()
            .skip(1)
            .map(String::from)
            .collect();
        if let Some(ca) = &ca {
            args.push(format!("--certificate-authority={ca}"));
        }
        let cache = tempfile::tempdir().unwrap();
        args.push(format!("--cache-dir={}", cache.path().display()));
        let bin = root().join("target/release/kauth");
        let mut kauth_login = Command::new(&bin)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = BufReader::new(kauth_login.stderr.take().unwrap()).lines();
        let line = said
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.contains("enter the code"))
            .expect("kauth login names a code");
        std::thread::spawn(move || said.for_each(drop));
        let code = line.rsplit(' ').next().unwrap().to_string();
        browser.goto(&format!("{issuer}/device")).await.unwrap();
        let field = browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id("user_code"))
            .await
            .unwrap();
        field.send_keys(&format!("{code}\u{E007}")).await.unwrap();
        sign_in_and_allow(&browser, &issuer).await;
        let out = kauth_login.wait_with_output().unwrap();
        assert!(out.status.success());
        let credential = json(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(credential["kind"], "ExecCredential");
    }
    .await;
    browser.close().await.unwrap();
    result
}

// Several threads: blocking reads of kauth's output and kauth login's run beside the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
#[ignore = "needs Chromium and chromedriver, and port 8080: make test-browser"]
async fn the_quick_start_works_as_written() {
    walk(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
#[ignore = "needs Chromium and chromedriver, and port 8080: make test-browser"]
async fn the_quick_start_works_as_written_with_tls() {
    walk(true).await;
}

// ---- The newcomer's traps that need no browser (run by `make test`) ----

/// Standalone's health and metrics port never stops the first command: with 9090 taken (it is
/// Prometheus's default too), kauth starts on a free one and names it (it used to stop with
/// "Address already in use").
#[tokio::test]
async fn a_taken_operations_port_never_stops_the_first_command() {
    let held = std::net::TcpListener::bind("127.0.0.1:9090");
    let tmp = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kauth"));
    command
        .args(["standalone", "--port", "0", "--state-dir"])
        .arg(tmp.path())
        .stdout(Stdio::piped());
    let (_running, first, _) = support::binary::spawn_reading(command);
    let ops = first
        .split("health and metrics on ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("{first}"));
    assert_ne!(ops, "http://127.0.0.1:9090", "{first}");
    assert_eq!(reqwest::get(format!("{ops}/healthz")).await.unwrap().status(), 200);
    drop(held);
}

/// The summary's curl is for a client that may use client_credentials, whatever comes first
/// in the folder (with shop-backend refused it used to print shop-web, which may not).
#[tokio::test]
async fn the_printed_curl_is_for_a_client_that_may_use_client_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("m");
    support::binary::copy_examples(&manifests);
    let m2m = std::fs::read_to_string(manifests.join("client-m2m.yaml")).unwrap();
    std::fs::write(
        manifests.join("client-m2m.yaml"),
        m2m.replace("accessTokenLifetime: 15m", "accessTokenLifetime: forever"),
    )
    .unwrap();
    std::fs::write(
        manifests.join("zz-batch.yaml"),
        "apiVersion: kauth.dev/v1alpha1\nkind: OAuthClient\nmetadata: {name: batch, namespace: shop}\nspec: {scopes: [orders.read]}\n",
    )
    .unwrap();
    let mut command = support::binary::standalone_command(&[
        "--manifests".as_ref(),
        manifests.as_os_str(),
        "--state-dir".as_ref(),
        tmp.path().join("state").as_os_str(),
    ]);
    command.stdout(Stdio::piped());
    let (_running, _first, lines) = support::binary::spawn_reading(command);
    let curl = lines
        .iter()
        .find(|l| l.trim_start().starts_with("curl "))
        .expect("a curl");
    assert!(curl.contains("shop/batch-oauth"), "{curl}");
    let token = json(&sh(curl.trim()));
    assert_eq!(token["token_type"], "Bearer", "{token}");
}

/// A refusal at the device endpoint names the grant type to add, as the token endpoint's does.
#[tokio::test]
async fn the_device_endpoint_names_the_grant_type_to_add() {
    let web = "apiVersion: kauth.dev/v1alpha1\nkind: OAuthClient\nmetadata: {name: web, namespace: shop}\nspec:\n  clientType: public\n  grantTypes: [authorization_code]\n  redirectUris: [\"http://127.0.0.1/cb\"]\n";
    let p = support::TestProvider::start(&[("web.yaml", web)]).await;
    let r = support::rp_http()
        .post(format!("{}/device_authorization", p.url))
        .form(&[("client_id", "shop.web")])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("add urn:ietf:params:oauth:grant-type:device_code to spec.grantTypes"),
        "{body}"
    );
}

/// `/` says what kauth is; any other path a 404 that points at discovery: JSON for programs,
/// a page for browsers (they used to be empty). Sign-out errors are headed as such and name
/// the client and the address; authorization errors name the client and redirect URI.
#[tokio::test]
async fn paths_and_refusals_say_what_they_are() {
    let web = std::fs::read_to_string(root().join("examples/client-web.yaml")).unwrap();
    let p = support::TestProvider::start(&[("web.yaml", &web)]).await;
    let http = support::rp_http();
    let get = async |path: &str, accept: &str| {
        let r = http
            .get(format!("{}{path}", p.url))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let (status, landing) = get("/", "text/html").await;
    assert_eq!(status, 200);
    assert!(landing.contains("/.well-known/openid-configuration"), "{landing}");
    let (status, api) = get("/token/", "*/*").await;
    assert_eq!(status, 404);
    let api = json(&api);
    assert_eq!(api["error"], "invalid_request");
    assert!(api["error_description"].as_str().unwrap().contains("/token/"), "{api}");
    let (status, page) = get("/nothing-here", "text/html,application/xhtml+xml").await;
    assert_eq!(status, 404);
    assert!(page.contains("<h1>Not found</h1>"), "{page}");

    let (status, page) = get(
        "/end_session?client_id=shop.shop-web&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F%3Cb%3E",
        "text/html",
    )
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("<h1>Sign-out failed</h1>"), "{page}");
    assert!(
        page.contains("shop.shop-web") && page.contains("https://evil.example/&#60;b&#62;") && !page.contains("/<b>"),
        "named, and escaped: {page}"
    );
    let (status, page) = get(
        "/authorize?client_id=shop.shop-web&response_type=code&redirect_uri=https%3A%2F%2Fevil.example%2Fcb",
        "text/html",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        page.contains("shop.shop-web") && page.contains("https://evil.example/cb"),
        "{page}"
    );
}
