//! The deny list of revoked access tokens (by `jti`), kept until each token would have
//! expired anyway. It is persisted as an append-only JSON-lines file, compacted on load, so a
//! revoked token stays revoked after a restart.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Entry {
    jti: String,
    exp: i64,
}

/// Revoked token ids with their expiry (Unix seconds).
#[derive(Clone)]
pub struct RevocationList {
    revoked: Arc<RwLock<HashMap<String, i64>>>,
    log: Arc<Mutex<File>>,
}

/// The deny list file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("revocation list {path}: {source}")]
pub struct RevocationError {
    path: PathBuf,
    source: std::io::Error,
}

impl RevocationList {
    /// Opens (or creates) the list at `path`, dropping entries expired before `now`.
    pub fn open(path: &Path, now: i64) -> Result<Self, RevocationError> {
        let err = |source| RevocationError {
            path: path.to_path_buf(),
            source,
        };
        let mut revoked = HashMap::new();
        if path.exists() {
            let reader = BufReader::new(File::open(path).map_err(err)?);
            for line in reader.lines() {
                // A torn last line (crash mid-write) is skipped; everything before it counts.
                if let Ok(entry) = serde_json::from_str::<Entry>(&line.map_err(err)?)
                    && entry.exp > now
                {
                    revoked.insert(entry.jti, entry.exp);
                }
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        // Compact: write live entries to a temporary file and rename it over the log.
        let tmp = path.with_extension("tmp");
        {
            let mut out = File::create(&tmp).map_err(err)?;
            for (jti, exp) in &revoked {
                writeln!(out, "{}", serde_json::json!({"jti": jti, "exp": exp})).map_err(err)?;
            }
            out.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        let log = OpenOptions::new().append(true).open(path).map_err(err)?;
        Ok(Self {
            revoked: Arc::new(RwLock::new(revoked)),
            log: Arc::new(Mutex::new(log)),
        })
    }

    /// Revokes `jti` until `exp`; durable before it returns.
    pub fn revoke(&self, jti: &str, exp: i64) -> std::io::Result<()> {
        {
            let mut file = self.log.lock().unwrap_or_else(|p| p.into_inner());
            writeln!(file, "{}", serde_json::json!({"jti": jti, "exp": exp}))?;
            file.sync_data()?;
        }
        self.revoked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(jti.to_string(), exp);
        Ok(())
    }

    /// True when `jti` was revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.read().unwrap_or_else(|p| p.into_inner()).contains_key(jti)
    }

    /// Forgets entries whose tokens have expired; returns how many are left.
    pub fn sweep(&self, now: i64) -> usize {
        let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        revoked.retain(|_, exp| *exp > now);
        revoked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_restart_and_forgets_expired_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.jsonl");
        let list = RevocationList::open(&path, 100).unwrap();
        list.revoke("a", 200).unwrap();
        list.revoke("b", 150).unwrap();
        assert!(list.is_revoked("a"));
        drop(list);
        let reopened = RevocationList::open(&path, 160).unwrap();
        assert!(reopened.is_revoked("a"));
        assert!(!reopened.is_revoked("b"), "expired entries are dropped on load");
        assert_eq!(reopened.sweep(201), 0);
    }
}
