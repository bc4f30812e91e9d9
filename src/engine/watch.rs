//! WatchJob streams: a job's stored events after the sequence the client saw, then new ones as
//! notifications announce them, until the job's final event.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch, Semaphore};

use crate::domain::run::JobEvent;
use crate::domain::Error;
use crate::store::{runs, Store};

/// Events read from the database at a time.
const EVENTS_PER_READ: i64 = 256;
/// How often a watcher looks without being told (a lost notification).
const RECHECK: Duration = Duration::from_secs(2);

pub struct Watchers {
    /// Job ids with new events (`""`: look at every job).
    news: broadcast::Sender<String>,
    slots: Arc<Semaphore>,
}

impl Watchers {
    pub fn new(max: usize) -> Self {
        Watchers {
            news: broadcast::channel(1024).0,
            slots: Arc::new(Semaphore::new(max)),
        }
    }

    pub fn wake(&self, job_id: &str) {
        let _ = self.news.send(job_id.to_owned());
    }

    pub fn wake_all(&self) {
        let _ = self.news.send(String::new());
    }

    /// Opens a stream of `job_id`'s events after `after`; RESOURCE_EXHAUSTED when the instance
    /// serves its most watchers already.
    pub fn watch(
        &self,
        store: Store,
        job_id: String,
        after: u64,
        mut stop: watch::Receiver<bool>,
    ) -> Result<mpsc::Receiver<Result<JobEvent, Error>>, Error> {
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(
                "this instance serves its most job watchers already: retry later".to_owned(),
            )
        })?;
        let (sender, receiver) = mpsc::channel(64);
        let mut news = self.news.subscribe();
        tokio::spawn(async move {
            let _slot = slot;
            let mut after = after;
            loop {
                // Whether the job had ended before its events are read: then what is read is
                // all there will be, and a watcher that has seen the final event already (it
                // resumed after it) gets an empty stream that ends.
                let read = async {
                    let mut conn = store.conn().await?;
                    let ended = runs::has_ended(&mut conn, &job_id).await?;
                    let events = runs::events(&mut conn, &job_id, after, EVENTS_PER_READ).await?;
                    Ok::<_, Error>((ended, events))
                };
                let (ended, events) = match read.await {
                    Ok(read) => read,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                let full = events.len() as i64 == EVENTS_PER_READ;
                for event in events {
                    after = event.sequence;
                    let last = event.is_final();
                    if sender.send(Ok(event)).await.is_err() || last {
                        return;
                    }
                }
                if full {
                    continue;
                }
                if ended {
                    return;
                }
                // Wait for news of this job, a look at every job, the recheck, or the client
                // going away.
                let deadline = tokio::time::sleep(RECHECK);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = sender.closed() => return,
                        _ = stop.wait_for(|s| *s) => return,
                        _ = &mut deadline => break,
                        news = news.recv() => match news {
                            Ok(id) if id.is_empty() || id == job_id => break,
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Lagged(_)) => break,
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                    }
                }
            }
        });
        Ok(receiver)
    }
}
