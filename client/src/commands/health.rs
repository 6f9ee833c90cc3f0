//! `sluice health`: asks the server's standard gRPC health service (`grpc.health.v1.Health`)
//! whether Sluice is SERVING, which it is only while Redis and MongoDB answer and it is not
//! shutting down. Exit 0 when SERVING, 5 otherwise, so a script can wait for a server with
//! `until sluice health; do sleep 1; done`.
use std::io::Write;

use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

use crate::failure::Outcome;
use crate::output::Printer;

/// The service name Sluice reports its health under.
const SERVICE: &str = "sluice.v1.BatchService";

/// `sluice health`.
pub(crate) async fn health<W: Write>(
    channel: Channel,
    printer: &mut Printer<W>,
) -> anyhow::Result<Outcome> {
    let request = HealthCheckRequest {
        service: SERVICE.to_owned(),
    };
    let status = HealthClient::new(channel)
        .check(request)
        .await?
        .into_inner()
        .status();
    printer.health(status.as_str_name())?;
    if status != ServingStatus::Serving {
        return Err(tonic::Status::unavailable(
            "it is not serving (Redis or MongoDB unreachable, or shutting down)",
        )
        .into());
    }
    Ok(Outcome::Done)
}
