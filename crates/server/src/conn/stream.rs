//! The connection's transport: a plain Unix or TCP socket, or a TLS session over TCP.

use super::*;

pub(crate) enum Stream {
    Unix(mio::net::UnixStream),
    Tcp(mio::net::TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The socket, for calls that move bytes in the kernel (sendmsg with an fd, sendfile,
    /// splice). Never used on TLS, whose bytes must pass through rustls.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
            Stream::Tls(s) => s.socket_ref().as_fd(),
        }
    }
    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.socket(),
        }
    }
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
    /// Bytes can go to the socket by the kernel's zero-copy paths (sendfile, splice).
    pub(super) fn kernel_io(&self) -> bool {
        !matches!(self, Stream::Tls(_))
    }
    /// TLS output that rustls holds for lack of socket space.
    pub(super) fn tls_pending(&self) -> bool {
        matches!(self, Stream::Tls(s) if s.wants_write())
    }
    /// Sends what TLS holds; false while the socket is full.
    pub(super) fn push_tls(&mut self) -> io::Result<bool> {
        match self {
            Stream::Tls(s) => s.push(),
            _ => Ok(true),
        }
    }
    /// The peer's address, for TCP (plain or TLS).
    pub(super) fn tcp_peer(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok(),
            Stream::Tls(s) => s.socket_ref().peer_addr().ok(),
            Stream::Unix(_) => None,
        }
    }
    /// A TLS handshake not finished yet.
    pub(super) fn handshaking(&self) -> bool {
        matches!(self, Stream::Tls(s) if s.handshaking())
    }
}
