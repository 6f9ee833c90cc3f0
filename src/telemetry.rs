//! Tracing set-up for the binaries (libraries only emit events). `RUST_LOG` filters, default
//! `info`; `SLUICE_LOG_FORMAT=json` switches to one JSON object per line.
//!
//! Kept here so the three binaries configure logging identically; only `main` functions call it.

/// Installs the global tracing subscriber, writing to stderr.
pub fn init() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("SLUICE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
