//! Sluice's gRPC server as a library: [`run`] serves `sluice.v1.BatchService`, health and
//! reflection on a listener until a shutdown token fires. The binary and the integration tests
//! both call it.
//!
//! Start-up order matters: the one Redis subscriber subscribes to the event channel before the
//! server accepts a single batch, so no early event of any batch can be missed.
use std::time::Duration;

use fred::interfaces::{ClientLike, PubsubInterface};
use sluice::api::batch_service_server::BatchServiceServer;
use sluice::broker::Broker;
use sluice::keys::Keys;
use sluice::store::Store;
use sluice::tasks::TaskRegistry;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

mod batches;
mod config;
mod health;
mod hub;
mod presence;
mod results;
mod service;
mod watch;

/// Events the subscriber's channel holds for the hub (an event is about 100 bytes).
const SUBSCRIBER_CHANNEL_CAPACITY: usize = 4096;

pub use config::ServerConfig;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Connecting to or preparing Redis or MongoDB failed.
    #[error(transparent)]
    Sluice(#[from] sluice::Error),
    /// Redis (the subscriber) failed.
    #[error("redis subscriber: {0}")]
    Subscriber(#[from] fred::error::Error),
    /// The gRPC transport failed.
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves on `listener` until `shutdown` is cancelled, then drains: health turns NOT_SERVING,
/// open streams end with UNAVAILABLE, and in-flight calls get `shutdown_grace` to finish.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    run_with_tasks(config, TaskRegistry::builtin(), listener, shutdown).await
}

/// [`run`], accepting batches for the tasks of `registry` (tests add tasks of their own).
pub async fn run_with_tasks(
    config: ServerConfig,
    registry: TaskRegistry,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let connection = &config.connection;
    let store = Store::connect(&connection.mongo_url, &connection.mongo_db).await?;
    store.ensure_indexes().await?;
    let keys = Keys::new(&connection.key_prefix);
    let broker = Broker::new(
        sluice::broker::connect(&connection.redis_url).await?,
        keys.clone(),
    );
    broker.ensure_group().await?;

    // Events arrive in bursts (every worker's chunk at once); fred's default channel of 32
    // overflows at the first scheduling hiccup, and each overflow costs a refresh.
    let subscriber = sluice::broker::redis_builder(&connection.redis_url)?
        .with_performance_config(|performance| {
            performance.broadcast_channel_capacity = SUBSCRIBER_CHANNEL_CAPACITY;
        })
        .build_subscriber_client()?;
    subscriber.init().await?;
    let _resubscriber = AbortOnDrop(subscriber.manage_subscriptions());
    subscriber.subscribe(keys.event_channel()).await?;

    let tasks = TaskTracker::new();
    // Shutdown goes in order: health turns NOT_SERVING first, so balancers stop sending new
    // calls here; then (`draining`) open streams end with UNAVAILABLE and the listener closes.
    let draining = CancellationToken::new();
    let hub = hub::Hub::new(store.clone());
    tasks.spawn(
        hub.clone()
            .run(subscriber, config.watch_poll_interval(), draining.clone()),
    );

    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::set(&reporter, tonic_health::ServingStatus::NotServing).await;
    tasks.spawn(health::monitor(
        reporter.clone(),
        store.clone(),
        broker.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(health::drain_after(
        reporter,
        shutdown.clone(),
        draining.clone(),
    ));

    let service = service::Service {
        batches: batches::Batches {
            store: store.clone(),
            progress: sluice::progress::Progress::new(store.clone(), broker.clone()),
            broker,
            registry,
            limits: config.limits(),
            tasks: tasks.clone(),
        },
        watches: watch::Watches {
            store,
            hub: hub.clone(),
            tasks: tasks.clone(),
            shutdown: draining.clone(),
        },
        max_message_bytes: config.max_message_bytes,
    };
    // tonic's own decoding cap sits above ours so an oversized batch gets our INVALID_ARGUMENT,
    // which names the limit, rather than a bare transport error.
    let decoding_cap = config
        .max_message_bytes
        .saturating_mul(2)
        .saturating_add(1 << 20);
    let batch_service = BatchServiceServer::new(service).max_decoding_message_size(decoding_cap);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sluice::api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sluice::api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let address = listener.local_addr().ok();
    info!(?address, "sluice-server listening");
    let grace = Duration::from_secs(config.shutdown_grace);
    let drained = draining.clone();
    let serve = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(batch_service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            drained.cancelled().await
        });
    tokio::pin!(serve);
    tokio::select! {
        served = &mut serve => served?,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(grace_s = grace.as_secs(), "calls still open after the grace period; exiting");
        }
    }
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        warn!("background tasks did not stop within the grace period");
    }
    info!(watchers = hub.watcher_count(), "sluice-server stopped");
    Ok(())
}

/// Aborts a task fred spawned itself (its resubscribe loop) when the server stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
