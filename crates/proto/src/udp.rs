//! UDP framing: one request per datagram, responses split over datagrams.
//!
//! Every datagram, in both directions, starts with an 8-byte header in the spirit of
//! memcached's UDP protocol:
//!
//! ```text
//! offset size field
//! 0      4    request_id   u32 LE, chosen by the client, echoed in every response datagram
//! 4      2    seq          u16 LE, 0-based index of this datagram in the message
//! 6      2    total        u16 LE, number of datagrams in the message (>= 1)
//! 8      ..   chunk        bytes seq*chunk_len .. of the message (a request or response frame)
//! ```
//!
//! A request is always one datagram (`seq` 0, `total` 1). A response frame (header,
//! message, metadata, body) is cut into chunks of at most `max_payload` bytes; the
//! client reassembles them by `seq` and must not use the frame until every chunk of that
//! `request_id` has arrived with a consistent `total`.

use std::collections::BTreeMap;

/// Size of the datagram header.
pub const UDP_HEADER_LEN: usize = 8;
/// Default chunk size: keeps each datagram under a 1500-byte Ethernet MTU.
pub const DEFAULT_UDP_PAYLOAD: usize = 1400;
/// Default largest response the server sends over UDP (64 KiB).
pub const DEFAULT_UDP_MAX_RESPONSE: usize = 64 * 1024;

/// The datagram header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpHeader {
    /// Echoed request id.
    pub request_id: u32,
    /// Index of this datagram.
    pub seq: u16,
    /// Datagrams in the message.
    pub total: u16,
}

impl UdpHeader {
    /// The 8 header bytes.
    pub fn encode(&self) -> [u8; UDP_HEADER_LEN] {
        let mut b = [0u8; UDP_HEADER_LEN];
        b[0..4].copy_from_slice(&self.request_id.to_le_bytes());
        b[4..6].copy_from_slice(&self.seq.to_le_bytes());
        b[6..8].copy_from_slice(&self.total.to_le_bytes());
        b
    }

    /// Splits a datagram into its header and chunk; `None` if it is shorter than a header
    /// or its header is inconsistent (`total` 0, or `seq` >= `total`).
    pub fn decode(d: &[u8]) -> Option<(UdpHeader, &[u8])> {
        if d.len() < UDP_HEADER_LEN {
            return None;
        }
        let h = UdpHeader {
            request_id: u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
            seq: u16::from_le_bytes([d[4], d[5]]),
            total: u16::from_le_bytes([d[6], d[7]]),
        };
        if h.total == 0 || h.seq >= h.total {
            return None;
        }
        Some((h, &d[UDP_HEADER_LEN..]))
    }
}

/// Cuts `message` into datagrams of at most `max_payload` chunk bytes each.
///
/// Panics if `max_payload` is 0 or the message needs more than 65535 datagrams; callers
/// bound the message size first (the server's maximum response size).
pub fn split(request_id: u32, message: &[u8], max_payload: usize) -> Vec<Vec<u8>> {
    assert!(max_payload > 0, "max_payload must be positive");
    let chunks: Vec<&[u8]> = if message.is_empty() {
        vec![&[][..]]
    } else {
        message.chunks(max_payload).collect()
    };
    let total = u16::try_from(chunks.len()).expect("message needs more than 65535 datagrams");
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let h = UdpHeader {
                request_id,
                seq: i as u16,
                total,
            };
            let mut d = Vec::with_capacity(UDP_HEADER_LEN + c.len());
            d.extend_from_slice(&h.encode());
            d.extend_from_slice(c);
            d
        })
        .collect()
}

/// Why a datagram was not accepted by a [`Reassembler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejected {
    /// Too short or an impossible header.
    Malformed,
    /// For another request id (a late reply to an earlier request, or a stray).
    OtherRequest,
    /// `total` differs from earlier datagrams of this message.
    InconsistentTotal,
    /// This `seq` already arrived with different bytes.
    ConflictingDuplicate,
    /// The message would exceed the reassembler's size limit.
    TooLarge,
}

/// Collects the datagrams of one response, in any order, and yields the whole message
/// only when every chunk is there. Duplicates with identical bytes are ignored.
#[derive(Debug)]
pub struct Reassembler {
    request_id: u32,
    max_message: usize,
    total: Option<u16>,
    chunks: BTreeMap<u16, Vec<u8>>,
    bytes: usize,
}

impl Reassembler {
    /// A reassembler for the reply to `request_id`, refusing messages over `max_message`.
    pub fn new(request_id: u32, max_message: usize) -> Self {
        Reassembler {
            request_id,
            max_message,
            total: None,
            chunks: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// Feeds one datagram. Returns the whole message once complete.
    pub fn push(&mut self, datagram: &[u8]) -> Result<Option<Vec<u8>>, Rejected> {
        let (h, chunk) = UdpHeader::decode(datagram).ok_or(Rejected::Malformed)?;
        if h.request_id != self.request_id {
            return Err(Rejected::OtherRequest);
        }
        match self.total {
            Some(t) if t != h.total => return Err(Rejected::InconsistentTotal),
            _ => self.total = Some(h.total),
        }
        if let Some(prev) = self.chunks.get(&h.seq) {
            return if prev.as_slice() == chunk {
                Ok(None)
            } else {
                Err(Rejected::ConflictingDuplicate)
            };
        }
        if self.bytes + chunk.len() > self.max_message {
            return Err(Rejected::TooLarge);
        }
        self.bytes += chunk.len();
        self.chunks.insert(h.seq, chunk.to_vec());
        if self.chunks.len() == h.total as usize {
            let mut out = Vec::with_capacity(self.bytes);
            for c in self.chunks.values() {
                out.extend_from_slice(c);
            }
            return Ok(Some(out));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_reassemble_in_any_order() {
        let msg: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut ds = split(7, &msg, 1400);
        assert_eq!(ds.len(), 8);
        ds.reverse();
        ds.swap(2, 5);
        let mut r = Reassembler::new(7, 64 * 1024);
        let mut done = None;
        for (i, d) in ds.iter().enumerate() {
            // A duplicate is harmless.
            if i == 3 {
                assert_eq!(r.push(d).unwrap(), None);
            }
            if let Some(m) = r.push(d).unwrap() {
                done = Some(m);
            }
        }
        assert_eq!(done.unwrap(), msg);
    }

    #[test]
    fn lost_datagrams_never_yield_a_message() {
        let msg = vec![9u8; 5000];
        let ds = split(1, &msg, 1000);
        let mut r = Reassembler::new(1, 64 * 1024);
        for d in ds.iter().skip(1) {
            assert_eq!(r.push(d).unwrap(), None);
        }
    }

    #[test]
    fn strays_and_inconsistencies_are_rejected() {
        let mut r = Reassembler::new(1, 100);
        assert_eq!(r.push(b"short"), Err(Rejected::Malformed));
        let other = split(2, b"x", 10);
        assert_eq!(r.push(&other[0]), Err(Rejected::OtherRequest));
        let a = split(1, &[1u8; 30], 10);
        assert_eq!(r.push(&a[0]).unwrap(), None);
        let b = split(1, &[2u8; 50], 10);
        assert_eq!(r.push(&b[0]), Err(Rejected::InconsistentTotal));
        let mut c = a[1].clone();
        assert_eq!(r.push(&c).unwrap(), None);
        *c.last_mut().unwrap() ^= 1;
        assert_eq!(r.push(&c), Err(Rejected::ConflictingDuplicate));
        let big = split(1, &[0u8; 300], 100);
        let mut r = Reassembler::new(1, 150);
        assert_eq!(r.push(&big[0]).unwrap(), None);
        assert_eq!(r.push(&big[1]), Err(Rejected::TooLarge));
        // A header with seq >= total is malformed.
        let mut h = UdpHeader {
            request_id: 1,
            seq: 0,
            total: 1,
        }
        .encode()
        .to_vec();
        h[4] = 1;
        assert_eq!(UdpHeader::decode(&h), None);
    }

    #[test]
    fn empty_message_is_one_datagram() {
        let ds = split(3, b"", 100);
        assert_eq!(ds.len(), 1);
        let mut r = Reassembler::new(3, 10);
        assert_eq!(r.push(&ds[0]).unwrap(), Some(vec![]));
    }
}
