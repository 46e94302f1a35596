//! The grant store: the provider's only mutable state (authorization codes, refresh-token
//! families, sessions, consents, pending sign-ins and revocations).
//!
//! One implementation over sqlx's `Any` driver serves both backends with the same SQL:
//! SQLite (a file, the single-replica default) and PostgreSQL (shared by several replicas).
//! Every operation that must happen once is one conditional `UPDATE ... RETURNING` (or a
//! transaction that starts with one), so it is atomic on both.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyQueryResult;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Row, SqlSafeStr};

mod device;
mod group_commit;
pub use device::{DevicePoll, DeviceRequest};
use group_commit::{Group, GroupTx};

/// The schema, applied once per database by sqlx's migrator, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "grants", include_str!("schema.sql")),
    (
        2,
        "grants belong to their client and person",
        include_str!("grants-belong-to-their-client-and-person.sql"),
    ),
    (3, "device authorizations", include_str!("device-authorizations.sql")),
    (4, "secret usage", include_str!("secret-usage.sql")),
];

/// How long a secret's last use is remembered: a secret unused this long reads as never used.
const SECRET_USAGE_KEPT: i64 = 400 * 24 * 3600;

/// How long an expired device request is kept (polls meanwhile are told `expired_token`).
pub const DEVICE_REQUEST_KEPT: i64 = 5 * 60;

/// How long a redeemed code is kept after it expired, so a late replay still revokes what the
/// code issued.
const REDEEMED_CODE_KEPT: i64 = 24 * 3600;

/// The SHA-256 digest (hex) under which codes, refresh tokens and session cookies are
/// stored: a copy of the database hands out nothing usable.
pub fn handle_digest(handle: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, handle.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The store could not be reached or answered unexpectedly.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("grant store: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("grant store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("grant store holds unreadable data: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("grant store URL scheme {0:?} is not supported: use sqlite://<file> or postgres://...")]
    Url(String),
    #[error("grant store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("grant store: a shared commit failed: {0}")]
    GroupCommit(String),
}

type Result<T> = std::result::Result<T, StoreError>;

/// What a person authorized, carried from the code to every token of its refresh family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub client_id: String,
    /// The OAuthClient object the grant belongs to; a client with the same id but another
    /// uid cannot redeem or refresh it.
    #[serde(default)]
    pub client_uid: String,
    pub subject: String,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub redirect_uri: String,
    pub nonce: Option<String>,
    /// PKCE S256 challenge, when the request carried one.
    pub code_challenge: Option<String>,
    /// When the person last authenticated (Unix seconds).
    pub auth_time: i64,
}

/// An access token (by jti) that a code or refresh token issued, with its expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub jti: String,
    pub exp: i64,
}

/// The outcome of presenting an authorization code.
#[derive(Debug, PartialEq, Eq)]
pub enum Redemption {
    /// First use: the grant to issue tokens for.
    Granted(Grant),
    /// Second use: everything the first use issued is now revoked (listed here).
    Replayed(Vec<Issued>),
    /// Unknown or expired.
    Invalid,
}

/// The outcome of presenting a refresh token.
#[derive(Debug, PartialEq, Eq)]
pub enum RefreshUse {
    /// The token was current: it is now used up and its successor stored.
    Rotated(Grant),
    /// The token had been used before: the whole family is revoked (access tokens listed).
    Reused(Vec<Issued>),
    /// Unknown, expired, or of a revoked family.
    Invalid,
}

/// Who holds refresh families, for revoking all of one holder's at once.
#[derive(Clone, Copy)]
enum FamilyHolder {
    /// A person (`refresh_families.subject`).
    Person,
    /// An OAuthClient object (`refresh_families.client_uid`).
    ClientObject,
}

/// The client object a refresh token must belong to: its id and its uid.
#[derive(Clone, Copy, Debug)]
pub struct ClientObject<'a> {
    pub id: &'a str,
    pub uid: &'a str,
}

/// A pending `/authorize` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRequest {
    /// Digest of the browser-binding cookie it was started with.
    pub browser: String,
    pub csrf: String,
    /// The validated request (JSON, the provider's own shape).
    pub request: String,
}

/// A signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub subject: String,
    pub auth_time: i64,
    /// Which password the person signed in with (see `LocalUser::credential`); empty for
    /// people of an upstream provider.
    pub credential: String,
}

/// A revocation as the mirror of each replica reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub jti: String,
    pub exp: i64,
    pub revoked_at: i64,
}

/// The grant store (cheap to clone: a connection pool).
#[derive(Clone, Debug)]
pub struct GrantStore {
    /// Reads, and PostgreSQL's writes.
    pool: AnyPool,
    /// SQLite's one write connection, shared by concurrent writes ([`group_commit`]).
    writer: Option<Group>,
    /// Longest any operation may take, waiting for a connection included: a stopped or frozen
    /// database makes requests fail fast (503) instead of hanging.
    deadline: std::time::Duration,
    /// Where operation latency is observed, if anywhere.
    latency: Option<prometheus_client::metrics::histogram::Histogram>,
}

/// Default for [`GrantStore::open_with_deadline`].
pub const DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

impl GrantStore {
    /// Connects to `url` (`sqlite://<file>`, created when missing, or `postgres://...`) and
    /// applies the schema; every operation then takes at most [`DEFAULT_DEADLINE`].
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with_deadline(url, DEFAULT_DEADLINE).await
    }

    /// As [`GrantStore::open`], with every operation bounded by `deadline`.
    pub async fn open_with_deadline(url: &str, deadline: std::time::Duration) -> Result<Self> {
        Self::open_with(url, deadline, true).await
    }

    /// As [`GrantStore::open_with_deadline`]; `group_commit` false makes every SQLite write
    /// commit on its own (to compare; PostgreSQL ignores it).
    pub async fn open_with(url: &str, deadline: std::time::Duration, group_commit: bool) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (url, connections) = if let Some(path) = url.strip_prefix("sqlite://") {
            // SQLite takes one writer at a time: writes go through the one write connection
            // (never into SQLite's busy handler, which sleeps in steps of up to 100 ms), and in
            // WAL mode these connections read beside it.
            let sep = if path.contains('?') { '&' } else { '?' };
            (format!("sqlite://{path}{sep}mode=rwc"), 4)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_string(), 16)
        } else {
            // Only the scheme: the rest may hold a password.
            let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
            return Err(StoreError::Url(scheme.chars().take(32).collect()));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(deadline)
            .connect(&url)
            .await?;
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations).run(&pool).await?;
        let writer = if url.starts_with("sqlite:") {
            // One fsync per commit instead of three (journal, database, journal deletion), and
            // readers that never wait for the writer. Recorded in the file.
            sqlx::query("PRAGMA journal_mode=WAL").execute(&pool).await?;
            Some(Group::connect(&url, group_commit).await?)
        } else {
            None
        };
        Ok(Self {
            pool,
            writer,
            deadline,
            latency: None,
        })
    }

    /// Observes every operation's latency in `histogram`.
    pub fn with_latency(mut self, histogram: prometheus_client::metrics::histogram::Histogram) -> Self {
        self.latency = Some(histogram);
        self
    }

    /// Runs one operation within the deadline, in a span named after it when it serves a
    /// request or a reconcile (housekeeping's every-second reads would each start a trace).
    pub(crate) async fn bounded<T>(
        &self,
        name: &'static str,
        operation: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        use tracing::Instrument as _;
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "store",
                otel.name = name,
                otel.kind = "client",
                db.operation.name = name
            )
        };
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.deadline, operation.instrument(span))
            .await
            .unwrap_or(Err(StoreError::Timeout(self.deadline)));
        if let Some(latency) = &self.latency {
            latency.observe(started.elapsed().as_secs_f64());
        }
        result
    }

    /// Starts a write transaction: on SQLite a member of the shared one ([`group_commit`]).
    async fn write_tx(&self) -> Result<WriteTx> {
        Ok(match &self.writer {
            Some(group) => WriteTx::Group(group.begin().await?),
            None => WriteTx::Pool(self.pool.begin().await?),
        })
    }

    /// Runs one writing statement (in its own transaction on PostgreSQL).
    async fn write(&self, statement: Statement<'_>) -> Result<AnyQueryResult> {
        if self.writer.is_none() {
            return Ok(statement.execute(&self.pool).await?);
        }
        let mut tx = self.write_tx().await?;
        let done = statement.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Runs one writing statement with `RETURNING` and returns its row, if any.
    async fn write_returning(&self, statement: Statement<'_>) -> Result<Option<AnyRow>> {
        if self.writer.is_none() {
            return Ok(statement.fetch_optional(&self.pool).await?);
        }
        let mut tx = self.write_tx().await?;
        let row = statement.fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Answers when the store can be reached: a cheap query within the deadline.
    pub async fn ping(&self) -> Result<()> {
        self.bounded("ping", async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    /// Opens a SQLite store in `dir/grants.db`.
    pub async fn open_file(dir: &std::path::Path) -> Result<Self> {
        Self::open(&Self::file_url(dir)?).await
    }

    /// The URL of the SQLite store in `dir/grants.db` (the folder is created).
    pub fn file_url(dir: &std::path::Path) -> Result<String> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Sql(sqlx::Error::Io(e)))?;
        Ok(format!("sqlite://{}", dir.join("grants.db").display()))
    }

    // ---- pending sign-ins -------------------------------------------------------------

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

    // ---- sessions and people ----------------------------------------------------------

    /// Starts a session (`id` is the cookie's digest).
    pub async fn create_session(&self, id: &str, session: &Session, expires_at: i64) -> Result<()> {
        self.bounded("create_session", async {
            self.write(
                sqlx::query(
                    "INSERT INTO sessions (id, subject, auth_time, credential, expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(&session.subject)
                .bind(session.auth_time)
                .bind(&session.credential)
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
            let row =
                sqlx::query("SELECT subject, auth_time, credential FROM sessions WHERE id = $1 AND expires_at > $2")
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row.map(|r| Session {
                subject: r.get("subject"),
                auth_time: r.get("auth_time"),
                credential: r.get("credential"),
            }))
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
    async fn revoke_families_held_by(&self, holder: FamilyHolder, value: &str, now: i64) -> Result<Vec<Issued>> {
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

    // ---- authorization codes ----------------------------------------------------------

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

    // ---- revocations ------------------------------------------------------------------

    /// Revokes the access token `issued` (idempotent).
    pub async fn revoke(&self, issued: &Issued, now: i64) -> Result<()> {
        self.bounded("revoke", async {
            let mut tx = self.write_tx().await?;
            insert_revocation(&mut tx, issued, now).await?;
            tx.commit().await
        })
        .await
    }

    /// Unexpired revocations recorded at or after `since` (Unix seconds), for the in-memory
    /// deny list of every replica.
    pub async fn revocations_since(&self, since: i64, now: i64) -> Result<Vec<Revocation>> {
        self.bounded("revocations_since", async {
            let rows = sqlx::query(
                "SELECT jti, expires_at, revoked_at FROM revocations WHERE revoked_at >= $1 AND expires_at > $2",
            )
            .bind(since)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| Revocation {
                    jti: r.get("jti"),
                    exp: r.get("expires_at"),
                    revoked_at: r.get("revoked_at"),
                })
                .collect())
        })
        .await
    }

    // ---- client secret usage ----------------------------------------------------------

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

    // ---- housekeeping -----------------------------------------------------------------

    /// Deletes everything that expired before `now`; returns how many rows went.
    pub async fn sweep(&self, now: i64) -> Result<u64> {
        self.bounded("sweep", async {
            let statements: [(&'static str, i64); 9] = [
                ("DELETE FROM auth_requests WHERE expires_at <= $1", now),
                ("DELETE FROM sessions WHERE expires_at <= $1", now),
                ("DELETE FROM codes WHERE expires_at <= $1", now - REDEEMED_CODE_KEPT),
                ("DELETE FROM refresh_tokens WHERE expires_at <= $1", now),
                ("DELETE FROM refresh_families WHERE expires_at <= $1", now),
                ("DELETE FROM revocations WHERE expires_at <= $1", now),
                // A device polling a few minutes after expiry is still told `expired_token`;
                // after that the row goes (a flood of them must not linger for an hour).
                (
                    "DELETE FROM device_requests WHERE expires_at <= $1",
                    now - DEVICE_REQUEST_KEPT,
                ),
                // Consent is kept for a year unless given again.
                ("DELETE FROM consents WHERE granted_at <= $1", now - 365 * 24 * 3600),
                (
                    "DELETE FROM secret_usage WHERE last_used <= $1",
                    now - SECRET_USAGE_KEPT,
                ),
            ];
            let mut gone = 0;
            let mut tx = self.write_tx().await?;
            for (sql, cutoff) in statements {
                gone += sqlx::query(sql).bind(cutoff).execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            Ok(gone)
        })
        .await
    }
}

/// A statement with its parameters bound.
type Statement<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// A write transaction: PostgreSQL's own, or a member of SQLite's shared one.
enum WriteTx {
    Pool(sqlx::Transaction<'static, sqlx::Any>),
    Group(GroupTx),
}

impl WriteTx {
    /// Keeps the changes; returns once they are durable.
    async fn commit(self) -> Result<()> {
        match self {
            Self::Pool(tx) => Ok(tx.commit().await?),
            Self::Group(tx) => tx.commit().await,
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            Self::Pool(tx) => tx,
            Self::Group(tx) => tx,
        }
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Self::Pool(tx) => &mut *tx,
            Self::Group(tx) => &mut *tx,
        }
    }
}

/// The access token recorded on a code or refresh-token row, if any.
fn issued(row: &AnyRow) -> Vec<Issued> {
    match (
        row.get::<Option<String>, _>("access_jti"),
        row.get::<Option<i64>, _>("access_exp"),
    ) {
        (Some(jti), Some(exp)) => vec![Issued { jti, exp }],
        _ => Vec::new(),
    }
}

/// Marks `family` revoked and lists the access tokens its refresh tokens issued.
async fn revoke_family(conn: &mut AnyConnection, family: &str, now: i64) -> Result<Vec<Issued>> {
    sqlx::query("UPDATE refresh_families SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(family)
        .execute(&mut *conn)
        .await?;
    family_access_tokens(conn, family).await
}

/// The access tokens `family`'s refresh tokens issued.
async fn family_access_tokens(conn: &mut AnyConnection, family: &str) -> Result<Vec<Issued>> {
    let rows = sqlx::query("SELECT access_jti, access_exp FROM refresh_tokens WHERE family = $1")
        .bind(family)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().flat_map(issued).collect())
}

async fn insert_revocation(conn: &mut AnyConnection, issued: &Issued, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO revocations (jti, revoked_at, expires_at) VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(&issued.jti)
    .bind(now)
    .bind(issued.exp)
    .execute(conn)
    .await?;
    Ok(())
}
