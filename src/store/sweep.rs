//! Housekeeping: expired rows of every kind removed in one transaction.

use super::*;

impl GrantStore {
    /// Deletes everything that expired before `now`; returns how many rows went.
    pub async fn sweep(&self, now: i64) -> Result<u64> {
        self.bounded("sweep", async {
            let statements: [(&'static str, i64); 12] = [
                ("DELETE FROM auth_requests WHERE expires_at <= $1", now),
                ("DELETE FROM sessions WHERE expires_at <= $1", now),
                ("DELETE FROM codes WHERE expires_at <= $1", now - REDEEMED_CODE_KEPT),
                ("DELETE FROM refresh_tokens WHERE expires_at <= $1", now),
                ("DELETE FROM refresh_families WHERE expires_at <= $1", now),
                ("DELETE FROM revocations WHERE expires_at <= $1", now),
                ("DELETE FROM used_once WHERE expires_at <= $1", now),
                // Failed attempts whose window ended (the longest a throttle counts).
                (
                    "DELETE FROM attempts WHERE window_start <= $1",
                    now - ATTEMPT_WINDOW_SECS,
                ),
                ("DELETE FROM session_clients WHERE expires_at <= $1", now),
                // A device polling a few minutes after expiry is still told `expired_token`;
                // after that the row goes (a flood of them must not linger for an hour).
                (
                    "DELETE FROM device_requests WHERE expires_at <= $1",
                    now - DEVICE_REQUEST_KEPT,
                ),
                // Consent is kept for a year unless given again.
                ("DELETE FROM consents WHERE granted_at <= $1", now - 365 * 24 * 3600),
                (
                    "DELETE FROM secret_usage WHERE last_used <= $1",
                    now - SECRET_USAGE_KEPT,
                ),
            ];
            let mut gone = 0;
            let mut tx = self.write_tx().await?;
            for (sql, cutoff) in statements {
                gone += sqlx::query(sql).bind(cutoff).execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            Ok(gone)
        })
        .await
    }
}
