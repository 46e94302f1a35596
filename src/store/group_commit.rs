//! Group commit for SQLite: concurrent write transactions share one database transaction and
//! one fsync. SQLite serialises writers anyway, and with `synchronous=FULL` each commit waits
//! for the disk; so the writes of everyone waiting are committed together.
//!
//! Every writer gets the one write connection in turn (a fair lock) and runs inside its own
//! SAVEPOINT of the shared transaction. Its `commit` hands the connection on and waits for the
//! shared COMMIT, which the first waiter issues once the writers queued before it are done.
//! Nobody is told "committed" before the COMMIT that holds their writes returned, so a crash
//! loses only writes nobody was told about. A writer that fails or is dropped midway (an error,
//! a deadline) is rolled back to its savepoint alone; a failed COMMIT fails every member.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::{AnyConnection, Connection, Executor};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Result, StoreError};

/// How many failed batches are remembered for members still to learn of the failure.
const FAILURES_KEPT: usize = 64;

/// The write connection of a SQLite store.
#[derive(Clone)]
pub struct Group {
    state: Arc<Mutex<GroupState>>,
    /// False: each writer commits on its own (one fsync per write), for comparison.
    grouped: bool,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("grouped", &self.grouped).finish()
    }
}

struct GroupState {
    conn: AnyConnection,
    /// The shared transaction is open.
    open: bool,
    /// The number of the open (or next) batch; lower numbers are committed or failed.
    batch: u64,
    /// A member dropped before it committed: rolled back by whoever takes the connection next.
    abandoned: Option<u64>,
    next_savepoint: u64,
    /// Batches whose COMMIT failed, with the reason, for members that have yet to ask.
    failed: VecDeque<(u64, String)>,
}

impl GroupState {
    async fn run(&mut self, sql: &str) -> Result<()> {
        self.conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql))).await?;
        Ok(())
    }

    /// Rolls an abandoned member back; if even that fails, the whole batch is lost.
    async fn settle_abandoned(&mut self) {
        let Some(savepoint) = self.abandoned.take() else {
            return;
        };
        let undone = self
            .run(&format!("ROLLBACK TO m{savepoint}; RELEASE m{savepoint}"))
            .await;
        if let Err(e) = undone {
            self.fail_batch(format!("cannot roll back a failed write: {e}")).await;
        }
    }

    async fn fail_batch(&mut self, reason: String) {
        let _ = self.run("ROLLBACK").await;
        self.failed.push_back((self.batch, reason));
        if self.failed.len() > FAILURES_KEPT {
            self.failed.pop_front();
        }
        self.open = false;
        self.batch += 1;
    }

    /// Commits the open batch.
    async fn commit(&mut self) {
        self.settle_abandoned().await;
        if !self.open {
            return;
        }
        match self.run("COMMIT").await {
            Ok(()) => {
                self.open = false;
                self.batch += 1;
            }
            Err(e) => self.fail_batch(e.to_string()).await,
        }
    }

    /// The outcome of batch `batch`, which is over.
    fn outcome(&self, batch: u64) -> Result<()> {
        match self.failed.iter().find(|(b, _)| *b == batch) {
            Some((_, reason)) => Err(StoreError::GroupCommit(reason.clone())),
            None => Ok(()),
        }
    }
}

impl Group {
    /// Opens the write connection to `url`.
    pub async fn connect(url: &str, grouped: bool) -> Result<Self> {
        let conn = AnyConnection::connect(url).await?;
        Ok(Self {
            state: Arc::new(Mutex::new(GroupState {
                conn,
                open: false,
                batch: 0,
                abandoned: None,
                next_savepoint: 0,
                failed: VecDeque::new(),
            })),
            grouped,
        })
    }

    /// Starts a write: waits for the connection, then opens a savepoint in the shared
    /// transaction (opening that first when needed).
    pub async fn begin(&self) -> Result<GroupTx> {
        let mut state = self.state.clone().lock_owned().await;
        state.settle_abandoned().await;
        let savepoint = state.next_savepoint;
        state.next_savepoint += 1;
        if state.open {
            state.run(&format!("SAVEPOINT m{savepoint}")).await?;
        } else {
            if let Err(e) = state.run(&format!("BEGIN; SAVEPOINT m{savepoint}")).await {
                // Whichever half failed, no transaction is left open.
                let _ = state.run("ROLLBACK").await;
                return Err(e);
            }
            state.open = true;
        }
        Ok(GroupTx {
            state: Some(state),
            savepoint,
            group: self.clone(),
        })
    }

    /// Waits until batch `batch` is over, committing it if nobody has yet.
    async fn flush(&self, batch: u64) -> Result<()> {
        let mut state = self.state.lock().await;
        if state.batch == batch {
            state.commit().await;
        }
        state.outcome(batch)
    }
}

/// One writer's part of the shared transaction; dereferences to the write connection.
pub struct GroupTx {
    /// The connection, held until commit or drop.
    state: Option<OwnedMutexGuard<GroupState>>,
    savepoint: u64,
    group: Group,
}

impl GroupTx {
    fn state(&mut self) -> &mut GroupState {
        self.state.as_mut().expect("held until commit or drop")
    }

    /// Keeps this writer's changes and returns once they are durable.
    pub async fn commit(mut self) -> Result<()> {
        // The savepoint is not released: the shared COMMIT ends it with the others, and one
        // round trip less per writer is a shorter hold of the one write connection.
        let mut state = self.state.take().expect("held until commit or drop");
        let batch = state.batch;
        if !self.group.grouped {
            state.commit().await;
            return state.outcome(batch);
        }
        // Let the writers queued behind join this batch; the first to flush commits it. The
        // flush runs as a task of its own: a caller that stops waiting (a deadline) must not
        // leave the batch, and SQLite's write lock, open until the next write comes.
        drop(state);
        let group = self.group.clone();
        match tokio::spawn(async move { group.flush(batch).await }).await {
            Ok(outcome) => outcome,
            Err(e) => Err(StoreError::GroupCommit(e.to_string())),
        }
    }
}

impl Drop for GroupTx {
    fn drop(&mut self) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        state.abandoned = Some(self.savepoint);
        // Rolled back and the batch committed now, not by the next writer: until then the
        // open transaction would hold SQLite's write lock, and another process writing the
        // same file (a CLI, a second store) would wait for it. Members already done with
        // their writes are told once this COMMIT returns, as with any other.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut state = state;
                state.commit().await;
            });
        }
    }
}

impl Deref for GroupTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.state.as_ref().expect("held until commit or drop").conn
    }
}

impl DerefMut for GroupTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.state().conn
    }
}
