//! Redis key and channel names. Every name starts with a hash tag of the key prefix, so one
//! tenant's keys share a slot and the same code (Lua scripts that touch several keys included)
//! runs unchanged on Redis Cluster, and tests or tenants sharing one Redis never see each
//! other's keys.

/// The consumer group every worker reads the chunk stream through.
pub const WORKER_GROUP: &str = "workers";

/// The names derived from one key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix` (`SLUICE_KEY_PREFIX`, default `sluice`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream of chunk messages workers read: `{prefix}:chunks`.
    pub fn chunk_stream(&self) -> String {
        format!("{{{}}}:chunks", self.prefix)
    }

    /// The sorted set of chunks waiting to be retried, scored by when they are due (Unix
    /// milliseconds): `{prefix}:retry`.
    pub fn retry_set(&self) -> String {
        format!("{{{}}}:retry", self.prefix)
    }

    /// The capped stream of chunks that failed every attempt: `{prefix}:dead`.
    pub fn dead_letter_stream(&self) -> String {
        format!("{{{}}}:dead", self.prefix)
    }

    /// The lock that serializes updates of one batch: `{prefix}:lock:<batch id>`.
    pub fn batch_lock(&self, batch_id: &str) -> String {
        format!("{{{}}}:lock:{batch_id}", self.prefix)
    }

    /// The lock that lets one reconciler pass run at a time: `{prefix}:reconcile`.
    pub fn reconcile_lock(&self) -> String {
        format!("{{{}}}:reconcile", self.prefix)
    }

    /// The Pub/Sub channel progress events are published on: `{prefix}:events`.
    pub fn event_channel(&self) -> String {
        format!("{{{}}}:events", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_the_prefix_hash_tag() {
        let keys = Keys::new("t1");
        assert_eq!(keys.chunk_stream(), "{t1}:chunks");
        assert_eq!(keys.retry_set(), "{t1}:retry");
        assert_eq!(keys.dead_letter_stream(), "{t1}:dead");
        assert_eq!(keys.event_channel(), "{t1}:events");
        assert_eq!(keys.batch_lock("b"), "{t1}:lock:b");
        assert_eq!(keys.reconcile_lock(), "{t1}:reconcile");
    }
}
