//! Compiled workflows by name, each with the revision it was compiled from (and that
//! revision's groups): what starting a job needs of its workflow (the parsed document, its
//! input schema, its job graph), built once per revision. Shared by StartJob's group commit
//! and the engine's child jobs.

use std::sync::Arc;

use sqlx::PgConnection;

use super::cache::{weighted_cache, Weighed, WeightedCache};
use super::workflows::{self, StartTarget};
use crate::domain::{CompiledWorkflow, Error};

pub struct CompiledWorkflows {
    cache: WeightedCache<(StartTarget, Arc<CompiledWorkflow>)>,
}

impl std::fmt::Debug for CompiledWorkflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledWorkflows")
            .field("workflows", &self.cache.len())
            .field("bytes", &self.cache.weight())
            .finish()
    }
}

impl CompiledWorkflows {
    /// A cache of at most `bytes` (estimated).
    pub fn new(bytes: u64) -> Self {
        CompiledWorkflows {
            cache: weighted_cache(bytes),
        }
    }

    /// The memory the compiled workflows hold (estimated).
    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }

    /// Forgets workflow `name` (it was deleted); returns what was cached of it.
    pub fn forget(&self, name: &str) -> Option<Arc<CompiledWorkflow>> {
        self.cache.remove(name).map(|(_, cached)| cached.value.1)
    }

    /// The last revision of workflow `name` compiled here, with its groups, if cached. It may
    /// have been replaced or deleted since (by another instance too): a start from it must
    /// check that the revision is still the stored one (`runs::insert_started`).
    pub fn latest(&self, name: &str) -> Option<(StartTarget, Arc<CompiledWorkflow>)> {
        self.cache.get(name).map(|cached| cached.value)
    }

    /// The workflow at the target's revision, parsed and compiled: from the cache when it
    /// holds that revision, else read (the caller's transaction holds the row lock taken by
    /// [`workflows::lock_for_start`]) and cached. A revision changes whenever the workflow is
    /// replaced, whichever instance does it, so the cache is never stale.
    pub async fn get(
        &self,
        conn: &mut PgConnection,
        target: &StartTarget,
    ) -> Result<Arc<CompiledWorkflow>, Error> {
        if let Some(cached) = self.cache.get(&target.name) {
            let (cached_target, compiled) = cached.value;
            if cached_target.revision == target.revision {
                return Ok(compiled);
            }
        }
        let workflow = workflows::get(conn, &target.name).await?;
        let compiled = Arc::new(CompiledWorkflow::compile(workflow.document));
        self.cache.insert(
            target.name.clone(),
            Weighed {
                value: (target.clone(), compiled.clone()),
                bytes: compiled.weight() as u64,
            },
        );
        Ok(compiled)
    }
}
