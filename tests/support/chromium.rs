//! Headless Chromium driven over WebDriver (Debian `chromium` and `chromium-driver`), for the
//! tiers that walk kauth's pages as a person would.

use super::free_port;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

/// A chromedriver on a free 127.0.0.1 port, killed on drop.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn chromedriver() -> Driver {
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let port = free_port();
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} ({e}): apt-get install chromium chromium-driver"));
    // From here the Driver owns the process and kills it on drop, also when this panics.
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if reqwest::get(format!("{}/status", driver.url)).await.is_ok() {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not start on {}", driver.url);
}

pub async fn headless(driver: &Driver, profile: &std::path::Path) -> Client {
    headless_with(driver, profile, &[]).await
}

/// As [`headless`], with more Chromium arguments.
pub async fn headless_with(driver: &Driver, profile: &std::path::Path, more: &[&str]) -> Client {
    // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.extend(more.iter().map(|a| a.to_string()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": args
        }),
    );
    ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

pub async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Waits (10 s at most) until the text of `css` satisfies `done`: the element of the page
/// before may still be there, or gone stale, while the next one loads.
pub async fn settled_text(browser: &Client, css: &str, done: impl Fn(&str) -> bool) {
    let started = std::time::Instant::now();
    loop {
        let text = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if done(&text) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{css}, last: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On the sign-in page (wherever the flow started): alice types her name and password and
/// presses Enter. Checks the accessibility basics on the way: focus and labels.
pub async fn type_alices_password(browser: &Client) {
    type_password(browser, "wonderland").await
}

/// As [`type_alices_password`], with `password`.
pub async fn type_password(browser: &Client, password: &str) {
    let username = browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("username"))
        .await
        .unwrap();
    // Accessibility basics: the first field has focus and every field a label.
    let focused = browser.active_element().await.unwrap();
    assert_eq!(
        focused.attr("id").await.unwrap().as_deref(),
        Some("username"),
        "autofocus"
    );
    for id in ["username", "password"] {
        browser
            .find(Locator::Css(&format!("label[for={id}]")))
            .await
            .expect("a label");
    }
    assert_eq!(browser.title().await.unwrap().split(' ').next(), Some("Sign"));
    username.send_keys("alice").await.unwrap();
    let field = browser.find(Locator::Id("password")).await.unwrap();
    field.send_keys(&format!("{password}\u{E007}")).await.unwrap(); // Enter submits the form
}
