//! Secrets every replica must agree on without handing them to anyone (the key DPoP server
//! nonces are made with): the first replica to ask makes one, every later one reads it.

use super::*;

impl GrantStore {
    /// The 32-byte secret called `name`: made on the first call in any replica, the same
    /// for every replica from then on.
    pub async fn shared_secret(&self, name: &str) -> Result<Vec<u8>> {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut fresh = [0u8; 32];
        aws_lc_rs::rand::fill(&mut fresh)
            .map_err(|_| StoreError::Sql(sqlx::Error::Protocol("no randomness".into())))?;
        self.bounded("shared_secret", async {
            self.write(
                sqlx::query("INSERT INTO shared_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(URL_SAFE_NO_PAD.encode(fresh)),
            )
            .await?;
            let row = sqlx::query("SELECT value FROM shared_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?;
            let value: String = row.try_get("value")?;
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|e| StoreError::Sql(sqlx::Error::Decode(Box::new(e))))
        })
        .await
    }
}
