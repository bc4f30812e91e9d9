//! Handing tasks to workers: each open PollTasks stream registers the apps it serves and how
//! many tasks it may hold; one dispatcher an instance claims scheduled tasks for every stream
//! with room (`FOR UPDATE SKIP LOCKED`, so instances never hand out one task twice) whenever a
//! notification says tasks are ready, a stream opens or finishes a task, and at every sweep.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use uuid::Uuid;

use crate::domain::run::WorkerTask;
use crate::domain::Error;
use crate::store::{runs, Store};

struct Stream {
    worker_id: String,
    apps: Vec<String>,
    max_tasks: u32,
    /// Lease tokens of the tasks handed to this stream and not finished yet.
    held: HashSet<Uuid>,
    sender: mpsc::Sender<Result<WorkerTask, Error>>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    streams: BTreeMap<u64, Stream>,
    /// Which stream holds each handed-out task.
    tokens: HashMap<Uuid, u64>,
}

/// The streams that serve one set of apps: a worker id to record on claims, and each stream's
/// id with its room.
type Group = (String, Vec<(u64, u32)>);

pub struct Dispatcher {
    state: Mutex<State>,
    wake: Notify,
    max_streams: usize,
}

impl Dispatcher {
    pub fn new(max_streams: usize) -> Self {
        Dispatcher {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            max_streams,
        }
    }

    /// Tasks may be ready: claim for the streams with room.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Opens a stream; RESOURCE_EXHAUSTED when the instance serves its most streams already.
    pub fn register(
        &self,
        worker_id: String,
        apps: Vec<String>,
        max_tasks: u32,
    ) -> Result<mpsc::Receiver<Result<WorkerTask, Error>>, Error> {
        let mut state = self.state.lock().expect("dispatcher state");
        state.streams.retain(|_, stream| !stream.sender.is_closed());
        if state.streams.len() >= self.max_streams {
            return Err(Error::ResourceExhausted(format!(
                "this instance serves {} task streams already: retry later or on another instance",
                self.max_streams
            )));
        }
        let (sender, receiver) = mpsc::channel(max_tasks as usize);
        let id = state.next_id;
        state.next_id += 1;
        state.streams.insert(
            id,
            Stream {
                worker_id,
                apps,
                max_tasks,
                held: HashSet::new(),
                sender,
            },
        );
        drop(state);
        self.wake();
        Ok(receiver)
    }

    /// A task handed out from this instance was completed: its stream has room again.
    pub fn released(&self, token: Uuid) {
        let mut state = self.state.lock().expect("dispatcher state");
        if let Some(stream_id) = state.tokens.remove(&token) {
            if let Some(stream) = state.streams.get_mut(&stream_id) {
                stream.held.remove(&token);
            }
        }
        drop(state);
        self.wake();
    }

    /// Claims and hands out tasks until `stop`: at every wake and every `sweep` (which also
    /// forgets tasks that streams no longer hold, finished through another instance or
    /// expired).
    pub async fn run(
        &self,
        store: Store,
        lease: Duration,
        sweep: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(sweep);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let swept = tokio::select! {
                _ = stop.wait_for(|s| *s) => {
                    // Open streams end: their workers reconnect to another instance.
                    self.state.lock().expect("dispatcher state").streams.clear();
                    return;
                }
                _ = self.wake.notified() => false,
                _ = ticks.tick() => true,
            };
            if swept {
                if let Err(error) = self.reconcile(&store).await {
                    tracing::warn!(error = %error, "cannot reconcile the tasks workers hold");
                }
            }
            if let Err(error) = self.dispatch(&store, lease).await {
                tracing::warn!(error = %error, "cannot hand tasks to workers; retrying");
            }
        }
    }

    /// Forgets closed streams and tasks no longer held. A closed stream's tasks stay leased
    /// until their deadlines: the worker may still be running them (a network blip closed its
    /// stream) and may heartbeat and complete them, as the contract promises.
    async fn reconcile(&self, store: &Store) -> Result<(), Error> {
        let held: Vec<Uuid> = {
            let mut state = self.state.lock().expect("dispatcher state");
            let state = &mut *state;
            state.streams.retain(|_, stream| !stream.sender.is_closed());
            let streams = &state.streams;
            state.tokens.retain(|_, id| streams.contains_key(id));
            state.tokens.keys().copied().collect()
        };
        if held.is_empty() {
            return Ok(());
        }
        let mut conn = store.conn().await?;
        let running: HashSet<Uuid> = runs::still_running(&mut conn, &held)
            .await?
            .into_iter()
            .collect();
        let mut state = self.state.lock().expect("dispatcher state");
        let gone: Vec<Uuid> = held.into_iter().filter(|t| !running.contains(t)).collect();
        for token in gone {
            if let Some(stream_id) = state.tokens.remove(&token) {
                if let Some(stream) = state.streams.get_mut(&stream_id) {
                    stream.held.remove(&token);
                }
            }
        }
        Ok(())
    }

    /// One round: for each set of apps, claims as many tasks as its streams have room for and
    /// shares them out.
    async fn dispatch(&self, store: &Store, lease: Duration) -> Result<(), Error> {
        // Streams with room, grouped by the apps they serve.
        let groups: BTreeMap<Vec<String>, Group> = {
            let mut state = self.state.lock().expect("dispatcher state");
            state.streams.retain(|_, stream| !stream.sender.is_closed());
            let mut groups: BTreeMap<Vec<String>, Group> = BTreeMap::new();
            for (id, stream) in &state.streams {
                let room = stream.max_tasks.saturating_sub(stream.held.len() as u32);
                if room > 0 {
                    let mut apps = stream.apps.clone();
                    apps.sort();
                    apps.dedup();
                    let group = groups
                        .entry(apps)
                        .or_insert_with(|| (stream.worker_id.clone(), Vec::new()));
                    group.1.push((*id, room));
                }
            }
            groups
        };
        if groups.is_empty() {
            return Ok(());
        }
        let mut conn = store.conn().await?;
        for (apps, (worker_id, streams)) in groups {
            let room: u32 = streams.iter().map(|(_, room)| room).sum();
            let tasks = runs::claim(&mut conn, &apps, i64::from(room), lease, &worker_id).await?;
            if tasks.is_empty() {
                continue;
            }
            let unsent = {
                let mut state = self.state.lock().expect("dispatcher state");
                let mut slots = streams
                    .iter()
                    .flat_map(|(id, room)| std::iter::repeat_n(*id, *room as usize));
                let mut unsent = Vec::new();
                for task in tasks {
                    let token = Uuid::parse_str(&task.task_token).expect("the store issues uuids");
                    let sent = slots.next().and_then(|id| {
                        let stream = state.streams.get_mut(&id)?;
                        stream.sender.try_send(Ok(task)).ok()?;
                        stream.held.insert(token);
                        Some(id)
                    });
                    match sent {
                        Some(id) => {
                            state.tokens.insert(token, id);
                        }
                        None => unsent.push(token),
                    }
                }
                unsent
            };
            // A stream that closed meanwhile: its tasks go back at once.
            if !unsent.is_empty() {
                runs::end_leases(&mut conn, &unsent).await?;
            }
        }
        Ok(())
    }
}
