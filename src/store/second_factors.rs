//! People's second factors: a TOTP secret (sealed by the caller: this store never sees it in
//! clear) with the last step it accepted, and recovery codes by digest. Accepting a code is
//! one conditional write, so a code counts once even when raced across replicas.

use super::*;

/// A person's TOTP factor as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTotp {
    /// The secret, sealed for its subject.
    pub sealed: String,
    /// The last time step a code was accepted for.
    pub last_step: i64,
    /// The password it was enrolled with ([`crate::people::LocalUser::credential`]).
    pub credential: String,
}

impl GrantStore {
    /// Enrolls `subject`'s TOTP secret (`sealed`), enrolled with the password `credential`,
    /// with fresh recovery codes (their digests): true when it was stored (also over a factor
    /// of another password, void since), false when the person has a factor of this password
    /// already (another enrollment won a race: it stands).
    pub async fn enroll_totp(
        &self,
        subject: &str,
        credential: &str,
        sealed: &str,
        recovery_digests: &[String],
        now: i64,
    ) -> Result<bool> {
        self.bounded("enroll_totp", async {
            let mut tx = self.write_tx().await?;
            let inserted = sqlx::query(
                "INSERT INTO second_factors (subject, id, sealed, last_step, created_at, credential) \
                 VALUES ($1, 'totp', $2, 0, $3, $4) ON CONFLICT (subject, id) DO UPDATE \
                 SET sealed = excluded.sealed, last_step = 0, created_at = excluded.created_at, \
                 credential = excluded.credential WHERE second_factors.credential <> excluded.credential",
            )
            .bind(subject)
            .bind(sealed)
            .bind(now)
            .bind(credential)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() != 1 {
                return Ok(false);
            }
            // Recovery codes of an earlier factor (void, or removed) go with it.
            sqlx::query("DELETE FROM second_factors WHERE subject = $1 AND id LIKE 'recovery:%'")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            for digest in recovery_digests {
                sqlx::query(
                    "INSERT INTO second_factors (subject, id, sealed, last_step, created_at, credential) \
                     VALUES ($1, $2, '', 0, $3, $4)",
                )
                .bind(subject)
                .bind(format!("recovery:{digest}"))
                .bind(now)
                .bind(credential)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// `subject`'s TOTP factor, if they enrolled one.
    pub async fn totp_of(&self, subject: &str) -> Result<Option<StoredTotp>> {
        self.bounded("totp_of", async {
            let row = sqlx::query(
                "SELECT sealed, last_step, credential FROM second_factors WHERE subject = $1 AND id = 'totp'",
            )
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|r| StoredTotp {
                sealed: r.get("sealed"),
                last_step: r.get("last_step"),
                credential: r.get("credential"),
            }))
        })
        .await
    }

    /// Accepts a code of time step `step` for `subject`: true once, for a step later than any
    /// accepted before (RFC 6238 §5.2: a code is used once).
    pub async fn use_totp_step(&self, subject: &str, step: i64) -> Result<bool> {
        self.bounded("use_totp_step", async {
            let done = self
                .write(
                    sqlx::query(
                        "UPDATE second_factors SET last_step = $1 WHERE subject = $2 AND id = 'totp' AND last_step < $1",
                    )
                    .bind(step)
                    .bind(subject),
                )
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    /// Uses one of `subject`'s recovery codes (by digest): true the first time only.
    pub async fn use_recovery_code(&self, subject: &str, digest: &str) -> Result<bool> {
        self.bounded("use_recovery_code", async {
            let done = self
                .write(
                    sqlx::query(
                        "UPDATE second_factors SET last_step = 1 WHERE subject = $1 AND id = $2 AND last_step = 0",
                    )
                    .bind(subject)
                    .bind(format!("recovery:{digest}")),
                )
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    /// How many of `subject`'s recovery codes are left.
    pub async fn recovery_codes_left(&self, subject: &str) -> Result<i64> {
        self.bounded("recovery_codes_left", async {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n FROM second_factors WHERE subject = $1 AND id LIKE 'recovery:%' AND last_step = 0",
            )
            .bind(subject)
            .fetch_one(&self.pool)
            .await?;
            Ok(row.get::<i64, _>("n"))
        })
        .await
    }

    /// Removes every second factor of `subject`; how many rows went.
    pub async fn remove_second_factors(&self, subject: &str) -> Result<u64> {
        self.bounded("remove_second_factors", async {
            let done = self
                .write(sqlx::query("DELETE FROM second_factors WHERE subject = $1").bind(subject))
                .await?;
            Ok(done.rows_affected())
        })
        .await
    }
}
