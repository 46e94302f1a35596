//! What a person sees of themselves on their account page: their live sessions and the apps
//! they allowed (remembered consent, live refresh families), and taking one app back.

use super::*;

/// One live session of a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSession {
    /// Its stored id (the digest of its cookie).
    pub id: String,
    pub session: Session,
    pub expires_at: i64,
}

/// One app a person allowed: the OAuthClient object (its uid), what they allowed and when,
/// and how many refresh families it holds for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedApp {
    pub client_uid: String,
    /// The client id it had when it last got a grant (for apps with a family only).
    pub client_id: Option<String>,
    /// Scopes remembered as allowed (None: no consent remembered, e.g. a first-party app).
    pub scopes: Option<Vec<String>>,
    pub granted_at: Option<i64>,
    pub live_families: i64,
}

impl GrantStore {
    /// `subject`'s live sessions, newest first.
    pub async fn sessions_of(&self, subject: &str, now: i64) -> Result<Vec<LiveSession>> {
        self.bounded("sessions_of", async {
            let rows = sqlx::query(
                "SELECT id, subject, auth_time, credential, amr, expires_at FROM sessions \
                 WHERE subject = $1 AND expires_at > $2 ORDER BY auth_time DESC, id",
            )
            .bind(subject)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| LiveSession {
                    id: r.get("id"),
                    session: super::people::session_of(r),
                    expires_at: r.get("expires_at"),
                })
                .collect())
        })
        .await
    }

    /// The apps `subject` allowed: remembered consents and clients holding live refresh
    /// families for them, one entry per client object.
    pub async fn apps_of(&self, subject: &str, now: i64) -> Result<Vec<AllowedApp>> {
        self.bounded("apps_of", async {
            let consents = sqlx::query("SELECT client_uid, scopes, granted_at FROM consents WHERE subject = $1")
                .bind(subject)
                .fetch_all(&self.pool)
                .await?;
            let families = sqlx::query(
                "SELECT client_uid, MAX(client_id) AS client_id, COUNT(*) AS n FROM refresh_families \
                 WHERE subject = $1 AND revoked_at IS NULL AND expires_at > $2 AND client_uid <> '' GROUP BY client_uid",
            )
            .bind(subject)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
            let mut apps: Vec<AllowedApp> = consents
                .iter()
                .map(|r| AllowedApp {
                    client_uid: r.get("client_uid"),
                    client_id: None,
                    scopes: Some(r.get::<String, _>("scopes").split_whitespace().map(str::to_owned).collect()),
                    granted_at: Some(r.get("granted_at")),
                    live_families: 0,
                })
                .collect();
            for r in &families {
                let uid: String = r.get("client_uid");
                let (client_id, n): (String, i64) = (r.get("client_id"), r.get("n"));
                match apps.iter_mut().find(|a| a.client_uid == uid) {
                    Some(app) => {
                        app.client_id = Some(client_id);
                        app.live_families = n;
                    }
                    None => apps.push(AllowedApp {
                        client_uid: uid,
                        client_id: Some(client_id),
                        scopes: None,
                        granted_at: None,
                        live_families: n,
                    }),
                }
            }
            apps.sort_by(|a, b| a.client_uid.cmp(&b.client_uid));
            Ok(apps)
        })
        .await
    }

    /// Takes an app back from `subject`, in one transaction: its refresh families for them
    /// end with the access tokens they issued (returned, for the revocation list), and the
    /// consent is forgotten, so the app must ask again.
    pub async fn revoke_app(&self, subject: &str, client_uid: &str, now: i64) -> Result<Vec<Issued>> {
        self.bounded("revoke_app", async {
            let mut tx = self.write_tx().await?;
            let families = sqlx::query(
                "UPDATE refresh_families SET revoked_at = $1 \
                 WHERE subject = $2 AND client_uid = $3 AND revoked_at IS NULL RETURNING id",
            )
            .bind(now)
            .bind(subject)
            .bind(client_uid)
            .fetch_all(&mut *tx)
            .await?;
            let mut revoked = Vec::new();
            for family in families {
                revoked.extend(family_access_tokens(&mut tx, &family.get::<String, _>("id")).await?);
            }
            for r in &revoked {
                insert_revocation(&mut tx, r, now).await?;
            }
            sqlx::query("DELETE FROM consents WHERE subject = $1 AND client_uid = $2")
                .bind(subject)
                .bind(client_uid)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(revoked)
        })
        .await
    }
}
