//! The real `kauth` binary in standalone mode, as the README runs it: started on a folder of
//! manifests, its summary read, its other output echoed (or kept, for tests that read it).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process, killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Copies the repository's `examples/` into `to`.
pub fn copy_examples(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// `kauth standalone` on free ports with `args`, not yet started.
pub fn standalone_command(args: &[&std::ffi::OsStr]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kauth"));
    command
        .args(["standalone", "--port", "0", "--ops-port", "0"])
        .args(args)
        .stdout(Stdio::piped());
    command
}

/// Starts `command` and returns it with the first line of its summary (`kauth standalone:
/// issuer URL (listening on ADDR)`) and the lines after it, each also echoed.
pub fn spawn_reading(mut command: Command) -> (Running, String, Receiver<String>) {
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines {
            let line = line.unwrap_or_default();
            eprintln!("kauth: {line}");
            let _ = tx.send(line);
        }
    });
    (Running(child), first, rx)
}

/// Starts `kauth standalone` with `args` and returns it with the first line of its summary;
/// the rest of its output is echoed.
pub fn spawn_standalone(args: &[&std::ffi::OsStr]) -> (Running, String) {
    let (running, first, _) = spawn_reading(standalone_command(args));
    (running, first)
}

/// The issuer URL in the summary's first line (`kauth standalone: issuer URL (listening ...)`).
pub fn issuer_url(first_line: &str) -> String {
    first_line
        .split("issuer ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no issuer in {first_line:?}"))
        .to_string()
}

/// Starts the binary and returns it with its base URL, read from the start-up summary.
pub fn start(manifests: &Path, state: &Path) -> (Running, String) {
    let started = Instant::now();
    let (running, first) = spawn_standalone(&[
        "--manifests".as_ref(),
        manifests.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    let url = issuer_url(&first);
    eprintln!("standalone printed its summary after {:?}", started.elapsed());
    (running, url)
}

/// A client_credentials token for the examples' `shop/shop-backend`, with its credentials
/// read from the state folder.
pub async fn token(url: &str, state: &Path, scope: &str) -> (u16, Value) {
    let dir = state.join("secrets/shop/shop-backend-oauth");
    let id = std::fs::read_to_string(dir.join("CLIENT_ID")).unwrap();
    let secret = std::fs::read_to_string(dir.join("CLIENT_SECRET")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("TOKEN_URL")).unwrap(),
        format!("{url}/token")
    );
    let res = reqwest::Client::new()
        .post(format!("{url}/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Waits up to a second for `check` to hold.
pub async fn wait_for(what: &str, check: impl AsyncFnMut() -> bool) -> Duration {
    wait_up_to(Duration::from_secs(1), what, check).await
}

/// Waits up to `limit` for `check` to hold; panics naming `what` otherwise.
pub async fn wait_up_to(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not take effect within {limit:?}");
}

/// Starts the binary as one of several replicas: a fixed issuer (the load balancer's URL), a
/// shared state folder and a shared PostgreSQL. Returns it with its own address.
pub fn start_replica(manifests: &Path, state: &Path, issuer: &str, store: &str) -> (Running, String) {
    let (running, first) = spawn_standalone(&[
        "--issuer".as_ref(),
        issuer.as_ref(),
        "--store-url".as_ref(),
        store.as_ref(),
        "--manifests".as_ref(),
        manifests.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    let addr = first
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (running, format!("http://{addr}"))
}
