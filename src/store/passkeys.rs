//! People's passkeys: each credential by its id (unique across everyone), its owner, the
//! webauthn-rs `Passkey` sealed by the caller (this store never sees it in clear), a name the
//! person gave it, and the password it was enrolled with. A person holds at most
//! [`MAX_PASSKEYS_PER_PERSON`]; adding one checks the count and the id where it writes, with
//! the person's rows locked, so neither a race nor a replica can exceed that or take over
//! another person's credential id.

use super::*;

/// How many passkeys one person may register (T9: nothing a caller sends is stored unbounded).
pub const MAX_PASSKEYS_PER_PERSON: i64 = 10;

/// A passkey as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPasskey {
    /// The credential id, base64url.
    pub credential_id: String,
    pub subject: String,
    /// The webauthn-rs `Passkey`, sealed for `subject`.
    pub sealed: String,
    pub name: String,
    pub created_at: i64,
    /// 0 when never used.
    pub last_used_at: i64,
    /// The password it was enrolled with ([`crate::people::LocalUser::credential`]).
    pub credential: String,
}

/// What adding a passkey did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasskeyAdded {
    Added,
    /// The credential id is registered already (to this person or anyone else).
    Taken,
    /// The person has [`MAX_PASSKEYS_PER_PERSON`] already.
    TooMany,
}

fn passkey_of(r: &AnyRow) -> StoredPasskey {
    StoredPasskey {
        credential_id: r.get("credential_id"),
        subject: r.get("subject"),
        sealed: r.get("sealed"),
        name: r.get("name"),
        created_at: r.get("created_at"),
        last_used_at: r.get("last_used_at"),
        credential: r.get("credential"),
    }
}

impl GrantStore {
    /// Registers `passkey` for its subject, unless its id is taken or they have the most
    /// allowed; their passkeys of another password (void) go.
    pub async fn add_passkey(&self, passkey: &StoredPasskey) -> Result<PasskeyAdded> {
        self.bounded("add_passkey", async {
            let mut tx = self.write_tx().await?;
            // Locks the person's passkeys on PostgreSQL (SQLite has one writer anyway), so two
            // additions in parallel count one after the other: the limit holds in a race.
            sqlx::query("UPDATE passkeys SET name = name WHERE subject = $1")
                .bind(&passkey.subject)
                .execute(&mut *tx)
                .await?;
            // Passkeys of an earlier password are void (a reset): the person cannot see or
            // remove them, so they go here rather than hold places of the limit.
            sqlx::query("DELETE FROM passkeys WHERE subject = $1 AND credential <> $2")
                .bind(&passkey.subject)
                .bind(&passkey.credential)
                .execute(&mut *tx)
                .await?;
            let taken = sqlx::query("SELECT 1 AS taken FROM passkeys WHERE credential_id = $1")
                .bind(&passkey.credential_id)
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_some() {
                return Ok(PasskeyAdded::Taken);
            }
            let done = sqlx::query(
                "INSERT INTO passkeys (credential_id, subject, sealed, name, created_at, last_used_at, credential) \
                 SELECT $1, $2, $3, $4, $5, 0, $6 \
                 WHERE (SELECT COUNT(*) FROM passkeys WHERE subject = $2) < $7 \
                 ON CONFLICT (credential_id) DO NOTHING",
            )
            .bind(&passkey.credential_id)
            .bind(&passkey.subject)
            .bind(&passkey.sealed)
            .bind(&passkey.name)
            .bind(passkey.created_at)
            .bind(&passkey.credential)
            .bind(MAX_PASSKEYS_PER_PERSON)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                // Either a parallel insert of the same id won, or the person is at the limit.
                let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM passkeys WHERE subject = $1")
                    .bind(&passkey.subject)
                    .fetch_one(&mut *tx)
                    .await?
                    .get("n");
                return Ok(if n >= MAX_PASSKEYS_PER_PERSON {
                    PasskeyAdded::TooMany
                } else {
                    PasskeyAdded::Taken
                });
            }
            tx.commit().await?;
            Ok(PasskeyAdded::Added)
        })
        .await
    }

    /// The passkey with this credential id, whoever owns it.
    pub async fn passkey(&self, credential_id: &str) -> Result<Option<StoredPasskey>> {
        self.bounded("passkey", async {
            let row = sqlx::query(
                "SELECT credential_id, subject, sealed, name, created_at, last_used_at, credential \
                 FROM passkeys WHERE credential_id = $1",
            )
            .bind(credential_id)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.as_ref().map(passkey_of))
        })
        .await
    }

    /// `subject`'s passkeys, oldest first.
    pub async fn passkeys_of(&self, subject: &str) -> Result<Vec<StoredPasskey>> {
        self.bounded("passkeys_of", async {
            let rows = sqlx::query(
                "SELECT credential_id, subject, sealed, name, created_at, last_used_at, credential \
                 FROM passkeys WHERE subject = $1 ORDER BY created_at, credential_id",
            )
            .bind(subject)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.iter().map(passkey_of).collect())
        })
        .await
    }

    /// Records a use of `subject`'s passkey `credential_id` at `now`, with its state sealed
    /// anew when the authenticator's counter moved. False when it is gone (removed meanwhile).
    pub async fn passkey_used(
        &self,
        subject: &str,
        credential_id: &str,
        resealed: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        self.bounded("passkey_used", async {
            let done = self
                .write(
                    sqlx::query(
                        "UPDATE passkeys SET last_used_at = $1, sealed = COALESCE($2, sealed) \
                         WHERE subject = $3 AND credential_id = $4",
                    )
                    .bind(now)
                    .bind(resealed)
                    .bind(subject)
                    .bind(credential_id),
                )
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    /// Removes `subject`'s passkey `credential_id` (only theirs): whether it was there.
    pub async fn remove_passkey(&self, subject: &str, credential_id: &str) -> Result<bool> {
        self.bounded("remove_passkey", async {
            let done = self
                .write(
                    sqlx::query("DELETE FROM passkeys WHERE subject = $1 AND credential_id = $2")
                        .bind(subject)
                        .bind(credential_id),
                )
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
}
