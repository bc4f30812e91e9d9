//! PostgreSQL storage: SQL only. Database errors are translated into domain errors here, so
//! SQLSTATEs and constraint names never leave this module. The service and the front doors
//! see [`Store`]'s methods, the functions of the table modules and domain types; the
//! connection settings, the pool and the cluster the service runs itself ([`cluster`]) stay
//! here.

pub mod cache;
pub mod cluster;
pub mod compiled;
pub mod graphs;
pub mod idempotency;
pub mod jobs;
mod primary;
pub mod runs;
mod sqlstate;
pub mod starts;
pub mod tasks;
pub mod workflows;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::Error;
use cluster::ManagedPostgres;

pub type Tx = Transaction<'static, Postgres>;

/// A connection idle this long is checked (a round trip) before a call uses it.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The options of every pool: at most `connections`, waiting `acquire_timeout` for one.
///
/// A connection that died with the server (a restart, a failover) is found out before a call
/// uses it when it has been idle: a connection in use within the last second is taken as it is,
/// since checking it would cost a round trip on every call and batch (sqlx's
/// `test_before_acquire` checks every time). A connection that died meanwhile fails its call,
/// which is answered UNAVAILABLE (retryable), and is closed.
fn pool_options(connections: u32, acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < CHECK_IDLE_AFTER {
                    return Ok(true);
                }
                Ok(sqlx::Connection::ping(conn).await.is_ok())
            })
        })
}

/// Connection pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a call waits for a connection before it fails with UNAVAILABLE.
    pub acquire_timeout: Duration,
    /// Longest a statement may run before PostgreSQL cancels it.
    pub statement_timeout: Duration,
    /// How long startup waits for a database that cannot be reached yet (it is starting too).
    pub startup_timeout: Duration,
}

/// Notifications from PostgreSQL (`LISTEN`).
pub struct Listener(sqlx::postgres::PgListener);

impl Listener {
    /// The next notification as (channel, payload); None when the connection was lost, in
    /// which case notifications may have been missed (the next call reconnects).
    pub async fn recv(&mut self) -> Result<Option<(String, String)>, Error> {
        let notification = self.0.try_recv().await.map_err(translate)?;
        Ok(notification.map(|n| (n.channel().to_owned(), n.payload().to_owned())))
    }
}

/// The service's database: a connection pool with the schema migrated.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// With several database hosts, the one that is the primary (see [`primary`]).
    primary: Option<Arc<primary::Primary>>,
    /// A dedicated store's connections kept between uses ([`Store::dedicated`]).
    kept: Option<Arc<Kept>>,
    /// The stores made from this one with [`Store::dedicated`], closed with it
    /// ([`Store::close`]).
    dedicated: Arc<std::sync::Mutex<Vec<Store>>>,
}

/// Connections of a dedicated store kept checked out of its pool between uses. sqlx checks
/// every connection given back to a pool with a round trip (`PoolConnection`'s drop pings it)
/// before anyone can have it again, so a batch that takes a connection right after the last
/// one gave it back waits for that ping first (measured: 0.8 ms a batch at concurrency 64, for
/// a statement of 1.7 ms). A connection is kept only when given back after a statement that
/// completed ([`Store::keep`]), and taken again only within [`CHECK_IDLE_AFTER`], as the pool
/// takes one without a check; an older one goes back to the pool, which checks it.
#[derive(Debug, Default)]
struct Kept {
    idle: std::sync::Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
    /// Signalled when a connection is kept, for a caller waiting on the pool meanwhile.
    returned: tokio::sync::Notify,
}

impl Kept {
    /// The most recently kept connection still fresh; older ones go back to the pool.
    fn take(&self) -> Option<PoolConnection<Postgres>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < CHECK_IDLE_AFTER {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` of `pool`, unless the pool is closing ([`Store::close`]): it is then
    /// given back, and the pool closes it. Decided under the lock [`Kept::drain`] takes, so a
    /// connection is either drained or never kept.
    fn keep(&self, conn: PoolConnection<Postgres>, pool: &PgPool) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if pool.is_closed() {
            drop(idle);
            drop(conn);
            return;
        }
        idle.push((conn, Instant::now()));
        drop(idle);
        self.returned.notify_one();
    }

    /// Every connection kept, fresh or not, to close.
    fn drain(&self) -> Vec<PoolConnection<Postgres>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.drain(..).map(|(conn, _)| conn).collect()
    }
}

/// How long [`Store::close`] waits for connections still in use to be given back.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The hosts DATABASE_URL gives, each with its connection options, or why it cannot be used.
/// The URL holds a password: no message repeats it.
fn database_hosts(url: &str) -> anyhow::Result<primary::HostList> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("postgres" | "postgresql")) {
        anyhow::bail!(
            "DATABASE_URL must be a PostgreSQL URL, postgres://user:password@host:port/database \
             (or postgresql://), not one starting {:?}",
            scheme.map_or_else(|| "without a scheme".to_owned(), |s| format!("{s}://"))
        );
    }
    primary::host_list(url, database_options)
}

/// The connection options of a URL of one host.
fn database_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).map_err(|error| {
        let mut message = format!("DATABASE_URL is not a valid PostgreSQL URL: {error}");
        if error.to_string().contains("port") {
            message.push_str(
                "; if the user name or password holds characters such as @ : / ? # % or a \
                 space, percent-encode them (@ as %40, : as %3A, / as %2F, # as %23, % as %25)",
            );
        }
        anyhow::anyhow!(message)
    })
}

/// Waits until the database takes a connection: services and their databases are started
/// together, and a database that is not up yet (refused, unreachable, still starting) is
/// tried again with a doubling delay, each failure logged with its cause, for up to `patience`.
/// Any other failure (a wrong password, a database that does not exist) fails at once.
async fn wait_for_database(options: &PgConnectOptions, patience: Duration) -> anyhow::Result<()> {
    use sqlx::Connection;
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let error = match sqlx::PgConnection::connect_with(options).await {
            Ok(connection) => {
                let _ = connection.close().await;
                if attempt > 1 {
                    tracing::info!(attempt, "the database takes connections");
                }
                return Ok(());
            }
            Err(error) => error,
        };
        let waiting = started.elapsed();
        if !not_up_yet(&error) || waiting + delay > patience {
            return Err(anyhow::Error::new(error).context(format!(
                "cannot connect to the database ({attempt} attempts in {} s;                  --db-startup-timeout is {} s)",
                waiting.as_secs(),
                patience.as_secs()
            )));
        }
        tracing::warn!(error = %error, attempt, retry_in = ?delay, "the database cannot be reached yet; waiting for it");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Whether a failure to connect means the database is not up (yet): worth waiting for.
fn not_up_yet(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        // 57P03 cannot_connect_now: starting up, shutting down, in recovery.
        sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
        _ => false,
    }
}

impl Store {
    /// Opens the service's database: the one at `database_url` when given, else the cluster of
    /// the service's own under `data_dir` (started, and initialised first if need be, with the
    /// server programs in `postgres_bin_dir`, found when `None`), which is returned too: the
    /// caller supervises it while serving and stops it last. When the store cannot connect,
    /// the cluster is stopped before the error is returned.
    pub async fn open(
        database_url: Option<&str>,
        data_dir: &Path,
        postgres_bin_dir: Option<&Path>,
        settings: &PoolSettings,
    ) -> anyhow::Result<(Store, Option<Arc<ManagedPostgres>>)> {
        let (hosts, cluster) = match database_url {
            Some(url) => (database_hosts(url)?, None),
            None => {
                let cluster = ManagedPostgres::start(data_dir, postgres_bin_dir).await?;
                let hosts = primary::HostList {
                    hosts: vec![cluster.connect_options()],
                    attrs: primary::SessionAttrs::Any,
                };
                (hosts, Some(Arc::new(cluster)))
            }
        };
        match Store::connect(hosts, settings)
            .await
            .context("cannot connect to the database and run the migrations")
        {
            Ok(store) => Ok((store, cluster)),
            Err(error) => {
                if let Some(cluster) = cluster {
                    cluster.stop_after_failure().await;
                }
                Err(error)
            }
        }
    }

    /// Connects and runs the migrations in `migrations/`. Later, while the database is down,
    /// calls fail within `settings.acquire_timeout` and the pool reconnects by itself when it
    /// is back. With several hosts, the service works on the primary and follows it.
    async fn connect(
        mut hosts: primary::HostList,
        settings: &PoolSettings,
    ) -> anyhow::Result<Self> {
        let statement_timeout = format!("{}", settings.statement_timeout.as_millis());
        for host in &mut hosts.hosts {
            *host = host
                .clone()
                .options([("statement_timeout", statement_timeout.as_str())]);
        }
        let pool_options = pool_options(settings.max_connections, settings.acquire_timeout);
        let store = if hosts.is_single() {
            let options = hosts.hosts.remove(0);
            wait_for_database(&options, settings.startup_timeout).await?;
            Store {
                pool: pool_options.connect_with(options).await?,
                primary: None,
                kept: None,
                dedicated: Arc::default(),
            }
        } else {
            let primary = Arc::new(primary::Primary::new(hosts));
            let probe = primary.wait(settings.startup_timeout).await?;
            let pool = pool_options.connect_with(primary.options()).await?;
            primary.register(pool.clone(), std::convert::identity);
            tokio::spawn(primary.clone().watch(probe));
            Store {
                pool,
                primary: Some(primary),
                kept: None,
                dedicated: Arc::default(),
            }
        };
        sqlx::migrate!("./migrations").run(&store.pool).await?;
        Ok(store)
    }

    /// The pool, or UNAVAILABLE at once while no database host is the primary: a call then
    /// fails fast rather than waiting for a connection that cannot come.
    fn pool(&self) -> Result<&PgPool, Error> {
        match &self.primary {
            Some(primary) if !primary.reachable() => Err(Error::Unavailable(
                "no database primary is reachable (a failover may be under way), try again later"
                    .to_owned(),
            )),
            _ => Ok(&self.pool),
        }
    }

    /// A connection of its own that receives PostgreSQL notifications on `channels`.
    pub async fn listen(&self, channels: &[&str]) -> Result<Listener, Error> {
        let mut listener = sqlx::postgres::PgListener::connect_with(self.pool()?)
            .await
            .map_err(translate)?;
        listener
            .listen_all(channels.iter().copied())
            .await
            .map_err(translate)?;
        Ok(Listener(listener))
    }

    pub async fn begin(&self) -> Result<Tx, Error> {
        // On a connection of `conn`, so that a dedicated store's transactions take the
        // connections it kept first.
        let conn = self.conn().await?;
        Transaction::begin(conn, None).await.map_err(translate)
    }

    /// A transaction on `conn`, a connection of [`Store::conn`] that stays the caller's when
    /// the transaction ends, to be kept for the next one ([`Store::keep`]).
    pub async fn begin_on<'c>(
        &self,
        conn: &'c mut PoolConnection<Postgres>,
    ) -> Result<Transaction<'c, Postgres>, Error> {
        Transaction::begin(&mut **conn, None)
            .await
            .map_err(translate)
    }

    /// Commits `tx`, begun with [`Store::begin`] or [`Store::begin_on`]; dropping a
    /// transaction instead rolls it back.
    pub async fn commit(&self, tx: Transaction<'_, Postgres>) -> Result<(), Error> {
        tx.commit().await.map_err(translate)
    }

    /// Rolls `tx` back now, releasing its row locks at once (a dropped transaction is rolled
    /// back only when its connection is next used). A failure is not reported: the
    /// connection's end rolls the transaction back just the same.
    pub async fn rollback(&self, tx: Tx) {
        let _ = tx.rollback().await;
    }

    /// Whether the database answers: a connection, and `select 1` on it. Only a failure to
    /// get the connection is translated (and so logged and counted); the failed statement is
    /// the answer readiness asks for, not an error of a call.
    pub async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        sqlx::query("select 1")
            .execute(&mut *conn)
            .await
            .map_err(|_| Error::Unavailable("the database does not answer".to_owned()))?;
        Ok(())
    }

    /// Forgets idempotency keys stored before `before`; their jobs stay. Returns how many
    /// were removed.
    pub async fn purge_keys(&self, before: DateTime<Utc>) -> Result<u64, Error> {
        idempotency::purge(self.pool()?, before).await
    }

    /// Writes one row (`write_probe`): whether the database takes writes now. A database out of
    /// disk space answers reads but fails every write.
    pub async fn probe_write(&self) -> Result<(), Error> {
        sqlx::query(
            "insert into write_probe (id, probed_at) values (true, now())
             on conflict (id) do update set probed_at = excluded.probed_at",
        )
        .execute(self.pool()?)
        .await
        .map_err(translate)?;
        Ok(())
    }

    /// A pooled connection for reads that need no transaction. A dedicated store gives one it
    /// kept, if it has one, and otherwise waits for the pool or for one to be kept, whichever
    /// comes first (a connection kept meanwhile must not sit idle while its pool is empty).
    pub async fn conn(&self) -> Result<PoolConnection<Postgres>, Error> {
        let pool = self.pool()?;
        let Some(kept) = &self.kept else {
            return pool.acquire().await.map_err(translate);
        };
        loop {
            let returned = kept.returned.notified();
            if let Some(conn) = kept.take() {
                return Ok(conn);
            }
            tokio::select! {
                conn = pool.acquire() => return conn.map_err(translate),
                () = returned => {}
            }
        }
    }

    /// Gives back a connection of [`Store::conn`] after a statement that completed: a
    /// dedicated store keeps it for its next use (see `Kept`), any other returns it to the
    /// pool. A connection whose statement failed or was abandoned is dropped instead, and the
    /// pool checks it.
    pub fn keep(&self, conn: PoolConnection<Postgres>) {
        match &self.kept {
            Some(kept) => kept.keep(conn, &self.pool),
            None => drop(conn),
        }
    }

    /// A store of its own `connections` connections to the same database, with the same
    /// settings, for batches: work that has it never waits for a connection the rest of the
    /// service holds, and the other way round. Batches run a few statements over and over,
    /// their parameters arrays of rows, whose plans do not depend on the values: PostgreSQL
    /// plans each once (`plan_cache_mode` generic) instead of again at every execution. Its
    /// connections are kept between batches ([`Store::keep`]) rather than given back to the
    /// pool, and its transactions ([`Store::begin`]) take those kept first.
    pub fn dedicated(&self, connections: u32) -> Store {
        fn generic_plans(options: PgConnectOptions) -> PgConnectOptions {
            options.options([("plan_cache_mode", "force_generic_plan")])
        }
        let options = match &self.primary {
            Some(primary) => primary.options(),
            None => (*self.pool.connect_options()).clone(),
        };
        let pool = pool_options(connections, self.pool.options().get_acquire_timeout())
            .connect_lazy_with(generic_plans(options));
        if let Some(primary) = &self.primary {
            primary.register(pool.clone(), generic_plans);
        }
        let store = Store {
            pool,
            primary: self.primary.clone(),
            kept: Some(Arc::default()),
            dedicated: Arc::default(),
        };
        self.dedicated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(store.clone());
        store
    }

    /// Closes the database connections, when the service stops: those of the stores made
    /// with [`Store::dedicated`] first, then this store's. The connections a dedicated store
    /// keeps are closed at once: dropped, they would go back to their pool, which tests each
    /// with a round trip, and after a stop that takes the database down (the service's own
    /// cluster) that test fails and is logged. Each pool then waits for its connections still
    /// in use, at most [`CLOSE_TIMEOUT`], and closes them; calls made afterwards fail.
    pub async fn close(&self) {
        let dedicated =
            std::mem::take(&mut *self.dedicated.lock().unwrap_or_else(|e| e.into_inner()));
        for store in dedicated.iter().chain([self]) {
            // Marks the pool closed at once, so that no connection is kept from now on.
            let closed = store.pool.close();
            if let Some(kept) = &store.kept {
                for conn in kept.drain() {
                    let _ = conn.close().await;
                }
            }
            if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
                tracing::warn!(
                    timeout = ?CLOSE_TIMEOUT,
                    "database connections still in use at the stop are cut off"
                );
            }
        }
    }

    /// How many connections the pool holds now, how many of them are idle, and its limit.
    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.pool.options().get_max_connections(),
        }
    }
}

/// A snapshot of the connection pool(s), for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open, idle or in use.
    pub size: u32,
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

impl std::ops::Add for PoolStats {
    type Output = PoolStats;

    /// Two pools counted as one.
    fn add(self, other: PoolStats) -> PoolStats {
        PoolStats {
            size: self.size + other.size,
            idle: self.idle + other.idle,
            max: self.max + other.max,
        }
    }
}

/// How many of a page's rows to read, given their stored sizes in order: rows until they weigh
/// more than `max_bytes` and are at least two. The last row read then tells the caller, which
/// cuts the page at `max_bytes` (with what else it adds to each item), that the page has more
/// after it. Lists read the sizes of a page's rows first (`document_bytes`, kept by the
/// database) and then only the documents within the budget, so a page of large rows never
/// holds, nor makes the database send, much more than `max_bytes`, whatever its page size.
pub(crate) fn rows_within(sizes: impl IntoIterator<Item = i32>, max_bytes: usize) -> usize {
    let mut bytes = 0usize;
    let mut taken = 0;
    for size in sizes {
        bytes = bytes.saturating_add(usize::try_from(size).unwrap_or(0));
        taken += 1;
        if bytes > max_bytes && taken >= 2 {
            break;
        }
    }
    taken
}

/// The one place a database error becomes a domain error.
pub(crate) fn translate(error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            tracing::warn!(error = %error, "database unavailable");
            Error::Unavailable("database unavailable, try again later".to_owned())
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some(sqlstate::QUERY_CANCELED) => {
            tracing::warn!(error = %error, "statement timed out");
            Error::DeadlineExceeded("the database did not answer in time".to_owned())
        }
        sqlx::Error::Database(db)
            if db.code().is_some_and(|code| {
                code.starts_with(sqlstate::CONNECTION_EXCEPTION)
                    || code.starts_with(sqlstate::SHUTTING_DOWN_OR_STARTING)
            }) =>
        {
            tracing::warn!(error = %error, "database unavailable");
            Error::Unavailable("database unavailable, try again later".to_owned())
        }
        // The server is a standby now (a failover under way): the primary is elsewhere, and
        // the host watch moves the pools to it (`primary`).
        sqlx::Error::Database(db)
            if db.code().as_deref() == Some(sqlstate::READ_ONLY_SQL_TRANSACTION) =>
        {
            tracing::warn!(error = %error, "the database takes no writes");
            Error::Unavailable(
                "the database takes no writes now (a failover may be under way), try again later"
                    .to_owned(),
            )
        }
        // PostgreSQL gave up one of two transactions waiting on each other (a deadlock) or
        // that could not both be serialised; nothing of it was written and a retry can pass.
        sqlx::Error::Database(db)
            if db
                .code()
                .is_some_and(|code| code.starts_with(sqlstate::TRANSACTION_ROLLBACK)) =>
        {
            tracing::warn!(error = %error, "the database rolled back a transaction in a conflict");
            Error::Unavailable(
                "the database rolled the change back in a conflict with another, try again"
                    .to_owned(),
            )
        }
        // Counted, so that readiness probes a write until one succeeds again
        // (`resource_errors`).
        sqlx::Error::Database(db)
            if db
                .code()
                .is_some_and(|code| code.starts_with(sqlstate::INSUFFICIENT_RESOURCES)) =>
        {
            RESOURCE_ERRORS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tracing::error!(error = %error, "the database is out of resources");
            let message = match db.code().as_deref() {
                Some(sqlstate::DISK_FULL) => "the database is out of disk space, try again later",
                Some(sqlstate::OUT_OF_MEMORY) => "the database is out of memory, try again later",
                Some(sqlstate::TOO_MANY_CONNECTIONS) => {
                    "the database has too many connections, try again later"
                }
                Some(sqlstate::CONFIGURATION_LIMIT_EXCEEDED) => {
                    "the database has reached a configured limit, try again later"
                }
                _ => "the database is out of resources, try again later",
            };
            Error::Unavailable(message.to_owned())
        }
        // A value the database cannot take (U+0000 in text, a time or number out of its
        // range). The edges check what callers send; this catches what they missed, as the
        // caller's error it is rather than an internal one.
        sqlx::Error::Database(db)
            if db
                .code()
                .is_some_and(|code| code.starts_with(sqlstate::DATA_EXCEPTION)) =>
        {
            tracing::warn!(error = %error, "the database refused a value");
            Error::invalid("", VALUE_REFUSED)
        }
        // A value sqlx cannot encode as a parameter (a time beyond PostgreSQL's range).
        sqlx::Error::Encode(_) => {
            tracing::warn!(error = %error, "a value cannot be sent to the database");
            Error::invalid("", VALUE_REFUSED)
        }
        _ => Error::internal(error),
    }
}

/// What a caller hears of a value the database refused.
const VALUE_REFUSED: &str = "the request holds a value the service cannot store or compare";

/// How many class-53 errors (out of disk, memory, connections) the database has answered in
/// this process. A process-wide count because errors are translated by this free function
/// at every call site, StartJob's batches included; a service compares it with the count at
/// its last successful write probe to know whether writes may be failing. With several
/// services in one process (tests), one that did not see the error merely probes once more.
static RESOURCE_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The number of class-53 errors so far: a service whose last successful write probe came
/// before the latest such error must assume writes fail until a probe succeeds.
pub fn resource_errors() -> u64 {
    RESOURCE_ERRORS.load(std::sync::atomic::Ordering::SeqCst)
}

/// Whether `error` is a unique-key violation.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some(sqlstate::UNIQUE_VIOLATION))
}

#[cfg(test)]
mod url_tests {
    use super::database_hosts;

    #[test]
    fn a_database_url_that_is_not_postgresql_is_refused_without_its_password() {
        let error = database_hosts("mysql://app:s3cret@db/jobs")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("\"mysql://\""), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        assert!(database_hosts("postgresql://app:pw@db:5433/jobs").is_ok());
        assert!(database_hosts("postgres://app@db/jobs?host=/run/pg").is_ok());
    }

    #[test]
    fn an_unencoded_character_in_the_password_gets_a_hint() {
        let error = database_hosts("postgres://app:p@ss:w#rd@db/jobs")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("percent-encode"), "{error}");
        assert!(!error.contains("w#rd"), "{error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_reads_rows_until_past_its_budget_and_at_least_two() {
        assert_eq!(rows_within([400, 400, 400, 400], 1000), 3);
        assert_eq!(rows_within([5000, 1, 1], 1000), 2);
        assert_eq!(rows_within([1, 1, 1], 1000), 3);
        assert_eq!(rows_within([], 1000), 0);
        assert_eq!(rows_within([5000], 1000), 1);
    }
}
