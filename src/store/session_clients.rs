//! Which clients each session signed in to (OIDC Back-Channel Logout 1.0): recorded with every
//! code issued, read and forgotten when the session ends.

use super::*;

/// A client a session signed in to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionClient {
    pub client_id: String,
    /// The OAuthClient object it was: a re-created client is not told of an old session.
    pub client_uid: String,
    pub subject: String,
}

impl GrantStore {
    /// Records that session `sid` signed `subject` in to the client, until `expires_at`.
    pub async fn signed_in_to(&self, sid: &str, client: &SessionClient, expires_at: i64) -> Result<()> {
        self.bounded("signed_in_to", async {
            self.write(
                sqlx::query(
                    "INSERT INTO session_clients (sid, client_id, client_uid, subject, expires_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (sid, client_uid) DO UPDATE SET expires_at = excluded.expires_at",
                )
                .bind(sid)
                .bind(&client.client_id)
                .bind(&client.client_uid)
                .bind(&client.subject)
                .bind(expires_at),
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// The clients every session of `subject` signed in to, with the session's `sid`,
    /// forgotten as they are read.
    pub async fn take_clients_of_subject(&self, subject: &str) -> Result<Vec<(String, SessionClient)>> {
        self.bounded("take_clients_of_subject", async {
            let rows = self
                .write_returning_all(
                    sqlx::query(
                        "DELETE FROM session_clients WHERE subject = $1 RETURNING sid, client_id, client_uid, subject",
                    )
                    .bind(subject),
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    (
                        r.get("sid"),
                        SessionClient {
                            client_id: r.get("client_id"),
                            client_uid: r.get("client_uid"),
                            subject: r.get("subject"),
                        },
                    )
                })
                .collect())
        })
        .await
    }

    /// The clients session `sid` signed in to, forgotten as they are read: each is told once.
    pub async fn take_session_clients(&self, sid: &str) -> Result<Vec<SessionClient>> {
        self.bounded("take_session_clients", async {
            let rows = self
                .write_returning_all(
                    sqlx::query("DELETE FROM session_clients WHERE sid = $1 RETURNING client_id, client_uid, subject")
                        .bind(sid),
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| SessionClient {
                    client_id: r.get("client_id"),
                    client_uid: r.get("client_uid"),
                    subject: r.get("subject"),
                })
                .collect())
        })
        .await
    }
}
