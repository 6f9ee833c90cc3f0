//! Health: SERVING only while both Redis and MongoDB answer, checked every second; NOT_SERVING
//! from the first moment of shutdown, before anything else stops. Load balancers and the test
//! harness wait on it.
use std::time::Duration;

use sluice::api::batch_service_server::BatchServiceServer;
use sluice::broker::Broker;
use sluice::store::Store;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::service::Service;

/// How often the stores are pinged.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long one ping may take before the store counts as down.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets both the service's and the server's ("") status.
pub(crate) async fn set(reporter: &HealthReporter, status: ServingStatus) {
    match status {
        ServingStatus::Serving => reporter.set_serving::<BatchServiceServer<Service>>().await,
        _ => {
            reporter
                .set_not_serving::<BatchServiceServer<Service>>()
                .await
        }
    }
    reporter.set_service_status("", status).await;
}

/// Pings the stores until `shutdown`, keeping the reported status current.
pub(crate) async fn monitor(
    reporter: HealthReporter,
    store: Store,
    broker: Broker,
    shutdown: CancellationToken,
) {
    let mut serving = None;
    loop {
        let mongo = tokio::time::timeout(PING_TIMEOUT, store.ping()).await;
        let redis = tokio::time::timeout(PING_TIMEOUT, broker.ping()).await;
        let healthy = matches!(mongo, Ok(Ok(()))) && matches!(redis, Ok(Ok(())));
        if serving != Some(healthy) {
            if healthy {
                info!("redis and mongodb reachable; serving");
                set(&reporter, ServingStatus::Serving).await;
            } else {
                warn!(
                    mongo_ok = matches!(mongo, Ok(Ok(()))),
                    redis_ok = matches!(redis, Ok(Ok(()))),
                    "store unreachable; not serving"
                );
                set(&reporter, ServingStatus::NotServing).await;
            }
            serving = Some(healthy);
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
    }
    set(&reporter, ServingStatus::NotServing).await;
}

/// Once `shutdown` fires, reports NOT_SERVING and only then cancels `draining`, which ends open
/// streams and stops the listener.
pub(crate) async fn drain_after(
    reporter: HealthReporter,
    shutdown: CancellationToken,
    draining: CancellationToken,
) {
    shutdown.cancelled().await;
    set(&reporter, ServingStatus::NotServing).await;
    info!("not serving; ending open streams");
    draining.cancel();
}
