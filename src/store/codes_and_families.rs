//! Authorization codes (redeemed once; a replay revokes what the code issued) and refresh-token
//! families (rotated on use; reuse of a rotated token revokes the family).

use super::*;

impl GrantStore {
    /// Stores a new code (`id` is its digest).
    pub async fn insert_code(&self, id: &str, grant: &Grant, expires_at: i64) -> Result<()> {
        self.bounded("insert_code", async {
            self.write(
                sqlx::query("INSERT INTO codes (id, client_id, grant_data, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(id)
                    .bind(&grant.client_id)
                    .bind(serde_json::to_string(grant)?)
                    .bind(expires_at),
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// Redeems the code `id` once. `issue` is the access token the caller will issue, recorded
    /// in the same statement so that a replay, however soon, revokes it.
    pub async fn redeem_code(&self, id: &str, now: i64, issue: &Issued) -> Result<Redemption> {
        self.bounded("redeem_code", async {
            let first = sqlx::query(
                "UPDATE codes SET redeemed_at = $1, access_jti = $2, access_exp = $3 \
                 WHERE id = $4 AND redeemed_at IS NULL AND expires_at > $1 RETURNING grant_data",
            )
            .bind(now)
            .bind(&issue.jti)
            .bind(issue.exp)
            .bind(id);
            if let Some(row) = self.write_returning(first).await? {
                return Ok(Redemption::Granted(serde_json::from_str(
                    &row.get::<String, _>("grant_data"),
                )?));
            }
            // Not redeemable: a replay if it was redeemed before. Marking it takes the row lock, so
            // a family being started for it is either visible here or refused after.
            let mut tx = self.write_tx().await?;
            let replay = sqlx::query(
                "UPDATE codes SET family = COALESCE(family, '-') WHERE id = $1 AND redeemed_at IS NOT NULL \
                 RETURNING family, access_jti, access_exp",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = replay else {
                return Ok(Redemption::Invalid);
            };
            let mut revoked = issued(&row);
            let family: String = row.get("family");
            if family != "-" {
                for issued in revoke_family(&mut tx, &family, now).await? {
                    // The family's first token records the code's access token again.
                    if !revoked.contains(&issued) {
                        revoked.push(issued);
                    }
                }
            }
            for r in &revoked {
                insert_revocation(&mut tx, r, now).await?;
            }
            tx.commit().await?;
            Ok(Redemption::Replayed(revoked))
        })
        .await
    }

    /// Starts the refresh family `family` for the redeemed code `code`, with its first token
    /// (`refresh` is its digest). False when the code was replayed meanwhile: no family then.
    pub async fn start_family(
        &self,
        code: &str,
        family: &str,
        refresh: &str,
        grant: &Grant,
        refresh_exp: i64,
        family_exp: i64,
    ) -> Result<bool> {
        self.bounded("start_family", async {
            let mut tx = self.write_tx().await?;
            let claimed = sqlx::query("UPDATE codes SET family = $1 WHERE id = $2 AND family IS NULL")
                .bind(family)
                .bind(code)
                .execute(&mut *tx)
                .await?;
            if claimed.rows_affected() != 1 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO refresh_families (id, client_id, client_uid, subject, grant_data, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(family)
            .bind(&grant.client_id)
            .bind(&grant.client_uid)
            .bind(&grant.subject)
            .bind(serde_json::to_string(grant)?)
            .bind(family_exp)
            .execute(&mut *tx)
            .await?;
            // The first refresh token carries the access token the code issued, so revoking the
            // family (reuse, deletion of the client) revokes that one too.
            sqlx::query(
                "INSERT INTO refresh_tokens (id, family, access_jti, access_exp, expires_at) \
                 SELECT $1, $2, access_jti, access_exp, $3 FROM codes WHERE id = $4",
            )
            .bind(refresh)
            .bind(family)
            .bind(refresh_exp)
            .bind(code)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// Uses the refresh token `id` of the client object `client` once and stores its
    /// successor `next` (digest, expiry) with the access token issued beside it. A second use
    /// revokes the whole family; another client's token is merely invalid (and stays unused).
    pub async fn use_refresh(
        &self,
        id: &str,
        client: &ClientObject<'_>,
        now: i64,
        next: (&str, i64),
        issue: &Issued,
    ) -> Result<RefreshUse> {
        self.bounded("use_refresh", async {
            let mut tx = self.write_tx().await?;
            // Marks the token used and reads its family's grant while the family is live, in
            // one statement: each statement is a round trip while the shared write is held.
            let current = sqlx::query(
                "UPDATE refresh_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND expires_at > $1 \
                 AND family IN (SELECT id FROM refresh_families WHERE client_id = $3 AND client_uid = $4) \
                 RETURNING family, (SELECT grant_data FROM refresh_families f \
                   WHERE f.id = refresh_tokens.family AND f.revoked_at IS NULL AND f.expires_at > $1) AS grant_data",
            )
            .bind(now)
            .bind(id)
            .bind(client.id)
            .bind(client.uid)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = current {
                let family: String = row.get("family");
                // A revoked or expired family: the token stays unused (the write is undone).
                let Some(live) = row.get::<Option<String>, _>("grant_data") else {
                    return Ok(RefreshUse::Invalid);
                };
                let grant = serde_json::from_str(&live)?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (id, family, access_jti, access_exp, expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(next.0)
                .bind(&family)
                .bind(&issue.jti)
                .bind(issue.exp)
                .bind(next.1)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(RefreshUse::Rotated(grant));
            }
            let used = sqlx::query(
                "SELECT family FROM refresh_tokens WHERE id = $1 AND used_at IS NOT NULL \
                 AND family IN (SELECT id FROM refresh_families WHERE client_id = $2 AND client_uid = $3)",
            )
            .bind(id)
            .bind(client.id)
            .bind(client.uid)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = used else {
                return Ok(RefreshUse::Invalid);
            };
            let revoked = revoke_family(&mut tx, &row.get::<String, _>("family"), now).await?;
            for r in &revoked {
                insert_revocation(&mut tx, r, now).await?;
            }
            tx.commit().await?;
            Ok(RefreshUse::Reused(revoked))
        })
        .await
    }

    /// Revokes the family of `client`'s refresh token `id` (RFC 7009 on a refresh token).
    /// Returns the access tokens revoked with it; nothing for an unknown or foreign token.
    pub async fn revoke_refresh_of(&self, id: &str, client: &ClientObject<'_>, now: i64) -> Result<Vec<Issued>> {
        self.bounded("revoke_refresh_of", async {
            let mut tx = self.write_tx().await?;
            // A write first, so SQLite takes its lock before reading.
            let row = sqlx::query(
                "UPDATE refresh_tokens SET used_at = COALESCE(used_at, $1) WHERE id = $2 \
                 AND family IN (SELECT id FROM refresh_families WHERE client_id = $3 AND client_uid = $4) RETURNING family",
            )
            .bind(now)
            .bind(id)
            .bind(client.id)
            .bind(client.uid)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(Vec::new());
            };
            let revoked = revoke_family(&mut tx, &row.get::<String, _>("family"), now).await?;
            for r in &revoked {
                insert_revocation(&mut tx, r, now).await?;
            }
            tx.commit().await?;
            Ok(revoked)
        })
        .await
    }

    /// Revokes every live refresh family held by a client object that no longer exists (its
    /// uid is not in `existing`), with the access tokens they issued: deleting a client ends
    /// what it holds. Returns those access tokens.
    pub async fn revoke_families_of_deleted_clients(
        &self,
        existing: &std::collections::HashSet<String>,
        now: i64,
    ) -> Result<Vec<Issued>> {
        self.bounded("revoke_families_of_deleted_clients", async {
            let holders = sqlx::query("SELECT DISTINCT client_uid FROM refresh_families WHERE revoked_at IS NULL")
                .fetch_all(&self.pool)
                .await?;
            let mut revoked = Vec::new();
            for holder in holders {
                let uid: String = holder.get("client_uid");
                if !existing.contains(&uid) {
                    revoked.extend(
                        self.revoke_families_held_by(FamilyHolder::ClientObject, &uid, now)
                            .await?,
                    );
                }
            }
            Ok(revoked)
        })
        .await
    }

    /// The DPoP key an unredeemed code is bound to (None: no such code; Some(None): unbound),
    /// read without spending it, so a proof of another key is refused before the code is used.
    pub async fn code_binding(&self, id: &str, now: i64) -> Result<Option<Option<String>>> {
        self.bounded("code_binding", async {
            let row =
                sqlx::query("SELECT grant_data FROM codes WHERE id = $1 AND redeemed_at IS NULL AND expires_at > $2")
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row.map(|r| binding_of(&r.get::<String, _>("grant_data"))))
        })
        .await
    }

    /// The grant of the live family a refresh token (by digest) belongs to, read without using
    /// the token: its DPoP binding is checked before the use, and its person and session are
    /// told if the use turns out a reuse (once: a revoked family is not live).
    pub async fn refresh_grant(&self, id: &str, client: &ClientObject<'_>) -> Result<Option<Grant>> {
        self.bounded("refresh_grant", async {
            let row = sqlx::query(
                "SELECT f.grant_data FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family \
                 WHERE t.id = $1 AND f.revoked_at IS NULL AND f.client_id = $2 AND f.client_uid = $3",
            )
            .bind(id)
            .bind(client.id)
            .bind(client.uid)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.and_then(|r| serde_json::from_str::<Grant>(&r.get::<String, _>("grant_data")).ok()))
        })
        .await
    }
}

/// The DPoP key a stored grant names (unreadable data: none, and the grant's own checks refuse
/// it later).
fn binding_of(grant_data: &str) -> Option<String> {
    serde_json::from_str::<Grant>(grant_data).ok().and_then(|g| g.dpop_jkt)
}
