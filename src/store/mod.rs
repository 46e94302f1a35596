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

mod account;
mod attempts;
pub use attempts::ATTEMPT_WINDOW_SECS;
mod codes_and_families;
mod device;
mod group_commit;
mod passkeys;
mod people;
mod revocations;
mod second_factors;
mod secret_usage;
mod session_clients;
mod shared_secrets;
mod sign_ins;
mod sweep;
mod used_once;
pub use account::{AllowedApp, LiveSession};
pub use device::{DevicePoll, DeviceRequest};
use group_commit::{Group, GroupTx};
pub use passkeys::{MAX_PASSKEYS_PER_PERSON, PasskeyAdded, StoredPasskey};
pub use second_factors::StoredTotp;
pub use session_clients::SessionClient;
pub use used_once::once_id;

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
    (5, "used once", include_str!("used-once.sql")),
    (6, "session clients", include_str!("session-clients.sql")),
    (7, "shared secrets", include_str!("shared-secrets.sql")),
    (8, "second factors", include_str!("second-factors.sql")),
    (9, "passkeys", include_str!("passkeys.sql")),
    (10, "attempts", include_str!("attempts.sql")),
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
    /// The DPoP key (RFC 7638 thumbprint) the grant is bound to: its tokens are issued only
    /// to proofs of that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
    /// The session it was granted in (`sid`, OIDC Back-Channel Logout), for its ID tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// When the person last authenticated (Unix seconds).
    pub auth_time: i64,
    /// How they authenticated (RFC 8176 `amr`), for ID tokens' `amr` and `acr`; empty for
    /// grants made before kauth recorded it and for people of upstream providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

/// An access token (by jti) that a code or refresh token issued, with its expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub jti: String,
    pub exp: i64,
}

/// The outcome of presenting an authorization code.
// Made once per redemption and taken apart at once: boxing the grant would buy nothing.
#[allow(clippy::large_enum_variant)]
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
// Made once per redemption and taken apart at once: boxing the grant would buy nothing.
#[allow(clippy::large_enum_variant)]
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
    /// How they signed in (RFC 8176 `amr`: `pwd`, and `otp` and `mfa` after a second factor);
    /// empty for people of an upstream provider.
    pub amr: Vec<String>,
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

    /// Runs a write that returns rows, in its own (or the shared) transaction.
    async fn write_returning_all(&self, statement: Statement<'_>) -> Result<Vec<AnyRow>> {
        if self.writer.is_none() {
            return Ok(statement.fetch_all(&self.pool).await?);
        }
        let mut tx = self.write_tx().await?;
        let rows = statement.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows)
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
