//! Requests that store a row before anyone has proven much (a device authorization; a sign-in
//! parked while the person signs in and consents): limited per caller's address, per namespace
//! of the client asked for, and in all, each reserved before its write (README, Tenancy, T10, T12), so
//! no caller fills the grant store that every team's sign-ins share, and no team's client (a
//! public one anyone may use) takes the overall share from the others. Kept per replica, in
//! memory: a sliding window of two counters per key, so a flood from many addresses costs a
//! fixed amount of memory per address and the overall limit holds however many there are.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::throttle::address_bucket;

/// The window each limit counts over (a stored request lives ten minutes).
pub const WINDOW: Duration = Duration::from_secs(10 * 60);
/// Addresses tracked at most; past it, stale ones are forgotten, and new ones then count only
/// against the overall limit.
const CAPACITY: usize = 100_000;

/// Requests started within the current window and the one before it.
#[derive(Clone, Copy, Debug)]
struct Counter {
    started: Instant,
    current: u32,
    previous: u32,
}

impl Counter {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            current: 0,
            previous: 0,
        }
    }

    /// Moves the window up to `now`.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed >= 2 * WINDOW {
            *self = Self::new(now);
        } else if elapsed >= WINDOW {
            self.previous = self.current;
            self.current = 0;
            self.started += WINDOW;
        }
    }

    /// Requests in the last window: the current one, and the previous one's share of what
    /// the last window still covers.
    fn estimate(&self, now: Instant) -> f64 {
        let into = now.saturating_duration_since(self.started).as_secs_f64() / WINDOW.as_secs_f64();
        self.current as f64 + self.previous as f64 * (1.0 - into).max(0.0)
    }

    /// Whether one more is allowed under `limit`, and when to try again if not.
    fn admits(&mut self, limit: u32, now: Instant) -> Result<(), Duration> {
        self.roll(now);
        if self.estimate(now) + 1.0 > limit as f64 {
            return Err(WINDOW.saturating_sub(now.saturating_duration_since(self.started)));
        }
        Ok(())
    }
}

/// One kind of stored request's limits.
#[derive(Debug)]
pub struct RowBudget {
    per_address: u32,
    per_namespace: u32,
    total: u32,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    by_address: HashMap<IpAddr, Counter>,
    by_namespace: HashMap<String, Counter>,
    total: Option<Counter>,
}

impl RowBudget {
    /// At most `per_address` from one address, `per_namespace` for one namespace's clients and
    /// `total` from everyone in a [`WINDOW`].
    pub fn new(per_address: u32, per_namespace: u32, total: u32) -> Self {
        Self {
            per_address,
            per_namespace,
            total,
            counts: Mutex::default(),
        }
    }

    /// Reserves one request from `ip` (an IPv6 /64 is one address) for a client of
    /// `namespace`, or says how long until one is allowed. Reserved before the row is written,
    /// under one lock: however many arrive together, at most the limits get through.
    pub fn reserve(&self, ip: Option<IpAddr>, namespace: &str, now: Instant) -> Result<(), Duration> {
        let mut guard = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let Counts {
            by_address,
            by_namespace,
            total,
        } = &mut *guard;
        let total = total.get_or_insert_with(|| Counter::new(now));
        total.admits(self.total, now)?;
        // Namespaces are few (each is a platform's decision): no cap on how many are kept.
        let team = by_namespace
            .entry(namespace.to_string())
            .or_insert_with(|| Counter::new(now));
        team.admits(self.per_namespace, now)?;
        let bucket = ip.map(address_bucket);
        if let Some(bucket) = bucket {
            if by_address.len() >= CAPACITY && !by_address.contains_key(&bucket) {
                by_address.retain(|_, c| now.saturating_duration_since(c.started) < 2 * WINDOW);
            }
            if by_address.len() < CAPACITY || by_address.contains_key(&bucket) {
                let counter = by_address.entry(bucket).or_insert_with(|| Counter::new(now));
                counter.admits(self.per_address, now)?;
                counter.current += 1;
            }
        }
        team.current += 1;
        total.current += 1;
        Ok(())
    }
}

/// Device authorizations (`/device_authorization`): each stores a request for ten minutes.
/// One namespace's clients get at most a fifth of all.
pub fn device_requests() -> RowBudget {
    RowBudget::new(30, 2_000, 10_000)
}

/// Sign-ins parked at `/authorize`: each stores the request while the person signs in.
/// Generous per address (a whole office may share one); one namespace's clients get at most a
/// fifth of all.
pub fn parked_requests() -> RowBudget {
    RowBudget::new(300, 10_000, 50_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_per_address_and_in_all_and_age_out() {
        let budget = RowBudget::new(3, 5, 5);
        let now = Instant::now();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        for _ in 0..3 {
            budget.reserve(Some(a), "shop", now).unwrap();
        }
        let wait = budget.reserve(Some(a), "shop", now).unwrap_err();
        assert_eq!(wait, WINDOW);
        // Another address of the same IPv6 /64 is the same address.
        let v6 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        budget.reserve(v6("2001:db8::1"), "shop", now).unwrap();
        budget.reserve(v6("2001:db8::ffff"), "shop", now).unwrap();
        assert!(
            budget.reserve(v6("2001:db8:0:1::1"), "shop", now).is_err(),
            "five in all"
        );
        // Two windows later none of them counts.
        let later = now + 2 * WINDOW;
        for _ in 0..3 {
            budget.reserve(Some(a), "shop", later).unwrap();
        }
    }

    #[test]
    fn a_flood_from_many_addresses_is_held_by_the_overall_limit() {
        let budget = RowBudget::new(1, 200, 1000);
        let now = Instant::now();
        let flood = |namespace: &str, from: u32| {
            (0..5000u32)
                .filter(|i| {
                    let ip = IpAddr::V4(std::net::Ipv4Addr::from_bits(from + i));
                    budget.reserve(Some(ip), namespace, now).is_ok()
                })
                .count()
        };
        assert_eq!(
            flood("evil", 0x0a00_0000),
            200,
            "one namespace's clients get their share"
        );
        assert_eq!(flood("shop", 0x0b00_0000), 200, "and the next team still gets its own");
    }

    #[test]
    fn parallel_reservations_never_exceed_the_limit() {
        let budget = std::sync::Arc::new(RowBudget::new(7, 1000, 1000));
        let now = Instant::now();
        let ip: IpAddr = "198.51.100.4".parse().unwrap();
        let through: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..64)
                .map(|_| {
                    let b = budget.clone();
                    s.spawn(move || b.reserve(Some(ip), "shop", now).is_ok() as usize)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(through, 7);
    }
}
