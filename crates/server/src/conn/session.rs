//! The session: V1 or V2 (HELLO), what was negotiated, and the peer's permissions.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Session {
    /// Nothing received yet: the first byte decides V1 or V2.
    New,
    V1,
    V2 {
        fd_passing: bool,
        out_of_order: bool,
        /// The client promised POSITIONAL_READS (granted with FD_PASSING only): its
        /// fd-mode GETs get the store's cached, shared description of the version.
        shared_descriptions: bool,
        /// Requests that may be in flight at once (OUT_OF_ORDER only).
        depth: usize,
    },
}

impl Conn {
    pub(super) fn version(&self) -> Version {
        match self.session {
            Session::V2 { .. } => Version::V2,
            _ => Version::V1,
        }
    }

    pub(super) fn out_of_order(&self) -> bool {
        matches!(
            self.session,
            Session::V2 {
                out_of_order: true,
                ..
            }
        )
    }

    /// Whether fd-mode GETs may hand out a shared description: only on a V2 session
    /// whose client promised POSITIONAL_READS (never on V1).
    pub(super) fn shared_descriptions(&self) -> bool {
        matches!(
            self.session,
            Session::V2 {
                shared_descriptions: true,
                ..
            }
        )
    }

    /// Whether fds can travel on this connection: a Unix socket, and on V2 a session that
    /// negotiated FD_PASSING.
    pub(super) fn fd_ok(&self) -> bool {
        match self.session {
            Session::V2 { fd_passing, .. } => fd_passing,
            _ => self.fd_capable,
        }
    }

    pub(super) fn hello(
        &mut self,
        seq: u64,
        id: u32,
        req: &Request<'_>,
        body: &[u8],
        sh: &Shared,
    ) -> usize {
        // `process` waits until the whole body is buffered: the fixed part, then the
        // token if any.
        let len = req.header.body_len() as usize;
        let fail = |c: &mut Conn, status, msg: String| {
            c.finish_error(seq, id, status, msg);
            c.closing = true;
            len
        };
        let presented = &body[hello::HELLO_LEN..len];
        if let Some(token) = self.token_needed.take() {
            if !token.matches(presented) {
                let why = if presented.is_empty() {
                    "sent a HELLO without the token this listener requires"
                } else {
                    "sent a HELLO with a wrong token"
                };
                self.deny(sh, why);
                let msg = format!("authentication failed: {why}; closing");
                return fail(self, Status::Forbidden, msg);
            }
        }
        let asked = match Hello::decode(&body[..hello::HELLO_LEN]) {
            Ok(h) => h,
            Err(e) => {
                let msg = format!("{e}; closing the connection");
                return fail(self, Status::ProtocolError, msg);
            }
        };
        if asked.version < 2 {
            let msg = format!(
                "HELLO asked for version {}; this server speaks version 2",
                asked.version
            );
            return fail(self, Status::VersionUnsupported, msg);
        }
        let mut offered = hello::caps::PIPELINE | hello::caps::OUT_OF_ORDER;
        if self.fd_capable {
            offered |= hello::caps::FD_PASSING;
        }
        let mut capabilities = asked.capabilities & offered;
        // The POSITIONAL_READS promise is accepted (echoed) only where descriptors
        // travel: it means "you may share descriptions with me", and is void otherwise.
        if capabilities & hello::caps::FD_PASSING != 0 {
            capabilities |= asked.capabilities & hello::caps::POSITIONAL_READS;
        }
        let depth = if capabilities & hello::caps::PIPELINE != 0 {
            asked.depth.min(sh.limits.get().max_pipeline_depth).max(1)
        } else {
            1
        };
        let granted = Hello {
            version: 2,
            capabilities,
            depth,
        };
        self.set_session(Session::V2 {
            fd_passing: capabilities & hello::caps::FD_PASSING != 0,
            out_of_order: capabilities & hello::caps::OUT_OF_ORDER != 0,
            shared_descriptions: capabilities & hello::caps::POSITIONAL_READS != 0,
            depth: depth as usize,
        });
        let mut buf = Vec::with_capacity(proto::RESPONSE_HEADER_LEN + hello::HELLO_LEN);
        let mut rh = ResponseHeader::new(Version::V2, Status::Ok, id);
        rh.flags = resp_flags::BODY;
        rh.length = hello::HELLO_LEN as u64;
        encode_response(&rh, "", &[], &mut buf);
        buf.extend_from_slice(&granted.encode());
        self.finish(seq, Status::Ok, smallvec::smallvec![Out::bytes(buf)]);
        len
    }

    /// Looks the peer's permissions up again if the allowlist changed since they were
    /// read. Some(message): it has none left (revoked): the caller answers FORBIDDEN and
    /// closes.
    pub(super) fn refresh_perms(&mut self, sh: &Shared) -> Option<String> {
        let generation = sh.access.generation();
        if generation == self.access_gen {
            return None;
        }
        self.access_gen = generation;
        let (now, who) = match self.grantee {
            Grantee::Unix(p) => (
                sh.access.perms_of(p.uid, p.gid),
                format!("pid {} uid {} gid {}", p.pid, p.uid, p.gid),
            ),
            Grantee::Tcp => (sh.access.tcp(), "a TCP peer".to_string()),
            Grantee::Unknown => (Perms::NONE, "a peer with unknown credentials".to_string()),
        };
        if now == self.perms {
            return None;
        }
        tracing::info!(
            "the allowlist changed: {who} now has {now} on its open connection (had {})",
            self.perms
        );
        self.perms = now;
        if !now.is_empty() {
            return None;
        }
        sh.denied.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("closing the connection of {who}: its permissions were revoked");
        Some(format!(
            "{who} no longer has any permission on this server (the allowlist changed); \
             closing"
        ))
    }

    /// Counts and logs (at debug: port scanners fail too) a TLS handshake that failed.
    pub(super) fn tls_failed(&self, sh: &Shared, why: &str) {
        sh.tls_failures.fetch_add(1, Ordering::Relaxed);
        let who = self.stream.tcp_peer();
        let who = who.map_or("a TCP peer".to_string(), |a| a.to_string());
        tracing::debug!("TLS handshake with {who} failed: {why}");
    }

    /// Counts and logs a peer that failed to authenticate.
    pub(super) fn deny(&self, sh: &Shared, why: &str) {
        sh.denied.fetch_add(1, Ordering::Relaxed);
        let who = self
            .stream
            .tcp_peer()
            .map_or("a TCP peer".to_string(), |a| format!("TCP peer {a}"));
        tracing::warn!("refused {who}: it {why}");
    }
}
