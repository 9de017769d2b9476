//! `serve`'s log: tracing to stderr, human-readable lines or JSON, with a filter that
//! SIGHUP can replace while running.

use std::io::IsTerminal;

use anyhow::Result;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::value::LogFormat;
use crate::UsageError;

/// Changes the running log filter.
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl LogHandle {
    /// Replaces the filter (a level or EnvFilter directives).
    pub fn set_level(&self, level: &str) -> Result<()> {
        let f = filter(level)?;
        self.0
            .reload(f)
            .map_err(|e| anyhow::anyhow!("changing the log level: {e}"))
    }
}

fn filter(level: &str) -> Result<EnvFilter> {
    EnvFilter::try_new(level).map_err(|e| UsageError(format!("log level {level:?}: {e}")).into())
}

/// Installs the global subscriber: `level` as the filter, `format` on stderr.
pub fn init(level: &str, format: LogFormat) -> Result<LogHandle> {
    let (layer, handle) = reload::Layer::new(filter(level)?);
    let registry = tracing_subscriber::registry().with(layer);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Human => registry
            .with(fmt.with_ansi(std::io::stderr().is_terminal()))
            .init(),
        LogFormat::Json => registry.with(fmt.json().with_ansi(false)).init(),
    }
    Ok(LogHandle(handle))
}
