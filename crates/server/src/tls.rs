//! TLS for the TCP listener (rustls, TLS 1.3 only), and the shared token a TCP client may
//! have to present in HELLO.
//!
//! TCP carries no peer credentials, so beyond loopback the server requires TLS plus a way
//! to tell its clients from anyone else who can reach the port: a client certificate
//! signed by a configured CA, a shared token in HELLO, or both. `Server::start` refuses a
//! non-loopback TCP address without them.
//!
//! [`TlsStream`] drives a rustls server session over a non-blocking socket inside the
//! worker's edge-triggered event loop: reads pull ciphertext until the socket is empty,
//! writes hand plaintext to rustls and push ciphertext out until the socket is full.
//! rustls holds at most one batch of output beyond what the socket took, so a client that
//! stops reading gets backpressure, as on a plain socket.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConnection};

use crate::ServerError;

/// TLS settings for the TCP listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates that sign client certificates. When set, every
    /// TCP client must present a certificate signed by one of them. Default = None (no
    /// client certificates; then a [`Token`] must authenticate clients beyond loopback).
    pub client_ca: Option<PathBuf>,
}

/// A shared secret a TCP client must present in HELLO before any other request.
/// Compared in constant time; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

/// Shortest token accepted: guessing 16 random bytes' worth is out of reach.
pub const TOKEN_MIN: usize = 16;

impl Token {
    /// A token from its bytes: at least [`TOKEN_MIN`] and at most
    /// [`objmapper_proto::hello::HELLO_TOKEN_MAX`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Token, String> {
        let bytes = bytes.into();
        let max = objmapper_proto::hello::HELLO_TOKEN_MAX;
        if bytes.len() < TOKEN_MIN || bytes.len() > max {
            return Err(format!(
                "the token is {} bytes; it must be {TOKEN_MIN} to {max} bytes (e.g. \
                 `openssl rand -hex 32`)",
                bytes.len()
            ));
        }
        Ok(Token(bytes))
    }

    /// Reads a token file: its content, without one trailing newline (as `echo` or an
    /// editor leaves it). Refuses a file that others may read.
    pub fn from_file(path: &Path) -> Result<Token, String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "the token file {} has mode {:o}: group and others must have no access to a \
                 secret (chmod 600 it)",
                path.display(),
                meta.mode() & 0o777
            ));
        }
        let mut bytes = std::fs::read(path)
            .map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Token::new(bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let mut diff = u8::from(self.0.len() != presented.len());
        let padded = presented.iter().chain(std::iter::repeat(&0));
        for (a, b) in self.0.iter().zip(padded) {
            diff |= a ^ b;
        }
        std::hint::black_box(diff) == 0
    }

    /// The token's bytes (to send it).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes, redacted>)", self.0.len())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls server configuration, with messages that name the file at fault.
pub(crate) fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let bad = |m: String| ServerError::Config(m);
    let certs = read_certs(&cfg.cert).map_err(bad)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| {
        bad(format!(
            "reading the TLS private key {}: {e} (expected a PEM \"PRIVATE KEY\", \"RSA \
             PRIVATE KEY\" or \"EC PRIVATE KEY\" block)",
            cfg.key.display()
        ))
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(format!("TLS setup failed: {e}")))?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca).map_err(bad)? {
                roots.add(c).map_err(|e| {
                    bad(format!(
                        "a CA certificate in {} is unusable: {e}",
                        ca.display()
                    ))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .map_err(|e| bad(format!("the client CA file {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        bad(format!(
            "the TLS certificate {} and key {} do not make a usable pair: {e}",
            cfg.cert.display(),
            cfg.key.display()
        ))
    })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The ALPN protocol id both sides offer, so a TLS client of some other protocol that
/// reaches the port fails the handshake instead of speaking to us.
pub const ALPN: &[u8] = b"objmapper";

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM \"CERTIFICATE\" block",
            path.display()
        ));
    }
    Ok(certs)
}

/// A rustls server session over a non-blocking TCP socket.
pub(crate) struct TlsStream {
    sock: mio::net::TcpStream,
    tls: ServerConnection,
    /// The socket reported EOF.
    eof: bool,
}

impl TlsStream {
    pub(crate) fn new(
        sock: mio::net::TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<TlsStream> {
        let tls = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream {
            sock,
            tls,
            eof: false,
        })
    }

    pub(crate) fn socket(&mut self) -> &mut mio::net::TcpStream {
        &mut self.sock
    }

    pub(crate) fn socket_ref(&self) -> &mio::net::TcpStream {
        &self.sock
    }

    /// Whether the handshake is still going on.
    pub(crate) fn handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Ciphertext waits for socket space.
    pub(crate) fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Plaintext from the peer: Ok(0) at the end of the stream, WouldBlock when the socket
    /// is empty. Runs the handshake as its messages arrive.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                // The peer closed without close_notify. Frames carry their lengths, so a
                // truncated one is caught above us; treat it as the end of the stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.tls.process_new_packets() {
                // Tell the peer why (an alert), best effort, then give up on it.
                let _ = self.tls.write_tls(&mut self.sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake replies, key updates: send what the socket takes now; the rest
            // goes with the next flush.
            self.push()?;
        }
    }

    /// Hands `iov` to rustls and sends what the socket takes. Returns the plaintext bytes
    /// taken; WouldBlock while earlier ciphertext still waits for socket space.
    pub(crate) fn write_vectored(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.push()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.tls.writer().write_vectored(iov)?;
        self.push()?;
        Ok(n)
    }

    /// Sends buffered ciphertext until none is left (true) or the socket is full (false).
    pub(crate) fn push(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Drop for TlsStream {
    fn drop(&mut self) {
        // A clean end of an established session, if the socket takes it now. A peer that
        // never finished the handshake gets nothing.
        if !self.tls.is_handshaking() {
            self.tls.send_close_notify();
            let _ = self.push();
        }
    }
}

/// Refuses a TCP address that would expose the store: beyond loopback, TLS and a way to
/// authenticate clients are required.
pub(crate) fn check_exposure(
    addr: std::net::SocketAddr,
    tls: Option<&TlsConfig>,
    token: bool,
) -> Result<(), ServerError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    let why = match tls {
        None => {
            "TCP beyond loopback must use TLS: give a certificate and key (--tls-cert, \
             --tls-key) and a way to authenticate clients (--tls-client-ca, --tcp-token-file \
             or both)"
        }
        Some(t) if t.client_ca.is_none() && !token => {
            "TLS alone does not say who the client is: also require client certificates \
             (--tls-client-ca) or a shared token in HELLO (--tcp-token-file), or both"
        }
        Some(_) => return Ok(()),
    };
    Err(ServerError::Config(format!(
        "refusing to listen on TCP {addr}: it is not a loopback address. {why}. TCP carries \
         no peer credentials, so anyone who can reach the port could read and write. Plain \
         TCP is allowed on 127.0.0.1 and [::1]"
    )))
}

/// What the TCP listener checks, ready to use per connection.
#[derive(Clone, Default)]
pub(crate) struct TcpSecurity {
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) token: Option<Arc<Token>>,
}

impl TcpSecurity {
    /// Reads the files `cfg` names (only if it has a TCP listener).
    pub(crate) fn load(cfg: &crate::ServerConfig) -> Result<TcpSecurity, ServerError> {
        if cfg.tcp_listen.is_none() {
            return Ok(TcpSecurity::default());
        }
        Ok(TcpSecurity {
            tls: cfg.tls.as_ref().map(server_config).transpose()?,
            token: cfg.tcp_token.clone().map(Arc::new),
        })
    }
}
