//! `vmod_objmapper`: objmapper as Varnish 7.1's persistent, shared second-level store.
//!
//! ```vcl
//! import objmapper;
//! sub vcl_init {
//!     new store = objmapper.backend(socket = "/run/objmapper/objmapper.sock", prefix = "v1:");
//! }
//! ```
//!
//! - `store.backend()` is a backend that answers from objmapper: the stored status and
//!   headers, the body read from the fd objmapper passes. A miss is `404` and an
//!   unreachable daemon `503`, both with `X-Objmapper: miss|error` and no body, for the VCL
//!   to retry on the origin; `std.healthy(store.backend())` probes the daemon.
//! - The fetch filter named like the object (`store`), added to `beresp.filters`, writes
//!   the response into objmapper while Varnish receives it: PUT in fd mode, COMMIT when
//!   the body ended whole, ABORT otherwise. Status and headers are custom metadata pairs,
//!   the expiry is `beresp.ttl` from now.
//!
//! The key is the prefix plus `bereq.http.X-Objmapper-Key` if set, else the Host header
//! plus the URL.

/// The C-ABI glue generated from vmod.vcc by build.rs (what `varnish::boilerplate!()`
/// includes, with one more lint allowed: the generated `__fini` drops a `Box` through an
/// unused `Box::from_raw`).
#[cfg(not(test))]
#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    unused_imports,
    unused_must_use,
    dead_code,
    clippy::all
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}

// Under `cargo test` only the safe half is built (the glue needs varnishd's symbols).
#[cfg_attr(test, allow(dead_code))]
mod store;
#[cfg(not(test))]
mod sys;

#[cfg(not(test))]
pub use vcl_object::backend;

#[cfg(not(test))]
mod vcl_object {
    use std::sync::Arc;

    use varnish::vcl::ctx::Ctx;

    use crate::store::Shared;
    use crate::sys::Registration;

    /// The VCL object `objmapper.backend(socket, prefix)`.
    #[allow(non_camel_case_types)]
    pub struct backend {
        // Declared first so it is dropped first: the director points at `shared`.
        reg: Registration,
        _shared: Arc<Shared>,
    }

    impl backend {
        /// `new NAME = objmapper.backend(socket = "...", prefix = "")`.
        pub fn new(
            ctx: &mut Ctx,
            vcl_name: &str,
            socket: &str,
            prefix: &str,
        ) -> Result<Self, String> {
            let shared = Arc::new(Shared::new(vcl_name, socket, prefix)?);
            let reg = Registration::new(ctx, &shared)?;
            Ok(backend {
                reg,
                _shared: shared,
            })
        }

        /// `NAME.backend()`: the director answering from objmapper.
        pub fn backend(&self, _ctx: &mut Ctx) -> varnish_sys::VCL_BACKEND {
            self.reg.backend()
        }
    }
}
