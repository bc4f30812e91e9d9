//! Caches bounded by the memory of what they hold (an estimate), not by a count: one entry
//! may be a few bytes or megabytes (a workflow of thousands of tasks), so a count bounds
//! nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use prost::bytes::Bytes;
use serde_json::{Map, Value};

use crate::domain::graph::JobTask;

/// A cache of values keyed by text, bounded by the estimated memory of what it holds.
pub type WeightedCache<V> = quick_cache::sync::Cache<String, Weighed<V>, ByWeight>;

/// A cached value and its estimated memory, computed once when it is cached.
#[derive(Debug, Clone)]
pub struct Weighed<V> {
    pub value: V,
    pub bytes: u64,
}

/// Weighs a cache entry by its estimated memory.
#[derive(Debug, Clone, Copy)]
pub struct ByWeight;

impl<V> quick_cache::Weighter<String, Weighed<V>> for ByWeight {
    fn weight(&self, key: &String, value: &Weighed<V>) -> u64 {
        key.len() as u64 + value.bytes
    }
}

/// A cache of at most `bytes` (estimated), in one shard: an entry may be as large as the
/// whole budget (quick_cache splits the budget between its shards otherwise), and a lock per
/// call is no cost next to the database work each call does.
pub fn weighted_cache<V: Clone>(bytes: u64) -> WeightedCache<V> {
    one_shard_cache(bytes, ByWeight)
}

/// A cache of at most `bytes` as `weighter` weighs its entries, in one shard (see
/// [`weighted_cache`]).
pub fn one_shard_cache<K, V, W>(bytes: u64, weighter: W) -> quick_cache::sync::Cache<K, V, W>
where
    K: Eq + std::hash::Hash,
    V: Clone,
    W: quick_cache::Weighter<K, V> + Clone,
{
    let options = quick_cache::OptionsBuilder::new()
        .shards(1)
        .estimated_items_capacity(256)
        .weight_capacity(bytes.max(1))
        .build()
        .expect("the cache options are valid");
    quick_cache::sync::Cache::with_options(
        options,
        weighter,
        Default::default(),
        Default::default(),
    )
}

/// Bytes derived from a task graph (its encoding in an answer), by the graph they were derived
/// from. A graph is known by the address of its shared `tasks` (an entry keeps a `Weak` of its
/// `tasks` and `transitions`, so that address cannot be taken by another graph while the
/// entry lives): every job of a workflow revision holds the same `Arc`s, so the same `Arc`s
/// are the same graph, and a graph's revision and digest need not travel with every job.
/// Bounded by the bytes it holds; the graphs used least are dropped first.
pub struct GraphMemo {
    cache: quick_cache::sync::Cache<usize, Derived, ByLength>,
}

#[derive(Clone)]
struct Derived {
    tasks: Weak<BTreeMap<String, JobTask>>,
    transitions: Weak<Map<String, Value>>,
    bytes: Bytes,
}

/// Weighs derived bytes by their length, plus their entry.
#[derive(Clone, Copy)]
struct ByLength;

impl quick_cache::Weighter<usize, Derived> for ByLength {
    fn weight(&self, _: &usize, derived: &Derived) -> u64 {
        (derived.bytes.len() + std::mem::size_of::<Derived>()) as u64
    }
}

impl GraphMemo {
    /// A memo of at most `bytes`, in one shard (one graph may take the whole budget).
    pub fn new(bytes: u64) -> Self {
        GraphMemo {
            cache: one_shard_cache(bytes, ByLength),
        }
    }

    /// The bytes `derive` makes of the graph: remembered, or derived now (and remembered).
    /// A graph no one else holds (the caller's `tasks` is their only `Arc`: a job read back
    /// with its own run state, a replay) is derived and not remembered: no other job will
    /// bring it, and keeping it would only push out the graphs that are shared.
    pub fn get(
        &self,
        tasks: &Arc<BTreeMap<String, JobTask>>,
        transitions: &Arc<Map<String, Value>>,
        derive: impl FnOnce(&Arc<BTreeMap<String, JobTask>>, &Arc<Map<String, Value>>) -> Vec<u8>,
    ) -> Bytes {
        let key = Arc::as_ptr(tasks) as usize;
        if let Some(hit) = self.cache.get(&key) {
            if std::ptr::eq(hit.tasks.as_ptr(), Arc::as_ptr(tasks))
                && std::ptr::eq(hit.transitions.as_ptr(), Arc::as_ptr(transitions))
            {
                return hit.bytes;
            }
        }
        let bytes = Bytes::from(derive(tasks, transitions));
        if Arc::strong_count(tasks) == 1 {
            return bytes;
        }
        self.cache.insert(
            key,
            Derived {
                tasks: Arc::downgrade(tasks),
                transitions: Arc::downgrade(transitions),
                bytes: bytes.clone(),
            },
        );
        bytes
    }

    /// How many graphs are remembered.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether no graph is remembered.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The bytes the memo holds, entries included.
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }
}
