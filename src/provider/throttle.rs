//! Failed sign-in attempts, limited per account and per client address: past the limit,
//! further attempts are refused without checking the password until old failures age out.
//! Kept in memory per replica (an attacker spreading attempts over replicas gets at most
//! `replicas ×` the limit).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures remembered for this long.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failed attempts allowed per account within the window.
pub const PER_ACCOUNT: usize = 5;
/// Failed attempts allowed per address within the window (several people may share one).
pub const PER_ADDRESS: usize = 20;
/// Most keys tracked; past it the oldest-looking entries are dropped first.
const CAPACITY: usize = 100_000;

/// Recent failures by account and by address.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

fn account_key(username: &str) -> String {
    format!("u:{}", username.to_lowercase())
}

fn address_key(ip: IpAddr) -> String {
    format!("a:{ip}")
}

impl Throttle {
    fn recent(&self, key: &str, now: Instant) -> usize {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(times) = map.get_mut(key) else { return 0 };
        while times.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            times.pop_front();
        }
        times.len()
    }

    /// When attempts for this account or from this address are refused: how long until the
    /// next one is allowed.
    pub fn blocked(&self, username: &str, ip: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let mut limits = vec![(account_key(username), PER_ACCOUNT)];
        limits.extend(ip.map(|ip| (address_key(ip), PER_ADDRESS)));
        let map_wait = |key: &str, limit: usize| -> Option<Duration> {
            if self.recent(key, now) < limit {
                return None;
            }
            let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let oldest = *map.get(key)?.front()?;
            Some(WINDOW.saturating_sub(now.duration_since(oldest)))
        };
        limits.iter().filter_map(|(k, l)| map_wait(k, *l)).max()
    }

    /// Records a failed attempt.
    pub fn failed(&self, username: &str, ip: Option<IpAddr>, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CAPACITY {
            map.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        let mut keys = vec![account_key(username)];
        keys.extend(ip.map(address_key));
        for key in keys {
            let times = map.entry(key).or_default();
            times.push_back(now);
            // Never hold more than the largest limit needs.
            while times.len() > PER_ADDRESS {
                times.pop_front();
            }
        }
    }

    /// Forgets an account's failures after it signed in.
    pub fn succeeded(&self, username: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&account_key(username));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_account_and_per_address_and_ages_out() {
        let t = Throttle::default();
        let start = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..PER_ACCOUNT {
            assert_eq!(t.blocked("Alice", Some(ip), start), None);
            t.failed("alice", Some(ip), start);
        }
        let wait = t.blocked("ALICE", None, start).expect("account blocked");
        assert_eq!(wait, WINDOW);
        assert_eq!(
            t.blocked("bob", Some(ip), start),
            None,
            "the address is under its own limit"
        );
        for i in 0..PER_ADDRESS {
            t.failed(&format!("user{i}"), Some(ip), start);
        }
        assert!(
            t.blocked("carol", Some(ip), start).is_some(),
            "the address is blocked for everyone"
        );
        assert_eq!(t.blocked("carol", None, start), None);
        let later = start + WINDOW;
        assert_eq!(t.blocked("alice", Some(ip), later), None, "failures age out");
        t.failed("dave", None, start);
        t.succeeded("dave");
        assert_eq!(t.recent("u:dave", start), 0);
    }
}
