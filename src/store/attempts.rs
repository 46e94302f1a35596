//! Failed attempts counted across replicas: one row per key (an account as typed, a person's
//! second-factor codes, a client address) with the start of its window and how many attempts
//! it holds. Counting one is a single conditional statement (an increment below the limit in a
//! live window, or a fresh window over an expired one), so attempts raced across replicas never
//! pass the limit together.

use super::*;

/// The longest window a throttle counts attempts in (the sweep removes rows past it).
pub const ATTEMPT_WINDOW_SECS: i64 = 15 * 60;

impl GrantStore {
    /// Counts an attempt for `key` in a window of `window` seconds, unless it holds `limit`
    /// already: Ok(None) when counted, Ok(Some(seconds)) until its window ends when refused.
    pub async fn count_attempt(&self, key: &str, limit: i64, window: i64, now: i64) -> Result<Option<i64>> {
        self.bounded("count_attempt", async {
            // Two tries at most: a fresh window raced by another replica is then a live one.
            for _ in 0..2 {
                let counted = self
                    .write(
                        sqlx::query(
                            "UPDATE attempts SET count = count + 1 \
                             WHERE key = $1 AND window_start > $2 AND count < $3",
                        )
                        .bind(key)
                        .bind(now - window)
                        .bind(limit),
                    )
                    .await?;
                if counted.rows_affected() == 1 {
                    return Ok(None);
                }
                let fresh = self
                    .write(
                        sqlx::query(
                            "INSERT INTO attempts (key, window_start, count) VALUES ($1, $2, 1) \
                             ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start, count = 1 \
                             WHERE attempts.window_start <= $3",
                        )
                        .bind(key)
                        .bind(now)
                        .bind(now - window),
                    )
                    .await?;
                if fresh.rows_affected() == 1 {
                    return Ok(None);
                }
                // A live window: at the limit, or just opened by another replica (try again).
                let row = sqlx::query("SELECT window_start, count FROM attempts WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                if let Some(row) = row {
                    let (start, count): (i64, i64) = (row.get("window_start"), row.get("count"));
                    if count >= limit && start > now - window {
                        return Ok(Some((start + window - now).max(1)));
                    }
                }
            }
            Ok(Some(1))
        })
        .await
    }

    /// Takes one counted attempt of `key` back (a right password: the address's reservation).
    pub async fn uncount_attempt(&self, key: &str) -> Result<()> {
        self.bounded("uncount_attempt", async {
            self.write(sqlx::query("UPDATE attempts SET count = count - 1 WHERE key = $1 AND count > 0").bind(key))
                .await?;
            Ok(())
        })
        .await
    }

    /// Forgets every attempt of `key` (a right password: the account's failures).
    pub async fn forget_attempts(&self, key: &str) -> Result<()> {
        self.bounded("forget_attempts", async {
            self.write(sqlx::query("DELETE FROM attempts WHERE key = $1").bind(key))
                .await?;
            Ok(())
        })
        .await
    }
}
