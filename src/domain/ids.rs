//! Identifiers in the shape Itential clients expect: 24 lowercase hex characters (a MongoDB
//! ObjectId's text form).

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Whether `s` is 24 lowercase hex characters.
pub fn is_object_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A job id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobId(String);

impl JobId {
    /// A new id: 4 bytes of seconds since the epoch, then 8 random bytes. Written by hand
    /// because it is ten lines, and because ids that grow with time keep the primary-key index
    /// append-mostly; the random part makes collisions as unlikely as a 64-bit guess.
    pub fn generate(now: chrono::DateTime<chrono::Utc>) -> Self {
        let mut bytes = [0u8; 12];
        let seconds = u32::try_from(now.timestamp().max(0)).unwrap_or(u32::MAX);
        bytes[..4].copy_from_slice(&seconds.to_be_bytes());
        rand::rng().fill_bytes(&mut bytes[4..]);
        JobId(hex::encode(bytes))
    }

    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if is_object_id(s) {
            Ok(JobId(s.to_owned()))
        } else {
            Err("must be 24 lowercase hex characters")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The account id of a user known only by name: the first 24 hex characters of the SHA-256 of
/// the username, so the same name always maps to the same id.
pub fn account_id_for_username(username: &str) -> String {
    let digest = Sha256::digest(username.as_bytes());
    hex::encode(&digest[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_job_ids_are_object_ids_and_differ() {
        let now = chrono::Utc::now();
        let a = JobId::generate(now);
        let b = JobId::generate(now);
        assert!(is_object_id(a.as_str()), "{a}");
        assert_ne!(a, b);
        assert_eq!(&a.as_str()[..8], &format!("{:08x}", now.timestamp()));
    }

    #[test]
    fn object_ids_are_lowercase_hex_of_length_24() {
        assert!(is_object_id("b0bc20ec3a3e5e90bac881e7"));
        assert!(!is_object_id("B0BC20EC3A3E5E90BAC881E7"));
        assert!(!is_object_id("b0bc20ec3a3e5e90bac881e"));
        assert!(!is_object_id("b0bc20ec3a3e5e90bac881eg"));
    }

    #[test]
    fn account_ids_are_stable_object_ids() {
        let id = account_id_for_username("admin");
        assert!(is_object_id(&id));
        assert_eq!(id, account_id_for_username("admin"));
        assert_ne!(id, account_id_for_username("admin2"));
    }
}
