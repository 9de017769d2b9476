//! The UDP client: one request per datagram, the reply reassembled from datagrams.
//!
//! UDP serves GET (copy), HEAD and PING for small objects; docs/PROTOCOL.md, "UDP
//! transport", is the normative description. Datagrams can be lost, duplicated or
//! reordered: the client reassembles the reply by request id and sequence number, and
//! after a timeout sends the request again under a new request id, so a late reply to an
//! earlier attempt can never be mistaken for the current one. It returns bytes only from
//! a complete, consistent reply that decodes as exactly one response frame.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use objmapper_proto::udp::{Reassembler, Rejected, UdpHeader, DEFAULT_UDP_MAX_RESPONSE};
use objmapper_proto::{
    decode_response, encode_request, Decoded, Metadata, Mode, Op, RequestHeader, ResponseHeader,
    Status, Version,
};

use crate::client::check_key;
use crate::Error;

/// Default wait for a reply, per attempt.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default resends after a timeout.
const DEFAULT_RETRIES: u32 = 2;
/// Receive buffer: larger than any UDP payload, so no datagram is ever truncated.
const RECV_BUF: usize = 64 * 1024;

/// A blocking UDP client for GET (copy), HEAD and PING.
///
/// ```no_run
/// use objmapper_client::UdpClient;
///
/// let mut c = UdpClient::connect("127.0.0.1:7780")?;
/// let (bytes, meta) = c.get(b"/index.html")?;
/// assert_eq!(meta.size, Some(bytes.len() as u64));
/// # Ok::<(), objmapper_client::Error>(())
/// ```
///
/// Every call waits at most `timeout × (retries + 1)` (default 500 ms × 3) and then fails
/// with [`Error::Timeout`]. Errors leave the client usable: there is no stream to break.
#[derive(Debug)]
pub struct UdpClient {
    sock: UdpSocket,
    peer: SocketAddr,
    timeout: Duration,
    retries: u32,
    max_response: usize,
    next_id: u32,
    rbuf: Box<[u8]>,
    wbuf: Vec<u8>,
}

/// A validated OK reply.
struct Reply {
    header: ResponseHeader,
    meta: Metadata,
    body: Option<Vec<u8>>,
}

impl UdpClient {
    /// Binds an ephemeral local port (of the address's family) and `connect()`s it to the
    /// server, so only the server's datagrams are received. Tries each address `addr`
    /// resolves to until one works. Sends nothing.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<UdpClient, Error> {
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        for a in addr.to_socket_addrs()? {
            let local: SocketAddr = if a.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            match UdpSocket::bind(local).and_then(|s| s.connect(a).map(|()| s)) {
                Ok(sock) => return Ok(UdpClient::from_socket(sock, a)),
                Err(e) => {
                    last = io::Error::new(e.kind(), format!("udp {a}: {e}"));
                }
            }
        }
        Err(Error::Io(last))
    }

    fn from_socket(sock: UdpSocket, peer: SocketAddr) -> UdpClient {
        let mut c = UdpClient {
            sock,
            peer,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            max_response: DEFAULT_UDP_MAX_RESPONSE,
            next_id: first_request_id(),
            rbuf: vec![0u8; RECV_BUF].into_boxed_slice(),
            wbuf: Vec::with_capacity(128),
        };
        c.size_recv_buffer();
        c
    }

    /// Best effort: a receive buffer that holds a whole burst of reply datagrams (each
    /// costs the kernel more than its payload), up to what the system allows.
    fn size_recv_buffer(&mut self) {
        let want = self.max_response.saturating_mul(4);
        let have = rustix::net::sockopt::socket_recv_buffer_size(&self.sock).unwrap_or(0);
        if have < want {
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&self.sock, want);
        }
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// How long each attempt waits for the whole reply. Default = 500 ms. A zero duration
    /// is taken as 1 ms.
    pub fn set_timeout(&mut self, d: Duration) {
        self.timeout = d.max(Duration::from_millis(1));
    }

    /// How many times a request is sent again, each time under a new request id, after an
    /// attempt times out. Default = 2 (three attempts in all).
    pub fn set_retries(&mut self, n: u32) {
        self.retries = n;
    }

    /// The largest reply (response frame) this client accepts and buffers; a larger one is
    /// an [`Error::Protocol`]. Set it to at least the server's `udp_max_response`.
    /// Default = 64 KiB, the server's default.
    pub fn set_max_response(&mut self, n: usize) {
        self.max_response = n;
        self.size_recv_buffer();
    }

    /// Checks the server is alive and answering.
    pub fn ping(&mut self) -> Result<(), Error> {
        let r = self.call(RequestHeader::new(Version::V1, Op::Ping, 0), b"")?;
        no_body(&r).map(drop)
    }

    /// Fetches a whole object's bytes with its metadata.
    pub fn get(&mut self, key: &[u8]) -> Result<(Vec<u8>, Metadata), Error> {
        self.get_range(key, 0, 0)
    }

    /// Fetches `len` bytes of an object from byte `offset` (`len` 0: to the end), with
    /// the whole object's metadata (`meta.size` is the object's size). A range that runs
    /// past the end is cut at the end; one that starts at or past the end (offset > 0)
    /// fails with RANGE_NOT_SATISFIABLE.
    pub fn get_range(
        &mut self,
        key: &[u8],
        offset: u64,
        len: u64,
    ) -> Result<(Vec<u8>, Metadata), Error> {
        check_key(key)?;
        if offset.checked_add(len).is_none() {
            return Err(Error::InvalidArgument(format!(
                "the range {offset} + {len} overflows a 64-bit offset"
            )));
        }
        let mut h = RequestHeader::new(Version::V1, Op::Get, 0);
        h.mode = Mode::Copy;
        h.offset = offset;
        h.length = len;
        let r = self.call(h, key)?;
        let Some(body) = r.body else {
            return Err(Error::Protocol(
                "GET answered OK without an inline body".into(),
            ));
        };
        check_range(&r.header, &r.meta, offset, len, body.len())?;
        Ok((body, r.meta))
    }

    /// Fetches an object's metadata only.
    pub fn head(&mut self, key: &[u8]) -> Result<Metadata, Error> {
        check_key(key)?;
        let r = self.call(RequestHeader::new(Version::V1, Op::Head, 0), key)?;
        no_body(&r)?;
        if r.meta.size.is_some_and(|s| s != r.header.length) {
            return Err(Error::Protocol(format!(
                "HEAD reply says length {} but SIZE {}",
                r.header.length,
                r.meta.size.unwrap_or_default()
            )));
        }
        Ok(r.meta)
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Sends the request and waits for its reply, resending under a new request id after
    /// each timeout. A non-OK status becomes [`Error::Server`].
    fn call(&mut self, mut h: RequestHeader, key: &[u8]) -> Result<Reply, Error> {
        let attempts = self.retries.saturating_add(1);
        for _ in 0..attempts {
            let id = self.take_id();
            h.request_id = id;
            self.wbuf.clear();
            self.wbuf.extend_from_slice(
                &UdpHeader {
                    request_id: id,
                    seq: 0,
                    total: 1,
                }
                .encode(),
            );
            encode_request(&h, key, &[], &mut self.wbuf);
            self.sock.send(&self.wbuf)?;
            if let Some(frame) = self.await_reply(id)? {
                return parse_reply(&frame, id);
            }
        }
        let ms = self.timeout.as_millis();
        Err(Error::Timeout(format!(
            "no complete reply from udp {} after {attempts} attempt(s) of {ms} ms each \
             ({} ms in all)",
            self.peer,
            ms.saturating_mul(u128::from(attempts))
        )))
    }

    /// Collects the datagrams of reply `id` until it is whole (`Some`) or the attempt's
    /// time is up (`None`). Datagrams of other request ids (late replies to an earlier
    /// attempt or call) and malformed ones are ignored.
    fn await_reply(&mut self, id: u32) -> Result<Option<Vec<u8>>, Error> {
        let deadline = Instant::now() + self.timeout;
        let mut reasm = Reassembler::new(id, self.max_response);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock.set_read_timeout(Some(left))?;
            let n = match self.sock.recv(&mut self.rbuf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(Error::Io(io::Error::new(
                        e.kind(),
                        format!("nothing answers on udp {} (port unreachable)", self.peer),
                    )))
                }
                Err(e) => return Err(Error::Io(e)),
            };
            match reasm.push(&self.rbuf[..n]) {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) | Err(Rejected::OtherRequest | Rejected::Malformed) => {}
                Err(Rejected::TooLarge) => {
                    return Err(Error::Protocol(format!(
                        "the reply exceeds this client's limit of {} bytes (set_max_response)",
                        self.max_response
                    )))
                }
                Err(e) => {
                    return Err(Error::Protocol(format!(
                        "inconsistent datagrams in the reply to request {id}: {e:?}"
                    )))
                }
            }
        }
    }
}

/// A random first request id, so replies meant for an earlier socket on the same port,
/// or guessed by someone off the path, are unlikely to match.
fn first_request_id() -> u32 {
    let mut b = [0u8; 4];
    let random = matches!(
        rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()),
        Ok(4)
    );
    let id = if random {
        u32::from_le_bytes(b)
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.subsec_nanos() ^ std::process::id().rotate_left(16)
    };
    id.max(1)
}

/// Decodes a reassembled reply: exactly one V1 response frame for `id`, its body exactly
/// as long as its header says, no fd, valid metadata.
fn parse_reply(frame: &[u8], id: u32) -> Result<Reply, Error> {
    let bad = |m: String| Err(Error::Protocol(m));
    let (r, used) = match decode_response(frame) {
        Ok(Decoded::Complete(r, used)) => (r, used),
        Ok(Decoded::Incomplete(need)) => {
            return bad(format!(
                "the reply holds {} bytes, its frame needs {need}",
                frame.len()
            ))
        }
        Err(e) => return bad(format!("bad response frame: {e}")),
    };
    let h = r.header;
    if h.version != Version::V1 {
        return bad("V2 response to a V1 request".into());
    }
    if h.request_id != id {
        return bad(format!(
            "the response frame carries request id {} in a reply to {id}",
            h.request_id
        ));
    }
    if h.fd_attached() {
        return bad("FD_ATTACHED in a UDP reply: no descriptor can cross UDP".into());
    }
    let body_len = frame.len() - used;
    if body_len as u64 != h.body_len() {
        return bad(format!(
            "the reply carries {body_len} bytes after its metadata, its header says {}",
            h.body_len()
        ));
    }
    if h.status != Status::Ok {
        return Err(Error::Server {
            status: h.status,
            message: r.message_text(),
        });
    }
    let meta = Metadata::decode(r.meta)
        .map_err(|e| Error::Protocol(format!("bad metadata in response: {e}")))?;
    let body = h.has_body().then(|| frame[used..].to_vec());
    Ok(Reply {
        header: h,
        meta,
        body,
    })
}

/// An OK reply that must carry no body.
fn no_body(r: &Reply) -> Result<&Metadata, Error> {
    if r.body.is_some() {
        return Err(Error::Protocol(
            "unexpected body in a response that carries no content".into(),
        ));
    }
    Ok(&r.meta)
}

/// Checks a GET reply's body against what was asked: it starts at `offset`, is no longer
/// than `len` (when given), lies inside the object, and a read to the end reaches it.
fn check_range(
    h: &ResponseHeader,
    meta: &Metadata,
    offset: u64,
    len: u64,
    got: usize,
) -> Result<(), Error> {
    let got = got as u64;
    let bad = |m: String| Err(Error::Protocol(m));
    if h.offset != offset {
        return bad(format!(
            "asked for bytes from {offset}, the reply starts at {}",
            h.offset
        ));
    }
    if len != 0 && got > len {
        return bad(format!("asked for {len} bytes, the reply carries {got}"));
    }
    if let Some(size) = meta.size {
        let end = offset.saturating_add(got);
        // Fewer bytes than asked (or "to the end") only when the object ends there.
        let short = len == 0 || got < len;
        if end > size || (short && end != size) {
            return bad(format!(
                "the reply's {got} bytes from {offset} do not match an object of {size} bytes"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use objmapper_proto::udp::split;
    use objmapper_proto::{decode_request, encode_response, resp_flags, MAX_KEY_LEN};
    use std::thread;

    /// A fake server: answers each request with the datagrams `reply` builds from the
    /// datagram's request id, `rounds` times, then stops.
    fn fake(
        rounds: usize,
        reply: impl Fn(u32) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (SocketAddr, thread::JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let addr = s.local_addr().unwrap();
        let j = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for _ in 0..rounds {
                let Ok((n, src)) = s.recv_from(&mut buf) else {
                    return;
                };
                let (uh, chunk) = UdpHeader::decode(&buf[..n]).expect("a datagram header");
                assert!(matches!(decode_request(chunk), Ok(Decoded::Complete(..))));
                for d in reply(uh.request_id) {
                    s.send_to(&d, src).unwrap();
                }
            }
        });
        (addr, j)
    }

    fn ok_frame(id: u32, body: &[u8], meta: &Metadata) -> Vec<u8> {
        let mut h = ResponseHeader::new(Version::V1, Status::Ok, id);
        h.mode = Mode::Copy;
        h.flags = resp_flags::BODY;
        h.length = body.len() as u64;
        let mut out = Vec::new();
        encode_response(&h, "", &meta.to_bytes().unwrap(), &mut out);
        out.extend_from_slice(body);
        out
    }

    fn client(addr: SocketAddr) -> UdpClient {
        let mut c = UdpClient::connect(addr).unwrap();
        c.set_timeout(Duration::from_millis(200));
        c.set_retries(0);
        c
    }

    fn sized(n: u64) -> Metadata {
        Metadata {
            size: Some(n),
            ..Metadata::default()
        }
    }

    #[test]
    fn reassembles_and_validates() {
        let body: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let b = body.clone();
        let (addr, j) = fake(1, move |id| {
            let mut ds = split(id, &ok_frame(id, &b, &sized(5000)), 1000);
            ds.reverse();
            ds
        });
        let (got, meta) = client(addr).get(b"k").unwrap();
        assert_eq!(got, body);
        assert_eq!(meta.size, Some(5000));
        j.join().unwrap();
    }

    #[test]
    fn body_shorter_than_its_header_is_a_protocol_error() {
        let (addr, j) = fake(1, |id| {
            let mut f = ok_frame(id, b"hello", &sized(5));
            f.pop();
            split(id, &f, 1000)
        });
        let e = client(addr).get(b"k").unwrap_err();
        assert!(matches!(e, Error::Protocol(_)), "{e}");
        j.join().unwrap();
    }

    #[test]
    fn inconsistent_total_is_a_protocol_error() {
        let (addr, j) = fake(1, |id| {
            let f = ok_frame(id, &[1u8; 3000], &sized(3000));
            let mut ds = split(id, &f, 1000);
            let other = split(id, &f, 500);
            ds[1] = other[1].clone();
            ds
        });
        let e = client(addr).get(b"k").unwrap_err();
        assert!(matches!(e, Error::Protocol(_)), "{e}");
        j.join().unwrap();
    }

    #[test]
    fn wrong_frame_id_fd_flag_and_size_mismatch_are_protocol_errors() {
        let cases: Vec<fn(u32) -> Vec<u8>> = vec![
            |id| ok_frame(id.wrapping_add(1), b"x", &sized(1)),
            |id| {
                let mut f = ok_frame(id, b"", &sized(0));
                f[4] |= resp_flags::FD_ATTACHED as u8;
                f
            },
            // A whole-object GET whose body is shorter than SIZE.
            |id| ok_frame(id, b"abc", &sized(4)),
        ];
        for make in cases {
            let (addr, j) = fake(1, move |id| split(id, &make(id), 1000));
            let e = client(addr).get(b"k").unwrap_err();
            assert!(matches!(e, Error::Protocol(_)), "{e}");
            j.join().unwrap();
        }
    }

    #[test]
    fn server_status_and_oversized_reply() {
        let (addr, j) = fake(1, |id| {
            let mut f = Vec::new();
            let h = ResponseHeader::new(Version::V1, Status::NotFound, id);
            encode_response(&h, "no object under that key", &[], &mut f);
            split(id, &f, 1000)
        });
        let e = client(addr).head(b"k").unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(e.to_string(), "NOT_FOUND: no object under that key");
        j.join().unwrap();

        let (addr, j) = fake(1, |id| {
            split(id, &ok_frame(id, &[0; 4000], &sized(4000)), 1000)
        });
        let mut c = client(addr);
        c.set_max_response(2000);
        let e = c.get(b"k").unwrap_err();
        assert!(
            matches!(e, Error::Protocol(ref m) if m.contains("2000")),
            "{e}"
        );
        j.join().unwrap();
    }

    #[test]
    fn times_out_after_every_attempt_with_new_ids() {
        let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = ids.clone();
        // Never answers; records the request ids.
        let (addr, j) = fake(3, move |id| {
            seen.lock().unwrap().push(id);
            Vec::new()
        });
        let mut c = client(addr);
        c.set_timeout(Duration::from_millis(100));
        c.set_retries(2);
        let t = Instant::now();
        let e = c.ping().unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300));
        let Error::Timeout(msg) = &e else {
            panic!("expected a timeout, got {e}")
        };
        assert!(msg.contains("3 attempt(s) of 100 ms"), "{msg}");
        j.join().unwrap();
        let ids = ids.lock().unwrap();
        assert_eq!(ids.len(), 3);
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    }

    #[test]
    fn local_refusals() {
        let (addr, j) = fake(0, |_| Vec::new());
        let mut c = client(addr);
        assert!(matches!(c.get(b""), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            c.head(&[b'k'; MAX_KEY_LEN + 1]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            c.get_range(b"k", u64::MAX, 2),
            Err(Error::InvalidArgument(_))
        ));
        j.join().unwrap();
    }

    #[test]
    fn range_checks() {
        let h = |offset: u64| {
            let mut h = ResponseHeader::new(Version::V1, Status::Ok, 1);
            h.offset = offset;
            h
        };
        let m = sized(10);
        assert!(check_range(&h(0), &m, 0, 0, 10).is_ok());
        assert!(check_range(&h(3), &m, 3, 4, 4).is_ok());
        assert!(check_range(&h(3), &m, 3, 100, 7).is_ok());
        assert!(check_range(&h(3), &m, 3, 100, 6).is_err());
        assert!(check_range(&h(0), &m, 0, 0, 9).is_err());
        assert!(check_range(&h(2), &m, 3, 4, 4).is_err());
        assert!(check_range(&h(3), &m, 3, 4, 5).is_err());
        assert!(check_range(&h(8), &m, 8, 0, 3).is_err());
    }
}
