//! Revoked access tokens (by `jti`), kept until they would have expired.

use super::*;

impl GrantStore {
    /// Revokes the access token `issued` (idempotent).
    pub async fn revoke(&self, issued: &Issued, now: i64) -> Result<()> {
        self.bounded("revoke", async {
            let mut tx = self.write_tx().await?;
            insert_revocation(&mut tx, issued, now).await?;
            tx.commit().await
        })
        .await
    }

    /// Unexpired revocations recorded at or after `since` (Unix seconds), for the in-memory
    /// deny list of every replica.
    pub async fn revocations_since(&self, since: i64, now: i64) -> Result<Vec<Revocation>> {
        self.bounded("revocations_since", async {
            let rows = sqlx::query(
                "SELECT jti, expires_at, revoked_at FROM revocations WHERE revoked_at >= $1 AND expires_at > $2",
            )
            .bind(since)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| Revocation {
                    jti: r.get("jti"),
                    exp: r.get("expires_at"),
                    revoked_at: r.get("revoked_at"),
                })
                .collect())
        })
        .await
    }
}
