//! A UDP relay between a client and the server, on 127.0.0.1, that tampers with replies.
//!
//! Requests go to the server unchanged. The reply datagrams of each request are collected
//! until the reply is whole, then handed to the test's transform with the reply's index
//! (0 for the first reply the relay saw); the relay sends the client whatever datagrams
//! the transform returns, in that order. It stops when dropped, or by itself after
//! [`LIFETIME`].

use objmapper_proto::udp::UdpHeader;
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The relay thread gives up after this long, whatever the test does.
pub const LIFETIME: Duration = Duration::from_secs(60);

/// Decides what the client receives of one whole reply: (reply index, datagrams in `seq`
/// order) -> datagrams to send.
pub type Transform = Box<dyn FnMut(usize, Vec<Vec<u8>>) -> Vec<Vec<u8>> + Send>;

pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    replies: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    join: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start(server: SocketAddr, transform: Transform) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(server).unwrap();
        // Short timeouts: the thread alternates between the two sockets.
        front
            .set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        back.set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        let addr = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (s, r, q) = (stop.clone(), replies.clone(), requests.clone());
        let join = std::thread::Builder::new()
            .name("udp-relay".into())
            .spawn(move || run(front, back, transform, s, r, q))
            .unwrap();
        Relay {
            addr,
            stop,
            replies,
            requests,
            join: Some(join),
        }
    }

    /// Where the client should send its requests.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whole replies received from the server so far.
    pub fn replies(&self) -> usize {
        self.replies.load(Ordering::SeqCst)
    }

    /// Requests forwarded to the server so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(j) = self.join.take() {
            let r = j.join();
            if !std::thread::panicking() {
                r.expect("relay thread panicked");
            }
        }
    }
}

fn run(
    front: UdpSocket,
    back: UdpSocket,
    mut transform: Transform,
    stop: Arc<AtomicBool>,
    replies: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
) {
    let deadline = Instant::now() + LIFETIME;
    let mut buf = vec![0u8; 64 * 1024];
    let mut client: Option<SocketAddr> = None;
    // request id -> seq -> datagram, for replies not yet whole.
    let mut partial: HashMap<u32, BTreeMap<u16, Vec<u8>>> = HashMap::new();
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        if let Ok((n, src)) = front.recv_from(&mut buf) {
            client = Some(src);
            requests.fetch_add(1, Ordering::SeqCst);
            let _ = back.send(&buf[..n]);
        }
        // Drain the server's side before looking at the client again.
        while let Ok(n) = back.recv(&mut buf) {
            let d = buf[..n].to_vec();
            let Some((h, _)) = UdpHeader::decode(&d) else {
                continue;
            };
            let seqs = partial.entry(h.request_id).or_default();
            seqs.insert(h.seq, d);
            if seqs.len() < h.total as usize {
                continue;
            }
            let whole: Vec<Vec<u8>> = partial
                .remove(&h.request_id)
                .unwrap()
                .into_values()
                .collect();
            let idx = replies.fetch_add(1, Ordering::SeqCst);
            if let Some(c) = client {
                for out in transform(idx, whole) {
                    let _ = front.send_to(&out, c);
                }
            }
        }
    }
}
