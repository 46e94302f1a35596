//! Device authorization requests (RFC 8628): started by a device, found by the code a person
//! types, approved or denied once, and polled by the device at the pace it is told.

use sqlx::Row;

use super::{Grant, GrantStore, Result};

/// How much slower a device that polled too soon must poll from then on (RFC 8628 §3.5).
pub const SLOW_DOWN_SECS: i64 = 5;

/// A pending request, as the verification page finds it by its user code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRequest {
    /// The digest of the device code.
    pub id: String,
    pub client_id: String,
    pub client_uid: String,
    /// What the device asked for (JSON, the provider's to read).
    pub request: String,
}

/// What a device's poll finds.
#[derive(Debug, PartialEq, Eq)]
pub enum DevicePoll {
    /// Nobody has answered yet.
    Pending,
    /// Polled before the interval was up: the interval is now longer.
    SlowDown,
    /// Approved: the code under the same id is ready to be redeemed.
    Approved,
    /// The person said no.
    Denied,
    /// The request expired unanswered.
    Expired,
    /// No such request for this client.
    Unknown,
}

impl GrantStore {
    /// Stores a new request; false when `user_code` is taken (the caller draws another). It
    /// counts as never polled: the device's first poll is never too soon.
    pub async fn start_device_request(
        &self,
        request: &DeviceRequest,
        user_code: &str,
        interval: i64,
        expires_at: i64,
    ) -> Result<bool> {
        self.bounded("start_device_request", async {
            let inserted = self
                .write(
                    sqlx::query(
                        "INSERT INTO device_requests (id, user_code, client_id, client_uid, request_data, status, \
                         poll_interval, polled_at, expires_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, 0, $7)",
                    )
                    .bind(&request.id)
                    .bind(user_code)
                    .bind(&request.client_id)
                    .bind(&request.client_uid)
                    .bind(&request.request)
                    .bind(interval)
                    .bind(expires_at),
                )
                .await;
            match inserted {
                Ok(_) => Ok(true),
                Err(super::StoreError::Sql(e)) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// The pending, live request with this user code.
    pub async fn device_request(&self, user_code: &str, now: i64) -> Result<Option<DeviceRequest>> {
        self.bounded("device_request", async {
            let row = sqlx::query(
                "SELECT id, client_id, client_uid, request_data FROM device_requests \
                 WHERE user_code = $1 AND status = 'pending' AND expires_at > $2",
            )
            .bind(user_code)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|r| DeviceRequest {
                id: r.get("id"),
                client_id: r.get("client_id"),
                client_uid: r.get("client_uid"),
                request: r.get("request_data"),
            }))
        })
        .await
    }

    /// Answers the pending request `id` once: with `grant`, a code for it is stored under the
    /// same id (redeemable until the request expires); without, it is denied. False when it
    /// was answered before or has expired.
    pub async fn answer_device_request(&self, id: &str, grant: Option<&Grant>, now: i64) -> Result<bool> {
        self.bounded("answer_device_request", async {
            let mut tx = self.write_tx().await?;
            let status = if grant.is_some() { "approved" } else { "denied" };
            let answered = sqlx::query(
                "UPDATE device_requests SET status = $1 WHERE id = $2 AND status = 'pending' AND expires_at > $3 \
                 RETURNING expires_at",
            )
            .bind(status)
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = answered else {
                return Ok(false);
            };
            if let Some(grant) = grant {
                sqlx::query("INSERT INTO codes (id, client_id, grant_data, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(id)
                    .bind(&grant.client_id)
                    .bind(serde_json::to_string(grant)?)
                    .bind(row.get::<i64, _>("expires_at"))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// A poll of request `id` by the client object `client_id`/`client_uid`, at `now`.
    pub async fn poll_device_request(
        &self,
        id: &str,
        client_id: &str,
        client_uid: &str,
        now: i64,
    ) -> Result<DevicePoll> {
        self.bounded("poll_device_request", async {
            let mut tx = self.write_tx().await?;
            // One statement: two polls at once are taken in turn, and the second is too soon.
            let row = sqlx::query(
                "UPDATE device_requests SET \
                 slowed_at = CASE WHEN polled_at + poll_interval > $1 AND status = 'pending' THEN $1 ELSE slowed_at END, \
                 poll_interval = CASE WHEN polled_at + poll_interval > $1 AND status = 'pending' \
                   THEN poll_interval + $2 ELSE poll_interval END, \
                 polled_at = $1 \
                 WHERE id = $3 AND client_id = $4 AND client_uid = $5 \
                 RETURNING status, expires_at, slowed_at",
            )
            .bind(now)
            .bind(SLOW_DOWN_SECS)
            .bind(id)
            .bind(client_id)
            .bind(client_uid)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(DevicePoll::Unknown);
            };
            let polled = match row.get::<String, _>("status").as_str() {
                _ if row.get::<i64, _>("expires_at") <= now => DevicePoll::Expired,
                "approved" => DevicePoll::Approved,
                "denied" => DevicePoll::Denied,
                _ if row.get::<Option<i64>, _>("slowed_at") == Some(now) => DevicePoll::SlowDown,
                _ => DevicePoll::Pending,
            };
            tx.commit().await?;
            Ok(polled)
        })
        .await
    }
}
