//! Values that may be used once across every replica while they could be replayed (a DPoP
//! proof's `jti`): the first use records it, any later one is told it was used.

use super::*;

/// The id a used value is kept under: its `kind`, and the SHA-256 of the `scope` it is unique
/// in (a key, a client) and the value, so the table holds no `jti` as sent.
pub fn once_id(kind: &str, scope: &str, value: &str) -> String {
    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("{scope}\n{value}").as_bytes());
    format!(
        "{kind}:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

impl GrantStore {
    /// Records `id` as used until `expires_at`; true for the first use only.
    pub async fn use_once(&self, id: &str, expires_at: i64) -> Result<bool> {
        self.bounded("use_once", async {
            let done = self
                .write(
                    sqlx::query("INSERT INTO used_once (id, expires_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                        .bind(id)
                        .bind(expires_at),
                )
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    /// True when `id` was used and is still remembered (a read: nothing is recorded).
    pub async fn was_used(&self, id: &str, now: i64) -> Result<bool> {
        self.bounded("was_used", async {
            let row = sqlx::query("SELECT 1 AS used FROM used_once WHERE id = $1 AND expires_at > $2")
                .bind(id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.is_some())
        })
        .await
    }
}
