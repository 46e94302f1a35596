//! When each client secret was last used, reported by every replica and read by the controller.

use super::*;

impl GrantStore {
    /// Merges a replica's report of secret uses (digest name, unix seconds): each record keeps
    /// the latest use any replica reported.
    pub async fn record_secret_uses(&self, uses: &[(String, i64)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        self.bounded("record_secret_uses", async {
            let mut tx = self.write_tx().await?;
            for (sha256, last_used) in uses {
                sqlx::query(
                    "INSERT INTO secret_usage (secret_sha256, last_used) VALUES ($1, $2) \
                     ON CONFLICT (secret_sha256) DO UPDATE SET last_used = excluded.last_used \
                     WHERE secret_usage.last_used < excluded.last_used",
                )
                .bind(sha256)
                .bind(last_used)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// When each of the named secrets was last used (those never used are absent).
    pub async fn secret_last_used(&self, names: &[&str]) -> Result<HashMap<String, i64>> {
        self.bounded("secret_last_used", async {
            let mut found = HashMap::new();
            for name in names {
                let row = sqlx::query("SELECT last_used FROM secret_usage WHERE secret_sha256 = $1")
                    .bind(*name)
                    .fetch_optional(&self.pool)
                    .await?;
                if let Some(row) = row {
                    found.insert(name.to_string(), row.get::<i64, _>("last_used"));
                }
            }
            Ok(found)
        })
        .await
    }
}
