//! Connecting to the Sluice server: one HTTP/2 channel per run, opened eagerly so that an
//! unreachable server is reported before any work starts, with keep-alive pings so that a
//! long `watch` notices a server that vanished without closing the connection.
use std::time::Duration;

use anyhow::anyhow;
use sluice::api::batch_service_client::BatchServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::failure::{root_cause, Unreachable};

/// The generated client over one channel.
pub(crate) type Client = BatchServiceClient<Channel>;

/// How long to wait for the TCP and HTTP/2 handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle connection is pinged.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection counts as dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest response message accepted (tonic's default, 4 MiB, is less than a chunk of large
/// results could need).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// The server address with a scheme: `127.0.0.1:50051` means `http://127.0.0.1:50051`.
pub(crate) fn normalize(server: &str) -> String {
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    }
}

/// Connects to `server` (already [`normalize`]d).
pub(crate) async fn connect(server: &str) -> anyhow::Result<Client> {
    let channel = connect_channel(server).await?;
    Ok(BatchServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES))
}

/// Opens the channel to `server` (already [`normalize`]d), for any service on it.
pub(crate) async fn connect_channel(server: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(server.to_owned())
        .map_err(|error| anyhow!("--server {server:?} is not a valid URL ({error})"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await.map_err(|error| Unreachable {
        server: server.to_owned(),
        cause: root_cause(&error),
    })?;
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_means_http() {
        assert_eq!(normalize("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(normalize("http://sluice:50051"), "http://sluice:50051");
        assert_eq!(
            normalize("https://sluice.example"),
            "https://sluice.example"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        // Bind then drop a listener to get a port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let server = format!("http://{address}");
        let error = connect(&server).await.expect_err("nothing listens");
        let unreachable = error.downcast_ref::<Unreachable>().expect("an Unreachable");
        assert_eq!(unreachable.server, server);
        assert!(
            unreachable.cause.to_lowercase().contains("refused"),
            "{}",
            unreachable.cause
        );
    }
}
