//! The event-loop workers (the acceptor is in `accept.rs`, the blocking pool in
//! `pool.rs`, the state they share in `shared.rs`).
//!
//! The acceptor hands each new connection to a worker, round-robin, through a channel plus
//! a mio Waker. Each worker owns its connections
//! outright (no locks on the request path) and drives them from its own epoll instance.
//!
//! Slow store mutations (DURABLE commits and deletes, with their fsyncs, and large commits
//! with their copy) run on the [`crate::pool::BlockingPool`], so they never stall an event loop. A job's
//! reply comes back to its worker as a [`crate::shared::Done`] through the worker's channel plus the same
//! Waker.

use crate::conn::{Accepted, Conn};
use crate::shared::{Done, Shared, WorkerIo};
use crate::sys::PipePool;
use mio::{Events, Interest, Poll, Token, Waker};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);
/// Size of each worker's read buffer: one whole maximal frame header+key+meta fits.
const READ_BUF: usize = 128 * 1024;

pub(crate) struct WorkerHandle {
    pub(crate) tx: Sender<Accepted>,
    pub(crate) waker: Arc<Waker>,
}

pub(crate) fn spawn_worker(
    idx: usize,
    shared: Arc<Shared>,
) -> std::io::Result<(WorkerHandle, std::thread::JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let io = WorkerIo {
        pipes: PipePool::new(),
        done_tx,
        waker: waker.clone(),
    };
    let join = std::thread::Builder::new()
        .name(format!("objm-worker-{idx}"))
        .spawn(move || run_worker(idx, poll, rx, done_rx, io, shared))?;
    Ok((WorkerHandle { tx, waker }, join))
}

/// Never inlined: `scripts/request-cost` counts the event loops' instructions from this
/// symbol down (callgrind's `--toggle-collect`).
#[inline(never)]
fn run_worker(
    idx: usize,
    mut poll: Poll,
    rx: Receiver<Accepted>,
    done_rx: Receiver<Done>,
    mut io: WorkerIo,
    sh: Arc<Shared>,
) {
    let mut events = Events::with_capacity(1024);
    // Keyed by token (a small integer the worker hands out): FxHash, not SipHash, on
    // every event.
    let mut conns: rustc_hash::FxHashMap<usize, Conn> = Default::default();
    let mut next_token = 0usize;
    let mut rbuf = vec![0u8; READ_BUF].into_boxed_slice();
    let mut draining_since: Option<Instant> = None;
    let mut last_sweep = Instant::now();
    let shard = sh.metrics.shard(idx);
    // When the last wakeup found work (busy polling, `ServerConfig::busy_poll`).
    let mut busy_at: Option<Instant> = None;
    loop {
        let timeout = if draining_since.is_some() {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(1)
        };
        let found =
            busy_at.is_some_and(|t| spin_for_events(&mut poll, &mut events, t, sh.cfg.busy_poll));
        if !found {
            if let Err(e) = poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!("epoll failed: {e}");
                    break;
                }
            }
        }
        busy_at = (!sh.cfg.busy_poll.is_zero() && !events.is_empty()).then(Instant::now);
        for ev in events.iter() {
            if ev.token() == WAKER {
                while let Ok(done) = done_rx.try_recv() {
                    let key = done.token;
                    let keep = match conns.get_mut(&key) {
                        // The connection may have closed while its job ran: drop the reply.
                        Some(c) => {
                            c.complete(done.seq, done.id, done.reply);
                            c.on_ready(&sh, &mut rbuf, &mut io, false)
                                && !(draining_since.is_some() && c.is_idle())
                                && update_interest(&poll, key, c)
                        }
                        None => continue,
                    };
                    if !keep {
                        conns.remove(&key);
                        sh.connections.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                while let Ok(accepted) = rx.try_recv() {
                    let token = next_token;
                    next_token = next_token.wrapping_add(1) % (usize::MAX - 1);
                    let mut conn = Conn::new(accepted, token, shard.clone(), &sh);
                    if let Err(e) =
                        poll.registry()
                            .register(conn.source(), Token(token), Interest::READABLE)
                    {
                        tracing::warn!("registering a connection failed: {e}");
                        sh.connections.fetch_sub(1, Ordering::Relaxed);
                        continue;
                    }
                    conns.insert(token, conn);
                }
                continue;
            }
            let key = ev.token().0;
            let keep = match conns.get_mut(&key) {
                Some(c) => {
                    c.on_ready(
                        &sh,
                        &mut rbuf,
                        &mut io,
                        ev.is_read_closed() || ev.is_error(),
                    ) && !(draining_since.is_some() && c.is_idle())
                        && update_interest(&poll, key, c)
                }
                None => continue,
            };
            if !keep {
                conns.remove(&key);
                sh.connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let now = Instant::now();
        if draining_since.is_none() && sh.shutdown.load(Ordering::Acquire) {
            draining_since = Some(now);
            let before = conns.len();
            conns.retain(|_, c| !c.is_idle());
            sh.connections
                .fetch_sub(before - conns.len(), Ordering::Relaxed);
        }
        if now.duration_since(last_sweep) >= Duration::from_secs(1) {
            last_sweep = now;
            let mut dead = Vec::new();
            for (k, c) in conns.iter_mut() {
                match c.check_timeouts(now, &sh) {
                    crate::conn::Timeout::None => {}
                    crate::conn::Timeout::Close => dead.push(*k),
                    crate::conn::Timeout::Answered => {
                        if !c.on_ready(&sh, &mut rbuf, &mut io, true)
                            || !update_interest(&poll, *k, c)
                        {
                            dead.push(*k);
                        }
                    }
                }
            }
            for k in dead {
                conns.remove(&k);
                sh.connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if let Some(t) = draining_since {
            if conns.is_empty() || now.duration_since(t) >= sh.cfg.shutdown_grace {
                if !conns.is_empty() {
                    tracing::warn!(
                        "shutdown grace period over: closing {} busy connection(s)",
                        conns.len()
                    );
                }
                sh.connections.fetch_sub(conns.len(), Ordering::Relaxed);
                conns.clear();
                break;
            }
        }
    }
}

/// Busy polling: asks epoll without sleeping until it reports events or `window` has
/// passed since `since`. Returns whether `events` holds events.
fn spin_for_events(poll: &mut Poll, events: &mut Events, since: Instant, window: Duration) -> bool {
    while since.elapsed() < window {
        if poll.poll(events, Some(Duration::ZERO)).is_ok() && !events.is_empty() {
            return true;
        }
        std::hint::spin_loop();
    }
    false
}

/// Registers for WRITABLE only while output is backed up. Returns false if epoll refused.
fn update_interest(poll: &Poll, token: usize, c: &mut Conn) -> bool {
    let want = c.wants_writable();
    if want == c.registered_writable {
        return true;
    }
    let interest = if want {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    match poll
        .registry()
        .reregister(c.source(), Token(token), interest)
    {
        Ok(()) => {
            c.registered_writable = want;
            true
        }
        Err(e) => {
            tracing::warn!("updating epoll interest failed: {e}");
            false
        }
    }
}
