//! PostgreSQL storage: SQL only. Database errors are translated into domain errors here, so
//! SQLSTATEs and constraint names never leave this module.

pub mod idempotency;
pub mod jobs;
pub mod workflows;

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::Error;

pub type Tx = Transaction<'static, Postgres>;

/// The service's database: a connection pool with the schema migrated.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects and runs the migrations in `migrations/`.
    pub async fn connect(options: PgConnectOptions, max_connections: u32) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    pub async fn begin(&self) -> Result<Tx, Error> {
        self.pool.begin().await.map_err(translate)
    }

    /// A pooled connection for reads that need no transaction.
    pub async fn conn(&self) -> Result<PoolConnection<Postgres>, Error> {
        self.pool.acquire().await.map_err(translate)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The one place a database error becomes a domain error.
pub(crate) fn translate(error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            tracing::warn!(error = %error, "database unavailable");
            Error::Unavailable("database unavailable, try again later".to_owned())
        }
        _ => Error::internal(error),
    }
}

/// Whether `error` is a unique-key violation.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}
