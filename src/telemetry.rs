//! Tracing set-up for the binaries (libraries only emit events). `RUST_LOG` filters, default
//! `info`; `SLUICE_LOG_FORMAT=json` switches to one JSON object per line.
//!
//! Kept here so the three binaries configure logging identically; only `main` functions call it.

/// Installs the global tracing subscriber, writing to stderr.
pub fn init() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("SLUICE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT and exits the process at once on the
/// second (exit status 130), for operators who do not want to wait for a drain.
pub async fn shutdown_on_signals(shutdown: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; only SIGKILL will stop this process");
        return;
    };
    for signal_number in 0.. {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        if signal_number > 0 {
            tracing::warn!("second signal; exiting now");
            std::process::exit(130);
        }
        tracing::info!("signal received; shutting down gracefully (again to exit now)");
        shutdown.cancel();
    }
}
