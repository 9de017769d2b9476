//! The `objmapper` command: parse the command line, run one command, map the outcome to
//! an exit status (0 ok, 1 failure, 2 usage error, 78 configuration error in `serve`).
#![forbid(unsafe_code)]

mod admin;
mod args;
mod bench;
mod bulk;
mod config;
mod connect;
mod copy;
mod defs;
mod file;
mod fmt;
mod fsck;
mod hardening;
mod logging;
mod objects;
mod parse;
mod remote;
mod serve;
mod settings;
mod top;
mod value;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// A usage error found after parsing (an impossible flag combination): exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `serve` could not start because of its configuration (file, flags, environment, the
/// socket it was handed): exit status [`EXIT_CONFIG`]. A service manager should not
/// restart it until someone fixes the configuration (the unit's RestartPreventExitStatus=).
#[derive(Debug)]
pub struct ConfigError;

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("configuration error")
    }
}

/// The exit status of a [`ConfigError`]: 78, sysexits.h's EX_CONFIG.
pub const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    connect::set_timeout(cli.timeout);
    let result = match cli.command {
        Command::Serve(a) => serve::run(*a),
        Command::Put(a) => objects::put(a),
        Command::Get(a) => objects::get(a),
        Command::Rm(a) => objects::rm(a),
        Command::Stat(a) => objects::stat(a),
        Command::Pin(a) => objects::pin(a),
        Command::Unpin(a) => objects::unpin(a),
        Command::Ping(a) => objects::ping(a),
        Command::Bench(a) => bench::run(a),
        Command::Ls(a) => admin::ls(a),
        Command::Info(a) => admin::info(a),
        Command::Stats(a) => admin::stats(a),
        Command::Migrate(a) => admin::migrate(a),
        Command::Purge(a) => admin::purge(a),
        Command::Verify(a) => admin::verify(a),
        Command::Fsck(a) => fsck::run(*a),
        Command::Ban(a) => admin::ban(a),
        Command::Bans(a) => admin::bans(a),
        Command::Reload(a) => admin::reload(a),
        Command::Config(a) => admin::config(a),
        Command::Top(a) => top::run(a),
        Command::Remote(a) => remote::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("objmapper: {}{}", render(&e), timeout_hint(&e));
            if e.is::<ConfigError>() {
                ExitCode::from(EXIT_CONFIG)
            } else if e.is::<UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// For a client call that timed out, or whose connection the server dropped without an
/// answer, without a hint already: what it means and what to do about it.
fn timeout_hint(e: &anyhow::Error) -> &'static str {
    use std::io::ErrorKind;
    let client_errors = || {
        e.chain()
            .filter_map(|c| c.downcast_ref::<objmapper_client::Error>())
    };
    let dropped = |c: &objmapper_client::Error| match c {
        objmapper_client::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ),
        objmapper_client::Error::Closed => true,
        _ => false,
    };
    if render(e).contains("--timeout") {
        ""
    } else if client_errors().any(|c| c.is_timeout()) {
        " (the server did not answer: it is not running, still starting, stuck or \
         overloaded; check it with `systemctl status objmapper` or its log, or wait longer \
         with --timeout)"
    } else if client_errors().any(dropped) {
        " (the server closed the connection without answering: it is not running, failed \
         to start or is stopping; check it with `systemctl status objmapper` or its log)"
    } else {
        ""
    }
}

/// The error and its causes on one line, skipping causes whose text a previous message
/// already includes (library errors often embed their source).
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
