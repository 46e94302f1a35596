//! Pending sign-ins: an `/authorize` request parked while a person signs in and consents,
//! found by its id and finished once.

use super::*;

impl GrantStore {
    /// Stores a pending `/authorize` request under `id` until `expires_at`.
    pub async fn put_auth_request(&self, id: &str, pending: &PendingRequest, expires_at: i64) -> Result<()> {
        self.bounded("put_auth_request", async {
            self.write(
                sqlx::query(
                    "INSERT INTO auth_requests (id, browser, csrf, request, expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(&pending.browser)
                .bind(&pending.csrf)
                .bind(&pending.request)
                .bind(expires_at),
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// The pending request `id`, unless it expired or was finished.
    pub async fn auth_request(&self, id: &str, now: i64) -> Result<Option<PendingRequest>> {
        self.bounded("auth_request", async {
            let row = sqlx::query("SELECT browser, csrf, request FROM auth_requests WHERE id = $1 AND expires_at > $2")
                .bind(id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(|r| PendingRequest {
                browser: r.get("browser"),
                csrf: r.get("csrf"),
                request: r.get("request"),
            }))
        })
        .await
    }

    /// Ends the pending request `id`; true only for the one caller that ended it.
    pub async fn finish_auth_request(&self, id: &str) -> Result<bool> {
        self.bounded("finish_auth_request", async {
            let done = self
                .write(sqlx::query("DELETE FROM auth_requests WHERE id = $1").bind(id))
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
}
