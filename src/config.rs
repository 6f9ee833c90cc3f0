//! Connection settings every binary shares, as clap arguments that each read an environment
//! variable too (`SLUICE_REDIS_URL`, `SLUICE_MONGO_URL`, `SLUICE_MONGO_DB`, `SLUICE_KEY_PREFIX`).
use clap::Args;

use crate::broker::Broker;
use crate::error::Result;
use crate::keys::Keys;
use crate::store::Store;

/// Where Redis and MongoDB are.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Redis URL.
    #[arg(
        long,
        env = "SLUICE_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// MongoDB URL.
    #[arg(
        long,
        env = "SLUICE_MONGO_URL",
        default_value = "mongodb://127.0.0.1:27017"
    )]
    pub mongo_url: String,
    /// MongoDB database name.
    #[arg(long, env = "SLUICE_MONGO_DB", default_value = "sluice")]
    pub mongo_db: String,
    /// Prefix of every Redis key, so tenants and tests can share one Redis.
    #[arg(long, env = "SLUICE_KEY_PREFIX", default_value = "sluice")]
    pub key_prefix: String,
}

impl ConnectionArgs {
    /// Connects to both stores.
    pub async fn connect(&self) -> Result<(Store, Broker)> {
        let store = Store::connect(&self.mongo_url, &self.mongo_db).await?;
        let client = crate::broker::connect(&self.redis_url).await?;
        Ok((store, Broker::new(client, Keys::new(&self.key_prefix))))
    }
}

/// Parses a duration given in seconds, fractions allowed (`30`, `0.5`), for flags such as
/// `--visibility-timeout`.
pub fn parse_seconds(text: &str) -> std::result::Result<std::time::Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{text:?} is not a non-negative number of seconds"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn seconds_take_fractions_and_refuse_nonsense() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("inf").is_err());
    }
}
