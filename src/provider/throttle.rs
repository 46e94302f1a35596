//! Failed sign-in attempts, limited per account and per client address: past the limit,
//! further attempts are refused without checking the password until old failures age out.
//! An attempt is reserved (and counted as a failure) before its password is checked, so
//! parallel guesses count like sequential ones; a right password withdraws it.
//! Counted in the grant store, which every replica shares, so the limits hold for the whole
//! provider and an attacker spreading attempts over replicas gains nothing; a map in memory
//! per replica refuses what this replica already knows to be over the limit without asking
//! the store, and keeps counting when the store does not answer.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures remembered for this long.
pub const WINDOW: Duration = Duration::from_secs(crate::store::ATTEMPT_WINDOW_SECS as u64);
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
    /// Where every replica's attempts are counted (none: this replica's alone).
    store: Option<crate::store::GrantStore>,
}

/// The key of an account: its name as typed, lower-cased and cut to the longest a username may
/// be (128): whatever a caller types, a key costs a bounded amount of memory.
fn account_key(username: &str) -> String {
    let name: String = username.chars().take(128).collect();
    format!("u:{}", name.to_lowercase())
}

fn address_key(ip: IpAddr) -> String {
    format!("a:{}", address_bucket(ip))
}

/// The address a per-address limit counts: an IPv4 address, or the /64 of an IPv6 one (one
/// subscriber, one LAN: a host holds a whole /64 and picks any address in it at will). An
/// IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
pub fn address_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// An attempt that was let through: counted as a failure until [`Throttle::succeeded`].
#[derive(Debug)]
pub struct Attempt {
    account: Option<String>,
    address: Option<String>,
    at: Instant,
    /// The keys the store counted it under.
    stored: Vec<String>,
}

impl Throttle {
    /// A throttle that counts every replica's attempts in `store`.
    pub fn shared(store: crate::store::GrantStore) -> Self {
        Self {
            failures: Mutex::default(),
            store: Some(store),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long until `key` may try again, if it is at `limit`.
    fn wait(map: &mut HashMap<String, VecDeque<Instant>>, key: &str, limit: usize, now: Instant) -> Option<Duration> {
        let times = map.get_mut(key)?;
        while times.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            times.pop_front();
        }
        let oldest = *times.front()?;
        (times.len() >= limit).then(|| WINDOW.saturating_sub(now.duration_since(oldest)))
    }

    /// Reserves an attempt for this account and address and counts it as a failure at once,
    /// under one lock: however many arrive together, at most the limit get through. Refused
    /// with the time until the next attempt is allowed.
    pub async fn reserve(&self, username: &str, ip: Option<IpAddr>, now: Instant) -> Result<Attempt, Duration> {
        self.reserve_keys(Some(account_key(username)), ip, now).await
    }

    /// Reserves a second-factor code attempt for this person and address: its own key space
    /// (`f:`), which no typed username can reach, so nobody locks a person's codes by typing
    /// a look-alike username at /login, and a right password does not clear wrong codes.
    pub async fn reserve_second_factor(
        &self,
        subject: &str,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let subject: String = subject.chars().take(128).collect();
        self.reserve_keys(Some(format!("f:{subject}")), ip, now).await
    }

    /// Reserves an attempt counted against the address alone (entering a device's user code:
    /// no account is guessed at, and one guesser must not lock everyone out).
    pub async fn reserve_for_address(&self, ip: Option<IpAddr>, now: Instant) -> Result<Attempt, Duration> {
        self.reserve_keys(None, ip, now).await
    }

    /// Reserves in this replica's map, then in the store (every replica's count): refused by
    /// either, the attempt counts nowhere.
    async fn reserve_keys(
        &self,
        account: Option<String>,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let mut attempt = self.reserve_here(account, ip, now)?;
        let Some(store) = &self.store else {
            return Ok(attempt);
        };
        let unix = jiff::Timestamp::now().as_second();
        // The address first: past its limit nothing more is written, so a caller naming a new
        // account at every try adds no row (T9: at most PER_ADDRESS accounts per address and
        // window reach the table).
        let keys: Vec<(String, usize)> = attempt
            .address
            .iter()
            .map(|k| (k.clone(), PER_ADDRESS))
            .chain(attempt.account.iter().map(|k| (k.clone(), PER_ACCOUNT)))
            .collect();
        for (key, limit) in keys {
            match store
                .count_attempt(&key, limit as i64, WINDOW.as_secs() as i64, unix)
                .await
            {
                Ok(None) => attempt.stored.push(key),
                Ok(Some(wait)) => {
                    // Over the limit for the provider as a whole: counted nowhere.
                    for counted in &attempt.stored {
                        let _ = store.uncount_attempt(counted).await;
                    }
                    self.withdraw_here(&attempt);
                    return Err(Duration::from_secs(wait as u64));
                }
                // The store does not answer: this replica's own count stands.
                Err(e) => tracing::warn!(error = %e, "failed attempts not counted in the grant store"),
            }
        }
        Ok(attempt)
    }

    fn reserve_here(&self, account: Option<String>, ip: Option<IpAddr>, now: Instant) -> Result<Attempt, Duration> {
        let address = ip.map(address_key);
        let mut map = self.map();
        let waits = [
            account
                .as_deref()
                .and_then(|a| Self::wait(&mut map, a, PER_ACCOUNT, now)),
            address
                .as_deref()
                .and_then(|a| Self::wait(&mut map, a, PER_ADDRESS, now)),
        ];
        if let Some(wait) = waits.into_iter().flatten().max() {
            return Err(wait);
        }
        if map.len() >= CAPACITY {
            map.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        // Still full (a flood of fresh keys): the key whose last failure is oldest goes, so the
        // map never holds more than CAPACITY keys of at most PER_ADDRESS times each.
        while map.len() >= CAPACITY {
            let oldest = map
                .iter()
                .min_by_key(|(_, times)| times.back().copied())
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => map.remove(&key),
                None => break,
            };
        }
        for key in account.iter().chain(address.as_ref()) {
            let times = map.entry(key.clone()).or_default();
            times.push_back(now);
            // Never hold more than the largest limit needs.
            while times.len() > PER_ADDRESS {
                times.pop_front();
            }
        }
        Ok(Attempt {
            account,
            address,
            at: now,
            stored: Vec::new(),
        })
    }

    /// Takes this replica's count of `attempt` back.
    fn withdraw_here(&self, attempt: &Attempt) {
        let mut map = self.map();
        for key in attempt.account.iter().chain(attempt.address.as_ref()) {
            if let Some(times) = map.get_mut(key)
                && let Some(i) = times.iter().rposition(|t| *t == attempt.at)
            {
                times.remove(i);
            }
        }
    }

    /// The attempt's password was right: the account's failures are forgotten, and the
    /// address gets its reservation back (here and in the store).
    pub async fn succeeded(&self, attempt: Attempt) {
        {
            let mut map = self.map();
            if let Some(account) = &attempt.account {
                map.remove(account);
            }
            if let Some(times) = attempt.address.as_ref().and_then(|a| map.get_mut(a))
                && let Some(i) = times.iter().rposition(|t| *t == attempt.at)
            {
                times.remove(i);
            }
        }
        let Some(store) = &self.store else { return };
        for key in &attempt.stored {
            let done = if Some(key) == attempt.account.as_ref() {
                store.forget_attempts(key).await
            } else {
                store.uncount_attempt(key).await
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "a right password's attempt stays counted in the grant store");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_per_account_and_per_address_and_ages_out() {
        let t = Throttle::default();
        let start = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..PER_ACCOUNT {
            t.reserve("Alice", Some(ip), start).await.expect("under the limit");
        }
        let wait = t.reserve("ALICE", None, start).await.expect_err("account blocked");
        assert_eq!(wait, WINDOW);
        t.reserve("bob", Some(ip), start)
            .await
            .expect("the address is under its own limit");
        for i in 0..PER_ADDRESS {
            let _ = t.reserve(&format!("user{i}"), Some(ip), start).await;
        }
        assert!(
            t.reserve("carol", Some(ip), start).await.is_err(),
            "the address is blocked for everyone"
        );
        t.reserve("carol", None, start).await.expect("carol's account is fine");
        let later = start + WINDOW;
        t.reserve("alice", Some(ip), later).await.expect("failures age out");
    }

    #[tokio::test]
    async fn a_right_password_gives_the_reservation_back() {
        let t = Throttle::default();
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..PER_ACCOUNT - 1 {
            t.reserve("dave", Some(ip), now).await.unwrap();
        }
        let good = t.reserve("dave", Some(ip), now).await.unwrap();
        t.succeeded(good).await;
        for _ in 0..PER_ACCOUNT {
            t.reserve("dave", Some(ip), now)
                .await
                .expect("the account starts afresh");
        }
        assert_eq!(
            t.map().get("a:10.0.0.2").map(VecDeque::len),
            Some(2 * PER_ACCOUNT - 1),
            "only the successful attempt left the address's count"
        );
    }

    /// T12: a username of any length costs the same; failures for names that differ only past
    /// 128 characters count together.
    #[tokio::test]
    async fn a_long_username_costs_a_bounded_key() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..PER_ACCOUNT {
            t.reserve(&format!("{}{i}", "x".repeat(200)), None, now).await.unwrap();
        }
        assert!(t.reserve(&"x".repeat(300), None, now).await.is_err());
        assert!(t.map().keys().all(|k| k.len() <= 130));
    }

    /// T12: one host holds a whole IPv6 /64; every address in it counts as one.
    #[tokio::test]
    async fn an_ipv6_64_is_one_address() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..PER_ADDRESS {
            let ip: IpAddr = format!("2001:db8:1:2:{i:x}::1").parse().unwrap();
            t.reserve(&format!("user{i}"), Some(ip), now).await.unwrap();
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        assert!(t.reserve("someone", Some(same_64), now).await.is_err());
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(t.reserve("someone", Some(next_64), now).await.is_ok());
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_bucket(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    /// T9: one address naming a new account at every try adds rows to the store's table only
    /// while it is under its own limit (here the replica's own map is bypassed, as another
    /// replica's would be: each try goes through a fresh throttle on the same store).
    #[tokio::test]
    async fn an_address_past_its_limit_adds_no_rows_for_new_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::GrantStore::open_file(dir.path()).await.unwrap();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let mut refused = 0;
        for i in 0..(PER_ADDRESS + 30) {
            let t = Throttle::shared(store.clone());
            if t.reserve(&format!("sprayed{i}"), Some(ip), Instant::now())
                .await
                .is_err()
            {
                refused += 1;
            }
        }
        assert_eq!(refused, 30, "the address's limit holds across throttles");
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&crate::store::GrantStore::file_url(dir.path()).unwrap())
            .await
            .unwrap();
        let rows: i64 = sqlx::Row::get(
            &sqlx::query("SELECT COUNT(*) AS n FROM attempts")
                .fetch_one(&pool)
                .await
                .unwrap(),
            "n",
        );
        assert_eq!(
            rows,
            PER_ADDRESS as i64 + 1,
            "one row per account tried under the limit, and the address's"
        );
    }

    /// T8: many guesses at once for one account get exactly the limit through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_reservations_never_exceed_the_limit() {
        let t = std::sync::Arc::new(Throttle::default());
        let now = Instant::now();
        let tries = (0..64).map(|_| {
            let t = t.clone();
            tokio::spawn(async move { t.reserve("erin", None, now).await.is_ok() as usize })
        });
        let through: usize = futures::future::join_all(tries)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .sum();
        assert_eq!(through, PER_ACCOUNT);
    }
}
