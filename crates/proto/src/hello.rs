//! The HELLO payload that opens a V2 session.
//!
//! HELLO is a V2 request frame (magic 0xA2, op HELLO) whose body is a 16-byte [`Hello`],
//! optionally followed by an authentication token (1 to [`HELLO_TOKEN_MAX`] bytes) for a
//! TCP listener that requires one. The server answers with a V2 response whose 16-byte
//! body is the granted [`Hello`].

/// Length of the fixed part of the HELLO body, both directions.
pub const HELLO_LEN: usize = 16;
/// Longest authentication token a HELLO may carry after its fixed 16 bytes.
pub const HELLO_TOKEN_MAX: usize = 256;
/// The body's own magic, "OBJM".
pub const HELLO_MAGIC: [u8; 4] = *b"OBJM";

/// Capability bits.
pub mod caps {
    /// Up to `depth` requests may be outstanding.
    pub const PIPELINE: u32 = 0x0000_0001;
    /// Replies may arrive in any order, matched by request id.
    pub const OUT_OF_ORDER: u32 = 0x0000_0002;
    /// fd mode: fds travel by SCM_RIGHTS. Never granted on TCP or UDP.
    pub const FD_PASSING: u32 = 0x0000_0004;
    /// A promise, not a feature: the client uses every descriptor it is passed only
    /// positionally (`pread`/`preadv`, `sendfile`/`splice`/`copy_file_range` with an
    /// explicit offset, `mmap`, `fstat`), never its file offset (`read`, `readv`,
    /// `lseek`, `write`) and never its status flags (`fcntl(F_SETFL)`), because the
    /// server may then hand it a file description shared with other clients that made
    /// the same promise. Granted (echoed) only together with FD_PASSING. See
    /// docs/PROTOCOL.md, "Shared descriptions".
    pub const POSITIONAL_READS: u32 = 0x0000_0008;
    /// Every feature bit this version defines: what a client asks for to get everything
    /// the server offers. [`POSITIONAL_READS`] is left out on purpose: it is a promise
    /// about how the client uses descriptors, which nobody should make by asking for
    /// "everything".
    pub const KNOWN: u32 = PIPELINE | OUT_OF_ORDER | FD_PASSING;
    /// Every bit this version defines, features and promises.
    pub const DEFINED: u32 = KNOWN | POSITIONAL_READS;
}

/// What a client asks for, or what a server grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Client: the highest version it speaks. Server: the version chosen.
    pub version: u8,
    /// Capability bits, see [`caps`].
    pub capabilities: u32,
    /// Pipeline depth: requests that may be outstanding at once (at least 1).
    pub depth: u16,
}

/// Why a HELLO body is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HelloError {
    /// Fewer than 16 bytes.
    Short,
    /// The body does not start with "OBJM".
    BadMagic,
    /// A reserved byte is not zero.
    ReservedNotZero,
}

impl std::fmt::Display for HelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HelloError::Short => "HELLO body is shorter than 16 bytes",
            HelloError::BadMagic => "HELLO body does not start with \"OBJM\"",
            HelloError::ReservedNotZero => "a reserved HELLO byte is not zero",
        })
    }
}

impl std::error::Error for HelloError {}

impl Hello {
    /// The 16 body bytes: `"OBJM" | version u8 | 0 0 0 | capabilities u32 | depth u16 | 0 0`.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..4].copy_from_slice(&HELLO_MAGIC);
        b[4] = self.version;
        b[8..12].copy_from_slice(&self.capabilities.to_le_bytes());
        b[12..14].copy_from_slice(&self.depth.to_le_bytes());
        b
    }

    /// Parses the 16 body bytes.
    pub fn decode(b: &[u8]) -> Result<Hello, HelloError> {
        if b.len() < HELLO_LEN {
            return Err(HelloError::Short);
        }
        if b[0..4] != HELLO_MAGIC {
            return Err(HelloError::BadMagic);
        }
        if b[5..8] != [0, 0, 0] || b[14..16] != [0, 0] {
            return Err(HelloError::ReservedNotZero);
        }
        Ok(Hello {
            version: b[4],
            capabilities: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            depth: u16::from_le_bytes([b[12], b[13]]),
        })
    }
}
