//! Redis key and channel names. Every name starts with a hash tag of the key prefix, so one
//! tenant's keys share a slot and the same code runs unchanged on Redis Cluster, and tests or
//! tenants sharing one Redis never see each other's keys.

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

    /// The lock that serializes updates of one batch: `{prefix}:lock:<batch id>`.
    pub fn batch_lock(&self, batch_id: &str) -> String {
        format!("{{{}}}:lock:{batch_id}", self.prefix)
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
        assert_eq!(keys.event_channel(), "{t1}:events");
        assert_eq!(keys.batch_lock("b"), "{t1}:lock:b");
    }
}
