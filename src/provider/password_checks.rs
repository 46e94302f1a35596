//! Bounds the password checks that run at once. Each argon2id check holds about 19 MiB for
//! tens of milliseconds, so a burst of sign-ins must queue, not pile up: at most `permits`
//! run together (sized from the memory limit), the rest wait a moment in line, and beyond that
//! the person is asked to try again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::people::{CheckMemory, Directory, LocalUser};

/// Memory one check holds: argon2id with the default parameters `kauth hash-password` uses.
pub const CHECK_MEMORY_BYTES: u64 = argon2::Params::DEFAULT_M_COST as u64 * 1024;
/// Share of the memory limit password checks may use together.
const MEMORY_SHARE: u64 = 4;
/// How long a sign-in waits in line before it is turned away.
const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Every check slot is taken and the line is too long.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

/// The password checks of one process.
#[derive(Clone, Debug)]
pub struct PasswordChecks {
    slots: Arc<Semaphore>,
    permits: usize,
    /// One working memory per slot, reused: the process holds `permits` × 19 MiB for password
    /// checks, whatever the burst.
    memory: Arc<std::sync::Mutex<Vec<CheckMemory>>>,
}

impl Default for PasswordChecks {
    fn default() -> Self {
        Self::new(default_permits(memory_limit(), cores()))
    }
}

impl PasswordChecks {
    /// At most `permits` checks at once (at least one).
    pub fn new(permits: usize) -> Self {
        let permits = permits.max(1);
        Self {
            slots: Arc::new(Semaphore::new(permits)),
            permits,
            memory: Arc::default(),
        }
    }

    /// How many checks may run at once.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Checks `password` for `username` off the async threads, waiting for a slot if all are
    /// taken.
    pub async fn verify(
        &self,
        people: Arc<Directory>,
        username: String,
        password: String,
    ) -> Result<Option<LocalUser>, Busy> {
        let slot = tokio::time::timeout(QUEUE_WAIT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        let pool = self.memory.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let take = || pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut memory = take().unwrap_or_default();
            let user = people.verify_with(&username, &password, &mut memory).cloned();
            pool.lock().unwrap_or_else(|p| p.into_inner()).push(memory);
            drop(slot);
            user
        })
        .await;
        Ok(checked.ok().flatten())
    }
}

/// How many checks fit: a quarter of the memory limit, never more than the cores (argon2 is
/// CPU-bound, so more would only wait longer together), never fewer than one.
pub fn default_permits(memory_limit: Option<u64>, cores: usize) -> usize {
    let by_memory = memory_limit.map_or(usize::MAX, |limit| (limit / MEMORY_SHARE / CHECK_MEMORY_BYTES) as usize);
    by_memory.min(cores).max(1)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The container's memory limit (cgroup v2, else v1), if one is set.
fn memory_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .and_then(|text| text.trim().parse::<u64>().ok())
    // cgroup v1 reports "no limit" as a huge number.
    .filter(|limit| *limit < u64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_from_the_memory_limit_and_the_cores() {
        let mib = 1024 * 1024;
        assert_eq!(default_permits(Some(256 * mib), 8), 3, "the chart's 256Mi limit");
        assert_eq!(default_permits(Some(64 * mib), 8), 1, "never fewer than one");
        assert_eq!(default_permits(Some(4096 * mib), 2), 2, "never more than the cores");
        assert_eq!(default_permits(None, 4), 4);
    }

    #[tokio::test]
    async fn checks_beyond_the_slots_wait_their_turn() {
        let people = Arc::new(
            Directory::parse(&format!(
                "users: [{{username: a, passwordHash: '{}'}}]",
                crate::people::hash_password("pw")
            ))
            .unwrap(),
        );
        let checks = PasswordChecks::new(1);
        let runs = (0..3).map(|_| checks.verify(people.clone(), "a".into(), "pw".into()));
        let results = futures::future::join_all(runs).await;
        assert!(
            results.iter().all(|r| matches!(r, Ok(Some(_)))),
            "all checked, one at a time"
        );
        assert_eq!(checks.slots.available_permits(), 1, "every slot came back");
    }
}
