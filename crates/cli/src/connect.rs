//! Turning `ConnArgs` into a connected client and a transfer mode.

use anyhow::anyhow;
use objmapper_client::{Client, Error, Mode, Transport};

use crate::args::{ConnArgs, ModeArg};
use crate::UsageError;

/// The transfer mode to use: the one asked for, else fd on a Unix socket and copy over
/// TCP. fd over TCP is a usage error, reported before connecting.
pub fn mode(c: &ConnArgs) -> anyhow::Result<Mode> {
    let transport = if c.tcp.is_some() {
        Transport::Tcp
    } else {
        Transport::Unix
    };
    let mode = match (c.mode, transport) {
        (Some(ModeArg::Fd), _) => Mode::Fd,
        (Some(ModeArg::Copy), _) | (None, Transport::Tcp) => Mode::Copy,
        (None, Transport::Unix) => Mode::Fd,
    };
    if !transport.supports(mode) {
        return Err(UsageError(format!(
            "--mode {mode} needs a Unix socket: file descriptors cannot travel over TCP \
             (use --mode copy with --tcp)"
        ))
        .into());
    }
    Ok(mode)
}

/// Checks the mode, then connects.
pub fn connect(c: &ConnArgs) -> anyhow::Result<(Client, Mode)> {
    let mode = mode(c)?;
    Ok((open(c)?, mode))
}

/// Connects (without checking the mode), with a hint on failure.
pub fn open(c: &ConnArgs) -> anyhow::Result<Client> {
    let res = match &c.tcp {
        Some(addr) => Client::connect_tcp(addr.as_str()),
        None => Client::connect(&c.socket),
    };
    res.map_err(|e| match e {
        Error::Connect { .. } => anyhow!(
            "{e} (is the server running? start it with `objmapper serve --socket {}`)",
            c.socket.display()
        ),
        Error::ConnectTcp { .. } => {
            anyhow!("{e} (is the server running with `objmapper serve --tcp ADDR:PORT`?)")
        }
        e => e.into(),
    })
}

/// The key's bytes: keys are opaque, so any bytes the shell passes are kept as is.
pub fn key_bytes(key: &std::ffi::OsStr) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    key.as_bytes()
}
