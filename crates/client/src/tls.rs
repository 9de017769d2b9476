//! TLS to a TCP listener (feature `tls`): rustls, TLS 1.3 only, as the server requires.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::Error;

/// The ALPN protocol id the server offers.
const ALPN: &[u8] = b"objmapper";

/// How long the TLS handshake at connect may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to speak TLS to a server: whom to trust, and the client certificate to show if the
/// server asks for one. Cheap to clone; build it once and connect many times.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    server_name: Option<ServerName<'static>>,
}

impl TlsOptions {
    /// Trusts the CA certificates (or the self-signed server certificate) in the PEM file
    /// `ca`.
    pub fn new(ca: impl AsRef<Path>) -> Result<TlsOptions, Error> {
        let ca = ca.as_ref();
        let mut roots = RootCertStore::empty();
        for c in read_certs(ca)? {
            roots.add(c).map_err(|e| {
                Error::InvalidArgument(format!(
                    "a CA certificate in {} is unusable: {e}",
                    ca.display()
                ))
            })?;
        }
        Ok(TlsOptions {
            roots,
            identity: None,
            server_name: None,
        })
    }

    /// Presents this certificate chain (PEM, leaf first) and private key (PEM) when the
    /// server asks for a client certificate.
    pub fn client_cert(
        mut self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsOptions, Error> {
        let certs = read_certs(cert.as_ref())?;
        let key = PrivateKeyDer::from_pem_file(key.as_ref()).map_err(|e| {
            Error::InvalidArgument(format!(
                "reading the private key {}: {e}",
                key.as_ref().display()
            ))
        })?;
        self.identity = Some((certs, Arc::new(key)));
        Ok(self)
    }

    /// The name the server's certificate must carry. Default: the address connected to
    /// (an IP address: the certificate needs that IP in its subject alternative names).
    pub fn server_name(mut self, name: &str) -> Result<TlsOptions, Error> {
        let n = ServerName::try_from(name.to_owned()).map_err(|e| {
            Error::InvalidArgument(format!("{name:?} is not a valid TLS server name: {e}"))
        })?;
        self.server_name = Some(n);
        Ok(self)
    }

    fn config(&self) -> Result<Arc<ClientConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::InvalidArgument(format!("TLS setup failed: {e}")))?
            .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((certs, key)) => builder
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|e| {
                    Error::InvalidArgument(format!("the client certificate is unusable: {e}"))
                })?,
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }

    /// Runs the handshake on a connected socket.
    pub(crate) fn handshake(&self, tcp: TcpStream) -> Result<TlsSock, Error> {
        let peer = tcp.peer_addr()?;
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(peer.ip().into()));
        let mut tls = ClientConnection::new(self.config()?, name)
            .map_err(|e| Error::Protocol(format!("TLS setup failed: {e}")))?;
        tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut io = tcp.try_clone()?;
        while tls.is_handshaking() {
            tls.complete_io(&mut io).map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout(format!(
                    "the TLS handshake with {peer} did not finish within {HANDSHAKE_TIMEOUT:?}"
                )),
                _ => Error::Protocol(format!("TLS handshake with {peer} failed: {e}")),
            })?;
        }
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        Ok(TlsSock {
            tcp,
            tls,
            plain_left: 0,
        })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::InvalidArgument(format!("reading certificates from {}: {e}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} holds no PEM \"CERTIFICATE\" block",
            path.display()
        )));
    }
    Ok(certs)
}

/// A rustls client session over a blocking TCP socket whose calls can also be made
/// without blocking (MSG_DONTWAIT), so sending can read replies while the socket is full.
#[derive(Debug)]
pub(crate) struct TlsSock {
    pub(crate) tcp: TcpStream,
    tls: ClientConnection,
    /// Decrypted bytes rustls holds that have not been read yet.
    plain_left: usize,
}

/// The socket, read and written with or without MSG_DONTWAIT.
struct Raw<'a> {
    fd: BorrowedFd<'a>,
    dontwait: bool,
}

impl Read for Raw<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let flags = if self.dontwait {
            RecvFlags::DONTWAIT
        } else {
            RecvFlags::empty()
        };
        loop {
            match rustix::net::recv(self.fd, &mut *buf, flags) {
                Ok((n, _)) => return Ok(n),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Write for Raw<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut flags = SendFlags::NOSIGNAL;
        if self.dontwait {
            flags |= SendFlags::DONTWAIT;
        }
        loop {
            match rustix::net::send(self.fd, buf, flags) {
                Ok(n) => return Ok(n),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsSock {
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.tcp.as_fd()
    }

    /// Decrypted bytes wait in rustls, where poll(2) cannot see them.
    pub(crate) fn has_buffered(&self) -> bool {
        self.plain_left > 0
    }

    /// Reads plaintext. `Ok(None)`: nothing without blocking (only when `!wait`);
    /// `Ok(Some(0))`: the server ended the stream.
    pub(crate) fn recv(&mut self, buf: &mut [u8], wait: bool) -> Result<Option<usize>, Error> {
        let mut eof = false;
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => {
                    self.plain_left = self.plain_left.saturating_sub(n);
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Some(0)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::Io(e)),
            }
            if eof {
                return Ok(Some(0));
            }
            let mut raw = Raw {
                fd: self.tcp.as_fd(),
                dontwait: !wait,
            };
            match self.tls.read_tls(&mut raw) {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !wait => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(crate::conn::timed_out("answer", None))
                }
                Err(e) => return Err(Error::Io(e)),
            }
            match self.tls.process_new_packets() {
                Ok(state) => self.plain_left = state.plaintext_bytes_to_read(),
                Err(e) => {
                    let _ = self.push(false);
                    return Err(Error::Protocol(format!("TLS: {e}")));
                }
            }
            // Key updates and alerts want answers; they are small.
            self.push(false)?;
        }
    }

    /// Hands plaintext to rustls; returns how much it took (0 when its buffer is full:
    /// push first).
    pub(crate) fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        Ok(self.tls.writer().write(buf)?)
    }

    /// Sends buffered ciphertext. Ok(false): the socket is full (only when `!wait`).
    pub(crate) fn push(&mut self, wait: bool) -> Result<bool, Error> {
        while self.tls.wants_write() {
            let mut raw = Raw {
                fd: self.tcp.as_fd(),
                dontwait: !wait,
            };
            match self.tls.write_tls(&mut raw) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !wait => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(crate::conn::timed_out("take the request", None))
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(Error::Closed),
                Err(e) => return Err(Error::Io(e)),
            }
        }
        Ok(true)
    }
}

impl Drop for TlsSock {
    fn drop(&mut self) {
        self.tls.send_close_notify();
        let _ = self.push(false);
    }
}
