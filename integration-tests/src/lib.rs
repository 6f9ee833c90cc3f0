//! The test harness: starts servers and workers against the Redis and MongoDB-wire server
//! `dev/stack` runs, each test in its own MongoDB database and Redis key prefix so tests run in
//! parallel — in-process on `127.0.0.1:0` for most tests, as real processes ([`spawned`]) for
//! faults that need a real SIGKILL or SIGTERM, and against Redis and FerretDB servers of the
//! test's own ([`services`]) for outages. Readiness is the server's health check turning
//! SERVING, never a fixed sleep.
use std::net::SocketAddr;
use std::time::Duration;

use fred::interfaces::{KeysInterface, StreamsInterface};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use sluice::api::batch_service_client::BatchServiceClient;
use sluice::config::ConnectionArgs;
use sluice::keys::{Keys, WORKER_GROUP};
use sluice::store::Store;
use sluice::tasks::TaskRegistry;
use sluice_server::ServerConfig;
use sluice_worker::WorkerConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

mod grpc;
pub mod services;
pub mod spawned;

pub use grpc::*;
pub use services::{PrivateFerret, PrivateRedis};
pub use spawned::Spawned;

/// How long a test waits for a server or store to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for a batch to finish before failing.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(120);

/// A test's private namespace on the shared Redis and MongoDB, plus what it started.
pub struct TestEnv {
    /// Connection settings every process of this test uses.
    pub connection: ConnectionArgs,
    /// Direct access to the test's database.
    pub store: Store,
    servers: Vec<Process>,
    workers: Vec<Process>,
}

/// A server or worker running in-process.
pub struct Process {
    /// Cancels it gracefully.
    pub shutdown: CancellationToken,
    handle: JoinHandle<()>,
    /// The server's address (workers have none).
    pub address: Option<SocketAddr>,
}

impl Process {
    /// Stops it gracefully and waits for it to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.handle.await;
    }
}

impl TestEnv {
    /// A fresh namespace named after the test, on the shared Redis and MongoDB.
    pub async fn new(test_name: &str) -> TestEnv {
        TestEnv::on(test_name, None, None).await
    }

    /// A fresh namespace named after the test, on the given Redis and MongoDB (the shared ones
    /// where `None`).
    pub async fn on(
        test_name: &str,
        redis_url: Option<String>,
        mongo_url: Option<String>,
    ) -> TestEnv {
        // Logs of the in-process servers and workers, shown for failing tests (RUST_LOG filters).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let unique = format!(
            "t-{test_name}-{}",
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        let connection = ConnectionArgs {
            redis_url: redis_url.unwrap_or_else(|| {
                std::env::var("SLUICE_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
            }),
            mongo_url: mongo_url.unwrap_or_else(|| {
                std::env::var("SLUICE_MONGO_URL")
                    .unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned())
            }),
            mongo_db: unique.replace('-', "_"),
            key_prefix: unique,
        };
        let store = Store::connect(&connection.mongo_url, &connection.mongo_db)
            .await
            .expect("the MongoDB-wire server from dev/stack is reachable");
        TestEnv {
            connection,
            store,
            servers: Vec::new(),
            workers: Vec::new(),
        }
    }

    /// Server settings for this test's namespace, defaults otherwise.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig::for_tests(self.connection.clone())
    }

    /// Worker settings for this test's namespace, defaults otherwise.
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig::for_tests(self.connection.clone())
    }

    /// Starts a server with default settings, waits until it is SERVING, returns its address.
    pub async fn start_server(&mut self) -> SocketAddr {
        let config = self.server_config();
        self.start_server_with(config).await
    }

    /// Starts a server with `config`, waits until it is SERVING, returns its address.
    pub async fn start_server_with(&mut self, config: ServerConfig) -> SocketAddr {
        self.start_server_with_tasks(config, TaskRegistry::builtin())
            .await
    }

    /// Starts a server that accepts the tasks of `registry`, waits until it is SERVING.
    pub async fn start_server_with_tasks(
        &mut self,
        config: ServerConfig,
        registry: TaskRegistry,
    ) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("bound address");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            if let Err(error) =
                sluice_server::run_with_tasks(config, registry, listener, token).await
            {
                panic!("server failed: {error}");
            }
        });
        wait_until_serving(address).await;
        self.servers.push(Process {
            shutdown,
            handle,
            address: Some(address),
        });
        address
    }

    /// Starts a worker with default settings and the given in-flight limit.
    pub async fn start_worker(&mut self, concurrency: usize) {
        let mut config = self.worker_config();
        config.concurrency = concurrency;
        self.start_worker_with(config);
    }

    /// Starts a worker with `config`.
    pub fn start_worker_with(&mut self, config: WorkerConfig) {
        self.start_worker_with_tasks(config, TaskRegistry::builtin());
    }

    /// Starts a worker that runs the tasks of `registry`.
    pub fn start_worker_with_tasks(&mut self, config: WorkerConfig, registry: TaskRegistry) {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            if let Err(error) = sluice_worker::run_with_tasks(config, registry, token).await {
                panic!("worker failed: {error}");
            }
        });
        self.workers.push(Process {
            shutdown,
            handle,
            address: None,
        });
    }

    /// Takes the `index`th started server out of the environment (to stop it).
    pub fn take_server(&mut self, index: usize) -> Process {
        self.servers.remove(index)
    }

    /// Takes the `index`th started worker out of the environment (to stop it).
    pub fn take_worker(&mut self, index: usize) -> Process {
        self.workers.remove(index)
    }

    /// The environment a spawned server or worker needs for this test's namespace, plus
    /// `extra` settings.
    pub fn process_env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let connection = &self.connection;
        let mut env: Vec<(String, String)> = [
            ("SLUICE_REDIS_URL", connection.redis_url.as_str()),
            ("SLUICE_MONGO_URL", connection.mongo_url.as_str()),
            ("SLUICE_MONGO_DB", connection.mongo_db.as_str()),
            ("SLUICE_KEY_PREFIX", connection.key_prefix.as_str()),
        ]
        .iter()
        .chain(extra)
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
        env.dedup_by(|later, earlier| later.0 == earlier.0);
        env
    }

    /// Spawns a `sluice-server` process on `address` (a free port when `None`) with `extra`
    /// settings and waits until it is SERVING.
    pub async fn spawn_server(
        &self,
        address: Option<SocketAddr>,
        extra: &[(&str, &str)],
    ) -> Spawned {
        let address =
            address.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], services::free_port())));
        let listen = address.to_string();
        let mut settings = vec![("SLUICE_LISTEN", listen.as_str())];
        settings.extend_from_slice(extra);
        let label = format!("{}-server-{}", self.connection.key_prefix, address.port());
        let mut server = Spawned::start("sluice-server", &label, &self.process_env(&settings));
        wait_until_serving(address).await;
        server.address = Some(address);
        server
    }

    /// Spawns a `sluice-worker` process named `name` with `extra` settings.
    pub fn spawn_worker(&self, name: &str, extra: &[(&str, &str)]) -> Spawned {
        let mut settings = vec![("SLUICE_WORKER_NAME", name)];
        settings.extend_from_slice(extra);
        let label = format!("{}-{name}", self.connection.key_prefix);
        Spawned::start("sluice-worker", &label, &self.process_env(&settings))
    }

    /// A client of the server at `address`.
    pub async fn client(&self, address: SocketAddr) -> BatchServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("valid uri")
            .connect()
            .await
            .expect("server accepts connections");
        BatchServiceClient::new(channel).max_decoding_message_size(64 << 20)
    }

    /// Every document of a collection of the test's database, by `_id`.
    pub async fn documents(&self, collection: &str) -> Vec<Document> {
        let cursor = self
            .store
            .database()
            .collection::<Document>(collection)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .expect("find");
        cursor.try_collect().await.expect("read cursor")
    }

    /// Every stored outcome of a batch, as (item index, output text or error), sorted by
    /// index, read straight from MongoDB's result documents. A test compares its length and
    /// indexes with the batch's items to check that every item has exactly one result.
    pub async fn stored_outcomes(&self, batch_id: &str) -> Vec<(u64, Result<String, String>)> {
        let mut outcomes = Vec::new();
        for result in self.documents("results").await {
            if result.get_str("batch_id") != Ok(batch_id) {
                continue;
            }
            let first = result.get_i64("first_item").expect("first_item") as u64;
            let stored = result.get_array("outcomes").expect("outcomes");
            for (offset, outcome) in stored.iter().enumerate() {
                let outcome = outcome.as_document().expect("outcome document");
                let text = match outcome.get_str("o") {
                    Ok(output) => Ok(output.to_owned()),
                    Err(_) => Err(outcome.get_str("e").expect("output or error").to_owned()),
                };
                outcomes.push((first + offset as u64, text));
            }
        }
        outcomes.sort_by_key(|(index, _)| *index);
        outcomes
    }

    /// Asserts that the first `count` items of a batch each have exactly one stored result,
    /// and no other item has one.
    pub async fn assert_one_result_per_item(&self, batch_id: &str, count: u64) {
        let indexes: Vec<u64> = self
            .stored_outcomes(batch_id)
            .await
            .iter()
            .map(|(index, _)| *index)
            .collect();
        assert_eq!(
            indexes,
            (0..count).collect::<Vec<_>>(),
            "exactly one stored result per item, none missing or doubled"
        );
    }

    /// The test's key names.
    pub fn keys(&self) -> Keys {
        Keys::new(&self.connection.key_prefix)
    }

    /// A Redis client for the test's Redis.
    pub async fn redis(&self) -> fred::clients::Client {
        sluice::broker::connect(&self.connection.redis_url)
            .await
            .expect("redis")
    }

    /// The length of the test's chunk stream in Redis (0 if it does not exist).
    pub async fn stream_length(&self) -> u64 {
        self.redis()
            .await
            .xlen(self.keys().chunk_stream())
            .await
            .expect("xlen")
    }

    /// How many chunk messages `consumer` holds (delivered, not acknowledged).
    pub async fn pending_for(&self, consumer: &str) -> u64 {
        let reply: fred::types::Value = self
            .redis()
            .await
            .xpending(
                self.keys().chunk_stream(),
                WORKER_GROUP,
                ("-", "+", 1_000_u64, consumer),
            )
            .await
            .unwrap_or(fred::types::Value::Null);
        match reply {
            fred::types::Value::Array(entries) => entries.len() as u64,
            _ => 0,
        }
    }

    /// The dead-letter stream's entries, each as its field map.
    pub async fn dead_letters(&self) -> Vec<std::collections::HashMap<String, String>> {
        let entries: Vec<(String, std::collections::HashMap<String, String>)> = self
            .redis()
            .await
            .xrange(self.keys().dead_letter_stream(), "-", "+", None)
            .await
            .expect("xrange");
        entries.into_iter().map(|(_, fields)| fields).collect()
    }

    /// Stops everything and drops the test's database and keys.
    pub async fn finish(mut self) {
        for process in self.servers.drain(..).chain(self.workers.drain(..)) {
            process.stop().await;
        }
        let _ = self.store.database().drop().await;
        if let Ok(client) = sluice::broker::connect(&self.connection.redis_url).await {
            let keys = self.keys();
            let names = vec![
                keys.chunk_stream(),
                keys.retry_set(),
                keys.dead_letter_stream(),
            ];
            let _: Result<i64, _> = client.del(names).await;
        }
    }
}
