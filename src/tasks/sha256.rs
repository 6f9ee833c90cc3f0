//! `sha256`: the hex SHA-256 digest of each item's bytes. CPU-bound; `rounds` chains the hash
//! (round n hashes the 32-byte digest of round n-1) to make it as heavy as a benchmark needs.
use sha2::{Digest, Sha256 as Hasher};

use super::{integer_param, reject_unknown_params, ItemProcessor, Task};
use crate::model::Payload;

/// Most rounds a batch may ask for.
const MAX_ROUNDS: u64 = 1_000_000;

/// Hashes each item.
pub(crate) struct Sha256;

impl Task for Sha256 {
    fn name(&self) -> &'static str {
        "sha256"
    }

    fn description(&self) -> &'static str {
        "hex SHA-256 digest of each item; params.rounds (default 1) chains the hash"
    }

    fn params_schema(&self) -> &'static str {
        r#"{"type":"object","properties":{"rounds":{"type":"integer","minimum":1,"maximum":1000000,"default":1}},"additionalProperties":false}"#
    }

    fn processor(&self, params: &serde_json::Value) -> Result<Box<dyn ItemProcessor>, String> {
        reject_unknown_params(params, &["rounds"])?;
        let rounds = integer_param(params, "rounds", 1, MAX_ROUNDS)?;
        if rounds == 0 {
            return Err("rounds must be at least 1".to_owned());
        }
        Ok(Box::new(move |item: &Payload| {
            Ok(Payload::Text(digest(item.as_bytes(), rounds)))
        }))
    }
}

/// The hex digest after `rounds` chained rounds.
pub(crate) fn digest(bytes: &[u8], rounds: u64) -> String {
    let mut hash = Hasher::digest(bytes);
    for _ in 1..rounds {
        hash = Hasher::digest(hash);
    }
    hex::encode(hash)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, text};
    use super::*;

    #[test]
    fn known_digests() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            run(&Sha256, serde_json::json!({}), &["abc"]),
            vec![text(abc)]
        );
        let twice = digest(&hex::decode(abc).expect("hex"), 1);
        assert_eq!(
            run(&Sha256, serde_json::json!({"rounds": 2}), &["abc"]),
            vec![text(&twice)]
        );
    }

    #[test]
    fn rejects_bad_rounds() {
        assert!(Sha256.validate(&serde_json::json!({"rounds": 0})).is_err());
        assert!(Sha256
            .validate(&serde_json::json!({"rounds": "many"}))
            .is_err());
        assert!(Sha256
            .validate(&serde_json::json!({"rounds": 2_000_000}))
            .is_err());
    }
}
