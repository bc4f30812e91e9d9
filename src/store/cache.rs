//! Caches bounded by the memory of what they hold (an estimate), not by a count: one entry
//! may be a few bytes or megabytes (a workflow of thousands of tasks), so a count bounds
//! nothing.

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
