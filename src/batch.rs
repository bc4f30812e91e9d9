//! Batches of concurrent calls, each batch written in one transaction: calls that arrive while
//! earlier ones are being committed wait in a queue and are then handled together, a few
//! batches in flight at once (while some wait for their commit to reach the disk, the next is
//! already gathering). StartJob (`service::group_commit`) and CompleteTask
//! (`engine::completions`) go through it.
//!
//! Each call in a batch keeps its own outcome; only a failure of the transaction itself fails
//! the batch. A transient one (database unavailable, too slow) is returned to every call in it,
//! any other is retried call by call so that one bad call cannot fail the others. A call is
//! answered only after its batch has committed (or failed); calls whose callers gave up before
//! their batch began are dropped from it.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::domain::Error;

/// One transaction for a batch of calls.
pub trait Batch: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    /// Handles `batch` in one transaction and returns each call's outcome, in batch order. An
    /// error is a failure of the transaction: nothing of the batch was written.
    fn apply(
        &self,
        batch: &[Queued<Self>],
    ) -> impl Future<Output = Result<Vec<Result<Self::Output, Error>>, Error>> + Send;
}

/// A call waiting in a batch.
pub struct Queued<B: Batch + ?Sized> {
    pub item: B::Item,
    reply: oneshot::Sender<Result<B::Output, Error>>,
}

impl<B: Batch + ?Sized> Queued<B> {
    /// Whether the caller has gone away (deadline, disconnect): its answer is not needed.
    pub fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// The queue of calls and the task that handles them in batches.
pub struct Batcher<B: Batch> {
    queue: mpsc::Sender<Queued<B>>,
}

impl<B: Batch> std::fmt::Debug for Batcher<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field(
                "queued",
                &(self.queue.max_capacity() - self.queue.capacity()),
            )
            .finish()
    }
}

impl<B: Batch> Batcher<B> {
    /// Starts the handling task: at most `max_batch` calls a batch, `concurrent` batches at
    /// once, `queue_size` calls waiting (callers beyond it wait to queue). The task ends when
    /// this handle is dropped and the queue is empty.
    pub fn spawn(handler: Arc<B>, queue_size: usize, max_batch: usize, concurrent: usize) -> Self {
        let (queue, receiver) = mpsc::channel(queue_size.max(1));
        tokio::spawn(run(receiver, handler, max_batch.max(1), concurrent.max(1)));
        Batcher { queue }
    }

    /// Queues a call and waits for its outcome.
    pub async fn call(&self, item: B::Item) -> Result<B::Output, Error> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Queued { item, reply })
            .await
            .map_err(|_| Error::Unavailable("the service is shutting down".to_owned()))?;
        outcome
            .await
            .map_err(|_| Error::internal(anyhow::anyhow!("a batch of calls was abandoned")))?
    }
}

/// Takes whatever has queued up (at most `max_batch`) each time a batch slot is free.
async fn run<B: Batch>(
    mut queue: mpsc::Receiver<Queued<B>>,
    handler: Arc<B>,
    max_batch: usize,
    concurrent: usize,
) {
    let slots = Arc::new(Semaphore::new(concurrent));
    loop {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut batch = Vec::with_capacity(max_batch);
        if queue.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let handler = handler.clone();
        tokio::spawn(async move {
            handle(&*handler, batch).await;
            drop(slot);
        });
    }
}

async fn handle<B: Batch>(handler: &B, batch: Vec<Queued<B>>) {
    let batch: Vec<Queued<B>> = batch.into_iter().filter(|q| !q.abandoned()).collect();
    if batch.is_empty() {
        return;
    }
    tracing::debug!(size = batch.len(), "handling a batch");
    match handler.apply(&batch).await {
        Ok(outcomes) => {
            for (queued, outcome) in batch.into_iter().zip(outcomes) {
                // A caller that has gone away no longer needs its answer.
                let _ = queued.reply.send(outcome);
            }
        }
        Err(Error::Unavailable(message)) => {
            answer_all(batch, || Error::Unavailable(message.clone()))
        }
        Err(Error::DeadlineExceeded(message)) => {
            answer_all(batch, || Error::DeadlineExceeded(message.clone()))
        }
        Err(error) if batch.len() == 1 => {
            if let Some(queued) = batch.into_iter().next() {
                let _ = queued.reply.send(Err(error));
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, size = batch.len(), "a batch failed; retrying each call alone");
            for queued in batch {
                let outcome = match handler.apply(std::slice::from_ref(&queued)).await {
                    Ok(mut outcomes) => outcomes.pop().expect("one outcome a call"),
                    Err(error) => Err(error),
                };
                let _ = queued.reply.send(outcome);
            }
        }
    }
}

fn answer_all<B: Batch>(batch: Vec<Queued<B>>, error: impl Fn() -> Error) {
    for queued in batch {
        let _ = queued.reply.send(Err(error()));
    }
}
