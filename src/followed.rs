//! Settings files kauth follows while it runs (mounted Secrets and ConfigMaps, which the
//! kubelet swaps in place): re-read every two seconds; a bad edit is logged and the previous
//! settings stay in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

/// Keeps `target` in step with the file at `path`, parsed by `parse`. Never returns.
pub async fn follow<T>(
    what: &'static str,
    path: PathBuf,
    parse: impl Fn(&str) -> Result<T, String>,
    target: Arc<ArcSwap<T>>,
) {
    let mut seen: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) => {
                if seen.is_some() || e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the {what} file");
                }
                continue;
            }
        };
        if seen.as_deref() == Some(text.as_str()) {
            continue;
        }
        match parse(&text) {
            Ok(value) => {
                tracing::info!(path = %path.display(), "{what} loaded");
                target.store(Arc::new(value));
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "the {what} file is invalid; keeping the previous settings")
            }
        }
        seen = Some(text);
    }
}
