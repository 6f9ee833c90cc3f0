//! A short-lived lock in Redis (`SET NX PX` with a random token, released by a
//! compare-and-delete script), for work that must not run twice at once: updates of one batch
//! ([`crate::progress`]) and a reconciler pass. It expires on its own if its holder dies.
use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};

use crate::error::{Error, Result};

/// Pause between attempts to take a held lock.
const RETRY_PAUSE: Duration = Duration::from_millis(2);

/// Deletes the lock only if this holder still owns it.
const RELEASE_SCRIPT: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// A held lock. Released explicitly (release is async); if its holder drops it without
/// releasing, it expires after its time to live.
#[must_use = "a lock is held until released or expired"]
#[derive(Debug)]
pub struct RedisLock {
    client: Client,
    key: String,
    token: String,
}

impl RedisLock {
    /// Takes the lock `key` for `ttl` if it is free; `None` if someone holds it.
    pub async fn try_acquire(client: &Client, key: &str, ttl: Duration) -> Result<Option<Self>> {
        let token = uuid::Uuid::now_v7().simple().to_string();
        let taken: Option<String> = client
            .set(
                key,
                token.as_str(),
                Some(Expiration::PX(ttl.as_millis().max(1) as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(taken.map(|_| RedisLock {
            client: client.clone(),
            key: key.to_owned(),
            token,
        }))
    }

    /// Takes the lock `key` for `ttl`, waiting up to `wait` for its holder to release it;
    /// UNAVAILABLE (retry later) if it stays held.
    pub async fn acquire(
        client: &Client,
        key: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(lock) = Self::try_acquire(client, key, ttl).await? {
                return Ok(lock);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(format!("{key} is busy; retry")));
            }
            // Backoff between attempts at a lock held for one short operation.
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Releases the lock if it is still this holder's (it may have expired and been taken).
    pub async fn release(self) {
        let released: std::result::Result<i64, _> = self
            .client
            .eval(
                RELEASE_SCRIPT,
                vec![self.key.clone()],
                vec![self.token.clone()],
            )
            .await;
        if let Err(error) = released {
            tracing::warn!(key = %self.key, %error, "cannot release lock; it will expire");
        }
    }
}
