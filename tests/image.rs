//! Image tier (`make test-image`): the container image `make image` builds, checked as a
//! platform team would run it. Containers cannot start on these machines, so the image's root
//! filesystem is mounted (buildah) and kauth is run from it with chroot as the image's user:
//! proof that every library it needs is inside and that it runs as non-root.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod support;

use support::binary::{issuer_url, spawn_reading, token};

/// The image under test (tests/image/run.sh builds it and sets this).
fn image() -> String {
    std::env::var("KAUTH_IMAGE").expect("KAUTH_IMAGE names the image: run `make test-image`")
}

fn buildah(args: &[&str]) -> String {
    let out = Command::new("buildah")
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "buildah {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A working container of the image with its root filesystem mounted; removed when dropped.
struct Mounted {
    container: String,
    root: PathBuf,
}

impl Mounted {
    fn new() -> Self {
        let container = buildah(&["from", "--pull-never", &image()]);
        let root = PathBuf::from(buildah(&["mount", &container]));
        Self { container, root }
    }

    /// `kauth ARGS` from the image's root, as its user.
    fn kauth(&self, args: &[&str]) -> Command {
        let mut command = Command::new("chroot");
        command
            .arg("--userspec=65532:65532")
            .arg(&self.root)
            .arg("/kauth")
            .args(args);
        command
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("buildah")
            .args(["--storage-driver", "vfs", "umount", &self.container])
            .output();
        let _ = Command::new("buildah")
            .args(["--storage-driver", "vfs", "rm", &self.container])
            .output();
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                files(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[test]
#[ignore = "needs buildah and root: make test-image"]
fn the_image_runs_as_nonroot_with_kauth_as_entrypoint_and_no_shell() {
    let inspected: Value = serde_json::from_str(&buildah(&["inspect", "--type", "image", &image()])).unwrap();
    let config = &inspected["OCIv1"]["config"];
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/kauth"]), "{config}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert!(
        image().ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "tagged with the crate version"
    );

    let mounted = Mounted::new();
    let everything = files(&mounted.root);
    for shell in ["sh", "bash", "dash", "busybox", "ash"] {
        assert!(
            !everything.iter().any(|f| f.file_name().is_some_and(|n| n == shell)),
            "{shell} in the image"
        );
    }
    assert!(
        everything
            .iter()
            .any(|f| f.ends_with("etc/ssl/certs/ca-certificates.crt"))
    );
    let version = mounted.kauth(&["--version"]).output().unwrap();
    assert!(version.status.success(), "{}", String::from_utf8_lossy(&version.stderr));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("kauth {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
#[ignore = "needs buildah and root: make test-image"]
async fn standalone_from_the_image_serves_discovery_and_a_token() {
    let mounted = Mounted::new();
    let home = mounted.root.join("home/nonroot");
    let mut command = mounted.kauth(&[
        "standalone",
        "--port",
        "0",
        "--ops-port",
        "0",
        "--state-dir",
        "/home/nonroot/state",
    ]);
    command.stdout(std::process::Stdio::piped());
    let (_running, first, _) = spawn_reading(command);
    let url = issuer_url(&first);
    let discovery: Value = reqwest::get(format!("{url}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], url.as_str());
    // The credentials it wrote as the image's user, read through the mounted root.
    let (status, body) = token(&url, &home.join("state"), "orders.read").await;
    assert_eq!(status, 200, "{body}");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(home.join("state")).unwrap());
    assert_eq!(owner, 65532, "written as the image's user, not root");
}
