//! Tokens already verified, so that a client sending the same token on every call (as they do)
//! pays for checking its signature and parsing its claims once, not on every call.
//!
//! An entry is the caller a token names and the token's expiry. It is used only while the token
//! has not expired (with the same leeway as the full check) and the keys are those it was
//! verified with (a key set fetched again drops it), so a hit decides exactly what the full check
//! would: audience, issuer, `nbf` and `iat` were checked once and cannot change for the same
//! token. Refused tokens are not kept. The memory is bounded: at most [`BUDGET_BYTES`] of tokens
//! and callers, and a token longer than [`MAX_TOKEN_BYTES`] is not kept.

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::domain::Caller;
use crate::store::cache::one_shard_cache;

/// The most memory (estimated) the kept tokens take.
const BUDGET_BYTES: u64 = 4 * 1024 * 1024;
/// Tokens longer than this are checked on every call.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Clone)]
struct Entry {
    caller: Caller,
    /// `exp`, seconds since the epoch.
    expires: u64,
    /// The generation of the key set the token was verified with (0 for keys read once).
    keys: u64,
}

#[derive(Clone, Copy)]
struct ByBytes;

impl Weighter<String, Entry> for ByBytes {
    fn weight(&self, token: &String, entry: &Entry) -> u64 {
        let caller = &entry.caller;
        let strings = caller.sub.len()
            + caller.username.len()
            + caller.groups.iter().map(|g| g.len() + 24).sum::<usize>()
            + caller.roles.iter().map(|r| r.len() + 24).sum::<usize>();
        (token.len() + strings + std::mem::size_of::<Entry>() + 64) as u64
    }
}

pub(super) struct VerifiedTokens {
    cache: Cache<String, Entry, ByBytes>,
    /// The clock skew accepted on `exp`, in seconds, as the full check.
    leeway: u64,
}

impl VerifiedTokens {
    pub(super) fn new(leeway: u64) -> Self {
        VerifiedTokens {
            cache: one_shard_cache(BUDGET_BYTES, ByBytes),
            leeway,
        }
    }

    /// The caller of `token` when it was verified with the keys of generation `keys` and has not
    /// expired at `now` (seconds since the epoch).
    pub(super) fn get(&self, token: &str, keys: u64, now: u64) -> Option<Caller> {
        let entry = self.cache.get(token)?;
        if entry.keys != keys || entry.expires.saturating_add(self.leeway) < now {
            // Expired or verified with other keys: the full check decides (and says why).
            self.cache.remove(token);
            return None;
        }
        Some(entry.caller)
    }

    /// Keeps `token`, just verified with the keys of generation `keys`.
    pub(super) fn insert(&self, token: &str, caller: &Caller, expires: u64, keys: u64) {
        if token.len() <= MAX_TOKEN_BYTES {
            let entry = Entry {
                caller: caller.clone(),
                expires,
                keys,
            };
            self.cache.insert(token.to_owned(), entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            sub: "s".into(),
            username: "u".into(),
            groups: vec!["g".into()],
            roles: vec!["admin".into()],
        }
    }

    #[test]
    fn a_kept_token_is_used_until_it_expires_with_the_leeway() {
        let tokens = VerifiedTokens::new(60);
        tokens.insert("t", &caller(), 1_000, 0);
        assert_eq!(tokens.get("t", 0, 900), Some(caller()));
        assert_eq!(tokens.get("t", 0, 1_060), Some(caller()));
        assert_eq!(tokens.get("t", 0, 1_061), None);
        // An expired entry is gone, not just skipped.
        assert_eq!(tokens.get("t", 0, 900), None);
        assert_eq!(tokens.get("other", 0, 900), None);
    }

    #[test]
    fn a_token_verified_with_other_keys_is_checked_again() {
        let tokens = VerifiedTokens::new(0);
        tokens.insert("t", &caller(), 1_000, 3);
        assert_eq!(tokens.get("t", 4, 900), None);
        assert_eq!(tokens.get("t", 3, 900), None);
    }

    #[test]
    fn the_kept_tokens_stay_in_their_budget() {
        let tokens = VerifiedTokens::new(0);
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        tokens.insert(&long, &caller(), 1_000, 0);
        assert_eq!(tokens.get(&long, 0, 900), None);
        let token = "y".repeat(MAX_TOKEN_BYTES - 8);
        for n in 0..2_000 {
            tokens.insert(&format!("{token}{n}"), &caller(), 1_000, 0);
        }
        assert!(tokens.cache.weight() <= BUDGET_BYTES);
        assert!(tokens.cache.len() < 2_000);
    }
}
