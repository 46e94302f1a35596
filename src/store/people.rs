//! Sessions, the people who hold grants, what kauth remembers of them (their claims) and
//! the consents they gave.

use super::*;

impl GrantStore {
    /// Starts a session (`id` is the cookie's digest).
    pub async fn create_session(&self, id: &str, session: &Session, expires_at: i64) -> Result<()> {
        self.bounded("create_session", async {
            self.write(
                sqlx::query(
                    "INSERT INTO sessions (id, subject, auth_time, credential, amr, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id)
                .bind(&session.subject)
                .bind(session.auth_time)
                .bind(&session.credential)
                .bind(session.amr.join(" "))
                .bind(expires_at),
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// The live session `id`.
    pub async fn session(&self, id: &str, now: i64) -> Result<Option<Session>> {
        self.bounded("session", async {
            let row = sqlx::query(
                "SELECT subject, auth_time, credential, amr FROM sessions WHERE id = $1 AND expires_at > $2",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.as_ref().map(session_of))
        })
        .await
    }

    /// Records that the session `id` of `session.subject` proved more (a step-up): its `amr`
    /// and `auth_time` become `session`'s; its id, and the apps it signed in to, stay.
    pub async fn upgrade_session(&self, id: &str, session: &Session) -> Result<bool> {
        self.bounded("upgrade_session", async {
            let done = self
                .write(
                    sqlx::query("UPDATE sessions SET auth_time = $1, amr = $2 WHERE id = $3 AND subject = $4")
                        .bind(session.auth_time)
                        .bind(session.amr.join(" "))
                        .bind(id)
                        .bind(&session.subject),
                )
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    /// Ends the session `id`.
    pub async fn end_session(&self, id: &str) -> Result<()> {
        self.bounded("end_session", async {
            self.write(sqlx::query("DELETE FROM sessions WHERE id = $1").bind(id))
                .await?;
            Ok(())
        })
        .await
    }

    /// The people who hold something live: each (subject, credential) of a session, and each
    /// subject of a live refresh family (credential `None`).
    pub async fn people_holding_grants(&self, now: i64) -> Result<Vec<(String, Option<String>)>> {
        self.bounded("people_holding_grants", async {
            let sessions = sqlx::query("SELECT DISTINCT subject, credential FROM sessions WHERE expires_at > $1")
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
            let families = sqlx::query(
                "SELECT DISTINCT subject FROM refresh_families WHERE revoked_at IS NULL AND expires_at > $1 AND subject <> ''",
            )
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
            Ok(sessions
                .iter()
                .map(|r| (r.get("subject"), Some(r.get("credential"))))
                .chain(families.iter().map(|r| (r.get("subject"), None)))
                .collect())
        })
        .await
    }

    /// The ids of `subject`'s live sessions started with `credential`.
    pub async fn sessions_with(&self, subject: &str, credential: &str) -> Result<Vec<String>> {
        self.bounded("sessions_with", async {
            let rows = sqlx::query("SELECT id FROM sessions WHERE subject = $1 AND credential = $2")
                .bind(subject)
                .bind(credential)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.iter().map(|r| r.get::<String, _>("id")).collect())
        })
        .await
    }

    /// Ends `subject`'s sessions started with `credential` (every session when None).
    pub async fn end_sessions_of(&self, subject: &str, credential: Option<&str>) -> Result<u64> {
        self.bounded("end_sessions_of", async {
            let done = match credential {
                Some(c) => {
                    self.write(
                        sqlx::query("DELETE FROM sessions WHERE subject = $1 AND credential = $2")
                            .bind(subject)
                            .bind(c),
                    )
                    .await?
                }
                None => {
                    self.write(sqlx::query("DELETE FROM sessions WHERE subject = $1").bind(subject))
                        .await?
                }
            };
            Ok(done.rows_affected())
        })
        .await
    }

    /// Revokes every live refresh family of `subject` with the access tokens they issued
    /// (a person who left); returns those access tokens.
    pub async fn revoke_families_of_person(&self, subject: &str, now: i64) -> Result<Vec<Issued>> {
        self.bounded(
            "revoke_families_of_person",
            self.revoke_families_held_by(FamilyHolder::Person, subject, now),
        )
        .await
    }

    /// Revokes, in one transaction, every live refresh family held by `holder` = `value`, and
    /// the access tokens those families issued; returns the access tokens.
    pub(super) async fn revoke_families_held_by(
        &self,
        holder: FamilyHolder,
        value: &str,
        now: i64,
    ) -> Result<Vec<Issued>> {
        let sql = match holder {
            FamilyHolder::Person => {
                "UPDATE refresh_families SET revoked_at = $1 WHERE subject = $2 AND revoked_at IS NULL RETURNING id"
            }
            FamilyHolder::ClientObject => {
                "UPDATE refresh_families SET revoked_at = $1 WHERE client_uid = $2 AND revoked_at IS NULL RETURNING id"
            }
        };
        let mut tx = self.write_tx().await?;
        let families = sqlx::query(sql).bind(now).bind(value).fetch_all(&mut *tx).await?;
        let mut revoked = Vec::new();
        for family in families {
            revoked.extend(family_access_tokens(&mut tx, &family.get::<String, _>("id")).await?);
        }
        for r in &revoked {
            insert_revocation(&mut tx, r, now).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    /// Records a person's current claims (a JSON object).
    pub async fn save_subject(&self, subject: &str, claims: &serde_json::Value, now: i64) -> Result<()> {
        self.bounded("save_subject", async {
            self.write(
                sqlx::query(
                    "INSERT INTO subjects (subject, claims, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (subject) DO UPDATE SET claims = excluded.claims, updated_at = excluded.updated_at",
                )
                .bind(subject)
                .bind(claims.to_string())
                .bind(now),
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// A person's claims as last recorded.
    pub async fn subject(&self, subject: &str) -> Result<Option<serde_json::Value>> {
        self.bounded("subject", async {
            let row = sqlx::query("SELECT claims FROM subjects WHERE subject = $1")
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?;
            Ok(match row {
                Some(r) => Some(serde_json::from_str(&r.get::<String, _>("claims"))?),
                None => None,
            })
        })
        .await
    }

    /// The scopes `subject` allowed the client object `client_uid` before; None when the
    /// person never approved it at all.
    pub async fn consent(&self, subject: &str, client_uid: &str) -> Result<Option<Vec<String>>> {
        self.bounded("consent", async {
            let row = sqlx::query("SELECT scopes FROM consents WHERE subject = $1 AND client_uid = $2")
                .bind(subject)
                .bind(client_uid)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(|r| {
                r.get::<String, _>("scopes")
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            }))
        })
        .await
    }

    /// Remembers that `subject` allowed the client object `client_uid` these scopes
    /// (replacing what it allowed).
    pub async fn remember_consent(&self, subject: &str, client_uid: &str, scopes: &[String], now: i64) -> Result<()> {
        self.bounded("remember_consent", async {
            self.write(sqlx::query(
                "INSERT INTO consents (subject, client_uid, scopes, granted_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (subject, client_uid) DO UPDATE SET scopes = excluded.scopes, granted_at = excluded.granted_at",
            )
            .bind(subject)
            .bind(client_uid)
            .bind(scopes.join(" "))
            .bind(now)
            )
            .await?;
            Ok(())
        })
        .await
    }
}

/// A session from its row (`subject`, `auth_time`, `credential`, `amr`).
pub(super) fn session_of(r: &AnyRow) -> Session {
    Session {
        subject: r.get("subject"),
        auth_time: r.get("auth_time"),
        credential: r.get("credential"),
        amr: r
            .get::<String, _>("amr")
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    }
}
