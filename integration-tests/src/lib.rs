//! The test harness: starts real servers and workers in-process, on `127.0.0.1:0`, against the
//! Redis and MongoDB-wire server `dev/stack` runs, each test in its own MongoDB database and
//! Redis key prefix so tests run in parallel. Readiness is the server's health check turning
//! SERVING, never a fixed sleep.
use std::net::SocketAddr;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use sluice::api::batch_service_client::BatchServiceClient;
use sluice::api::{self, BatchEvent};
use sluice::config::ConnectionArgs;
use sluice::store::Store;
use sluice_server::ServerConfig;
use sluice_worker::WorkerConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// How long a test waits for a server to report SERVING.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
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

    /// Kills it at once, like a crash: its task is aborted mid-work.
    pub fn kill(self) {
        self.handle.abort();
    }
}

impl TestEnv {
    /// A fresh namespace named after the test.
    pub async fn new(test_name: &str) -> TestEnv {
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
            redis_url: std::env::var("SLUICE_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
            mongo_url: std::env::var("SLUICE_MONGO_URL")
                .unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned()),
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

    /// Starts a server with default settings, waits until it is SERVING, returns its address.
    pub async fn start_server(&mut self) -> SocketAddr {
        let config = ServerConfig::for_tests(self.connection.clone());
        self.start_server_with(config).await
    }

    /// Starts a server with `config`, waits until it is SERVING, returns its address.
    pub async fn start_server_with(&mut self, config: ServerConfig) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("bound address");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            if let Err(error) = sluice_server::run(config, listener, token).await {
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
        let mut config = WorkerConfig::for_tests(self.connection.clone());
        config.concurrency = concurrency;
        self.start_worker_with(config);
    }

    /// Starts a worker with `config`.
    pub fn start_worker_with(&mut self, config: WorkerConfig) {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            if let Err(error) = sluice_worker::run(config, token).await {
                panic!("worker failed: {error}");
            }
        });
        self.workers.push(Process {
            shutdown,
            handle,
            address: None,
        });
    }

    /// Takes the `index`th started server out of the environment (to stop or kill it).
    pub fn take_server(&mut self, index: usize) -> Process {
        self.servers.remove(index)
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

    /// The length of the test's chunk stream in Redis (0 if it does not exist).
    pub async fn stream_length(&self) -> u64 {
        use fred::interfaces::StreamsInterface;
        let client = sluice::broker::connect(&self.connection.redis_url)
            .await
            .expect("redis");
        let keys = sluice::keys::Keys::new(&self.connection.key_prefix);
        client.xlen(keys.chunk_stream()).await.expect("xlen")
    }

    /// Stops everything and drops the test's database and keys.
    pub async fn finish(mut self) {
        for process in self.servers.drain(..).chain(self.workers.drain(..)) {
            process.stop().await;
        }
        let _ = self.store.database().drop().await;
        if let Ok(client) = sluice::broker::connect(&self.connection.redis_url).await {
            use fred::interfaces::KeysInterface;
            let keys = sluice::keys::Keys::new(&self.connection.key_prefix);
            let _: Result<i64, _> = client.del(keys.chunk_stream()).await;
        }
    }
}

/// Waits until the server reports SERVING.
pub async fn wait_until_serving(address: SocketAddr) {
    wait_for_health(
        address,
        tonic_health::pb::health_check_response::ServingStatus::Serving,
    )
    .await;
}

/// Text items `{"i": 0}`, `{"i": 1}`, ...
pub fn json_items(count: usize) -> Vec<api::Payload> {
    (0..count)
        .map(|i| text(&format!("{{\"i\":{i}}}")))
        .collect()
}

/// A text payload.
pub fn text(value: &str) -> api::Payload {
    api::Payload {
        kind: Some(api::payload::Kind::Text(value.to_owned())),
    }
}

/// Reads an event stream to its end (with the batch timeout), returning every event.
pub async fn collect_events<T>(
    stream: tonic::Streaming<T>,
    event_of: impl Fn(T) -> Option<BatchEvent>,
) -> Vec<BatchEvent> {
    let collect = async {
        let mut stream = stream;
        let mut events = Vec::new();
        while let Some(message) = stream.message().await.expect("stream ends without error") {
            events.push(event_of(message).expect("every message carries an event"));
        }
        events
    };
    tokio::time::timeout(BATCH_TIMEOUT, collect)
        .await
        .expect("batch finished in time")
}

/// Checks the event stream invariants: sequences strictly increase, only the last event is
/// terminal, and it is the last one. Returns the terminal event.
pub fn check_event_stream(events: &[BatchEvent]) -> BatchEvent {
    assert!(!events.is_empty(), "no events");
    for pair in events.windows(2) {
        assert!(
            pair[0].sequence < pair[1].sequence,
            "sequence not increasing: {pair:?}"
        );
        assert!(
            !sluice::convert::is_terminal(pair[0].state()),
            "terminal event before the last: {pair:?}"
        );
    }
    let last = events.last().cloned().expect("non-empty");
    assert!(
        sluice::convert::is_terminal(last.state()),
        "last event is not terminal: {last:?}"
    );
    last
}

/// Reads every result of a batch through ListResults.
pub async fn list_results(
    client: &mut BatchServiceClient<Channel>,
    batch_id: &str,
) -> Vec<api::ListResultsResponse> {
    let request = api::ListResultsRequest {
        batch_id: batch_id.to_owned(),
        ..Default::default()
    };
    let stream = client
        .list_results(request)
        .await
        .expect("list results")
        .into_inner();
    stream.try_collect().await.expect("results stream")
}

/// A Redis of a test's own, on a free loopback port, for tests that stop and restart it.
/// Killed when dropped.
pub struct PrivateRedis {
    /// Its port.
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Starts `redis-server` (installed by dev/stack) on a free port and waits for PONG.
    pub async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.restart().await;
        redis
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again (empty: no persistence) on the same port, and waits for PONG.
    pub async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by dev/stack) starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while !self.answers_ping().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "private redis never answered"
            );
            // Polling interval between PINGs.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn answers_ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut reply = [0_u8; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && stream.read_exact(&mut reply).await.is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The server's health status for the Sluice service.
pub async fn health_status(address: SocketAddr) -> Option<i32> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let channel = Channel::from_shared(format!("http://{address}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let request = HealthCheckRequest {
        service: "sluice.v1.BatchService".to_owned(),
    };
    let response = HealthClient::new(channel).check(request).await.ok()?;
    Some(response.into_inner().status)
}

/// Waits until the server's health status is `status`.
pub async fn wait_for_health(
    address: SocketAddr,
    status: tonic_health::pb::health_check_response::ServingStatus,
) {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while health_status(address).await != Some(status as i32) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never became {status:?}"
        );
        // Polling interval between health checks.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
