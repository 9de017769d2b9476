//! The `objmapper` command: parse the command line, run one command, map the outcome to
//! an exit status (0 ok, 1 failure, 2 usage error).
#![forbid(unsafe_code)]

mod admin;
mod args;
mod bench;
mod bulk;
mod config;
mod connect;
mod copy;
mod fmt;
mod fsck;
mod hardening;
mod logging;
mod objects;
mod serve;
mod top;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Config(a) => admin::config(a),
        Command::Top(a) => top::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("objmapper: {}", render(&e));
            if e.is::<UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
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
