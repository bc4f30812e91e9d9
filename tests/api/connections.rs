//! The connections of batches (StartJob's group commit, CompleteTask's): kept between batches
//! instead of being given back to the pool, which checks each returned connection with a round
//! trip that the next batch would wait for. Keeping them must neither stall a batch nor hand
//! it a dead connection.

use std::path::Path;
use std::time::{Duration, Instant};

use job_service::store::{PoolSettings, Store};

use crate::helpers::fresh_database;

/// A store on a fresh database whose calls wait up to 30 s for a connection.
async fn store() -> Store {
    let settings = PoolSettings {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(30),
        statement_timeout: Duration::from_secs(30),
        startup_timeout: Duration::from_secs(30),
    };
    let url = fresh_database().await;
    let (store, _) = Store::open(Some(&url), Path::new("unused"), None, &settings)
        .await
        .unwrap();
    store
}

async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_connection_kept_is_used_again_by_the_next_batch() {
    let batches = store().await.dedicated(2);
    let mut conn = batches.conn().await.unwrap();
    let first = backend_pid(&mut conn).await;
    batches.keep(conn);
    let mut conn = batches.conn().await.unwrap();
    assert_eq!(backend_pid(&mut conn).await, first);

    // A transaction on a kept connection leaves it the caller's, to be kept again.
    let mut tx = batches.begin_on(&mut conn).await.unwrap();
    sqlx::query("create table kept (n int)")
        .execute(&mut *tx)
        .await
        .unwrap();
    batches.commit(tx).await.unwrap();
    batches.keep(conn);
    let mut conn = batches.conn().await.unwrap();
    assert_eq!(backend_pid(&mut conn).await, first);
}

#[tokio::test]
async fn a_batch_waiting_for_a_connection_gets_the_one_kept_meanwhile() {
    // One connection: the second batch waits for the pool, which will not have one, since the
    // first batch keeps its connection instead of giving it back.
    let batches = store().await.dedicated(1);
    let mut held = batches.conn().await.unwrap();
    let pid = backend_pid(&mut held).await;
    let waiting = tokio::spawn({
        let batches = batches.clone();
        async move {
            let started = Instant::now();
            let mut conn = batches.conn().await.unwrap();
            (backend_pid(&mut conn).await, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "no connection was free");
    batches.keep(held);
    let (got, waited) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting batch got the kept connection, not the pool's timeout")
        .unwrap();
    assert_eq!(got, pid);
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn a_connection_kept_idle_for_a_while_is_checked_before_use() {
    let store = store().await;
    let batches = store.dedicated(2);
    let mut conn = batches.conn().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    batches.keep(conn);
    // The server ends that connection (a restart, an administrator) while it is kept.
    let mut admin = store.conn().await.unwrap();
    let ended: bool = sqlx::query_scalar("select pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut *admin)
        .await
        .unwrap();
    assert!(ended);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Idle for over a second: it goes back to the pool, whose check finds it dead, and the
    // batch gets a working connection.
    let mut conn = batches.conn().await.unwrap();
    let now = backend_pid(&mut conn).await;
    assert_ne!(now, pid);
}
