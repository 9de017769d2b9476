//! Every call into Varnish's C API and every raw pointer of the VMOD lives here: the
//! director (backend) callbacks, the fetch processor that reads a hit's body from its fd,
//! and the store filter that tees a fetched body into objmapper.
//!
//! Varnish 7.1 is driven through `varnish-sys` 0.0.11 (bindgen over Debian's
//! libvarnishapi-dev headers); the `varnish` crate of that version has no backend API, so
//! the director is registered by hand with `VRT_AddDirector`, as its C VMODs do.

use std::ffi::{c_int, c_void, CString};
use std::fs::File;
use std::mem::size_of;
use std::os::unix::fs::FileExt;
use std::ptr;
use std::sync::Arc;

use objmapper_client::FdObject;
use varnish::vcl::ctx::{Ctx, LogTag};
use varnish_sys as vs;

use crate::store::{self, Lookup, Shared, StoreRequest, Tee};

/// Slots of a `struct http`: the request or status line, then the headers from
/// `HDR_FIRST` on.
const HDR_METHOD: usize = vs::HTTP_HDR_METHOD as usize;
const HDR_URL: usize = vs::HTTP_HDR_URL as usize;
const HDR_STATUS: usize = vs::HTTP_HDR_STATUS as usize;
const HDR_FIRST: usize = vs::HTTP_HDR_FIRST as usize;

/// Names Varnish gives its built-in fetch filters; a store filter may not shadow them.
const BUILTIN_FILTERS: &[&str] = &["esi", "esi_gzip", "gzip", "gunzip", "testgunzip"];

/// A `Sync` wrapper for Varnish's method tables, which hold raw pointers.
struct Methods<T>(T);
// SAFETY: the tables are immutable and only hold pointers to static strings and functions.
unsafe impl<T> Sync for Methods<T> {}

static DIRECTOR_METHODS: Methods<vs::vdi_methods> = Methods(vs::vdi_methods {
    magic: vs::VDI_METHODS_MAGIC,
    type_: c"objmapper".as_ptr(),
    http1pipe: None,
    healthy: Some(be_healthy),
    resolve: None,
    gethdrs: Some(be_gethdrs),
    getip: None,
    finish: Some(be_finish),
    event: None,
    destroy: None,
    panic: None,
    list: None,
});

static FD_BODY_VFP: Methods<vs::vfp> = Methods(vs::vfp {
    name: c"objmapper_fd".as_ptr(),
    init: None,
    pull: Some(fd_body_pull),
    fini: Some(fd_body_fini),
    priv1: ptr::null(),
});

/// A registered director and store filter; unregistered (director) when dropped.
pub(crate) struct Registration {
    be: vs::VCL_BACKEND,
}

// SAFETY: the director pointer is only handed to Varnish, which synchronises its use.
unsafe impl Send for Registration {}
// SAFETY: as above; `Registration` has no interior state of its own.
unsafe impl Sync for Registration {}

impl Registration {
    /// Registers the director named `vcl_name` and the store filter of the same name,
    /// both pointing at `shared`. The caller keeps `shared` alive longer than the returned
    /// value (the object declares the registration first, so it is dropped first).
    pub(crate) fn new(ctx: &mut Ctx, shared: &Arc<Shared>) -> Result<Registration, String> {
        let name = &shared.name;
        if BUILTIN_FILTERS.contains(&name.as_str()) {
            return Err(format!(
                "objmapper.backend: the object is named {name:?}, which is a built-in fetch \
                 filter; its store filter takes the object's name, so pick another name"
            ));
        }
        let cname = CString::new(name.as_str())
            .map_err(|_| format!("objmapper.backend: object name {name:?} contains a NUL"))?;
        let priv_ = Arc::as_ptr(shared) as *mut c_void;
        // SAFETY: ctx is the live vcl_init context; the methods table is static; priv_
        // outlives the director (see above); "%s" with one C string argument.
        let be = unsafe {
            vs::VRT_AddDirector(
                ctx.raw,
                &DIRECTOR_METHODS.0,
                priv_,
                c"%s".as_ptr(),
                cname.as_ptr(),
            )
        };
        if be.is_null() {
            return Err(format!(
                "objmapper.backend {name}: Varnish refused to add the director"
            ));
        }
        // The filter table and its name are leaked on purpose: Varnish keeps pointers to
        // them until the VCL is discarded, after the object itself is gone. A few dozen
        // bytes per VCL load.
        let vfp: &'static vs::vfp = Box::leak(Box::new(vs::vfp {
            name: cname.into_raw(),
            init: Some(store_init),
            pull: Some(store_pull),
            fini: Some(store_fini),
            priv1: priv_,
        }));
        // SAFETY: live vcl_init context; vfp is 'static.
        unsafe { vs::VRT_AddVFP(ctx.raw, vfp) };
        Ok(Registration { be })
    }

    pub(crate) fn backend(&self) -> vs::VCL_BACKEND {
        self.be
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: be came from VRT_AddDirector and is deleted once.
        unsafe { vs::VRT_DelDirector(&mut self.be) };
    }
}

/// Runs `f`, turning a panic into `default`: a panic must not unwind into Varnish's C
/// code (it would abort the whole child process).
fn guard<T>(default: T, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(default)
}

/// The `Shared` a director or filter was registered with.
///
/// # Safety
/// `p` is the `priv_` given at registration, and the object owning it is alive.
unsafe fn shared<'a>(p: *const c_void) -> &'a Shared {
    &*(p as *const Shared)
}

/// The bytes of header slot `i` of `h`, if set.
///
/// # Safety
/// `h` points to a live `struct http`.
unsafe fn slot<'a>(h: *const vs::http, i: usize) -> Option<&'a [u8]> {
    let h = &*h;
    if i >= usize::from(h.nhd) {
        return None;
    }
    let t = &*h.hd.add(i);
    if t.b.is_null() || t.e.is_null() {
        return None;
    }
    Some(std::slice::from_raw_parts(
        t.b as *const u8,
        t.e.offset_from(t.b) as usize,
    ))
}

/// All headers of `h` as (name, value), in order; lines that are not `Name: value` with
/// a UTF-8 name are skipped.
///
/// # Safety
/// `h` points to a live `struct http`.
unsafe fn headers(h: *const vs::http) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for i in HDR_FIRST..usize::from((*h).nhd) {
        let Some(line) = slot(h, i) else { continue };
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(&line[..colon]) else {
            continue;
        };
        let value = &line[colon + 1..];
        let start = value
            .iter()
            .position(|b| *b != b' ' && *b != b'\t')
            .unwrap_or(value.len());
        out.push((name.to_owned(), value[start..].to_vec()));
    }
    out
}

/// The first header `name` of `h`.
fn find<'a>(hdrs: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    hdrs.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The objmapper key of the current backend request.
///
/// # Safety
/// `bereq` is the live backend request.
unsafe fn request_key(shared: &Shared, bereq: *const vs::http) -> Vec<u8> {
    let hdrs = headers(bereq);
    shared.key(
        find(&hdrs, "host"),
        slot(bereq, HDR_URL).unwrap_or_default(),
        find(&hdrs, store::KEY_HEADER),
    )
}

/// The log of the fetch `bo` belongs to (null if there is no fetch).
///
/// # Safety
/// `bo` is null or the live busyobj of the current fetch.
unsafe fn fetch_vsl(bo: *mut vs::busyobj) -> *mut vs::vsl_log {
    if bo.is_null() {
        ptr::null_mut()
    } else {
        (*bo).vsl.as_mut_ptr()
    }
}

/// Writes `msg` to a fetch's log (VFP callbacks get a context without one).
///
/// # Safety
/// `vsl` is null or a live fetch log.
unsafe fn log(vsl: *mut vs::vsl_log, tag: LogTag, msg: &str) {
    let Ok(msg) = CString::new(msg) else { return };
    if !vsl.is_null() {
        vs::VSLb(vsl, tag.into_u32(), c"%s".as_ptr(), msg.as_ptr());
    }
}

/// Sets up `bo->htc` the way Varnish's fetch code expects of every backend.
///
/// # Safety
/// `bo` is the live busyobj of the current fetch.
unsafe fn setup_htc(bo: *mut vs::busyobj, body: bool, len: u64) -> bool {
    let htc = vs::WS_Alloc((*bo).ws.as_mut_ptr(), size_of::<vs::http_conn>() as u32)
        as *mut vs::http_conn;
    if htc.is_null() {
        return false;
    }
    ptr::write(htc, vs::http_conn::default());
    (*htc).magic = vs::HTTP_CONN_MAGIC;
    (*htc).doclose = vs::SC_NULL.as_ptr();
    (*htc).content_length = len as vs::ssize_t;
    (*htc).body_status = if body {
        vs::BS_LENGTH.as_ptr()
    } else {
        vs::BS_NONE.as_ptr()
    };
    (*bo).htc = htc;
    true
}

/// `healthy` callback: the daemon answers a PING (cached for a second).
///
/// # Safety
/// Called by Varnish with a director registered by [`Registration::new`] (whose object,
/// and so `priv_`, is alive) and a null or writable `changed`.
unsafe extern "C" fn be_healthy(
    _ctx: *const vs::vrt_ctx,
    be: vs::VCL_BACKEND,
    changed: *mut vs::VCL_TIME,
) -> vs::VCL_BOOL {
    let shared = shared((*be).priv_);
    let (ok, when) = guard((false, 0.0), || shared.healthy());
    if !changed.is_null() {
        *changed = when;
    }
    vs::VCL_BOOL::from(ok)
}

/// `gethdrs` callback: look the key up in objmapper and build beresp.
///
/// A hit answers the stored status and headers plus `X-Objmapper: hit`, and pushes a
/// fetch processor that reads the body from the passed fd. A miss answers
/// `404` + `X-Objmapper: miss`, objmapper down or failing `503` + `X-Objmapper: error`,
/// both without a body, for the VCL to retry on the origin.
///
/// # Safety
/// Called by Varnish on a fetch thread with the fetch's live context (`bo`, `bereq`,
/// `beresp`) and a director registered by [`Registration::new`].
unsafe extern "C" fn be_gethdrs(ctxp: *const vs::vrt_ctx, be: vs::VCL_BACKEND) -> c_int {
    let shared = shared((*be).priv_);
    let bo = (*ctxp).bo;
    let key = request_key(shared, (*ctxp).http_bereq);
    let method = slot((*ctxp).http_bereq, HDR_METHOD).unwrap_or_default();
    let want_body = method != b"HEAD";
    let mut ctx = Ctx::new(ctxp as *mut vs::vrt_ctx);

    let lookup = guard(Lookup::Unavailable("the VMOD panicked".into()), || {
        shared.lookup(&key)
    });
    let Some(beresp) = ctx.http_beresp.as_mut() else {
        return -1;
    };
    let mut ok = beresp.set_proto("HTTP/1.1").is_ok();
    let mut unavailable = None;
    let (body, result) = match lookup {
        Lookup::Hit { obj, resp } => {
            beresp.set_status(resp.status);
            for (name, value) in &resp.headers {
                if name.eq_ignore_ascii_case("age") {
                    continue;
                }
                let v = String::from_utf8_lossy(value);
                ok &= beresp.set_header(name, &v).is_ok();
            }
            ok &= beresp
                .set_header("Age", &store::age(&resp, &obj.meta).to_string())
                .is_ok();
            ok &= beresp
                .set_header("Content-Length", &obj.length.to_string())
                .is_ok();
            ((want_body && obj.length > 0).then_some(obj), "hit")
        }
        Lookup::Miss => {
            beresp.set_status(404);
            ok &= beresp.set_header("Content-Length", "0").is_ok();
            // Never cached, even by a VCL that does not retry (built-in VCL: uncacheable).
            ok &= beresp.set_header("Cache-Control", "no-store").is_ok();
            (None, "miss")
        }
        Lookup::Unavailable(reason) => {
            beresp.set_status(503);
            ok &= beresp.set_header("Content-Length", "0").is_ok();
            ok &= beresp.set_header("Cache-Control", "no-store").is_ok();
            unavailable = Some(reason);
            (None, "error")
        }
    };
    ok &= beresp.set_header(store::RESULT_HEADER, result).is_ok();
    if let Some(reason) = unavailable {
        let msg = format!("objmapper {}: unavailable: {reason}", shared.name);
        log(fetch_vsl(bo), LogTag::FetchError, &msg);
    }
    if !ok {
        log(
            fetch_vsl(bo),
            LogTag::FetchError,
            "objmapper: out of workspace or header slots building beresp",
        );
        return -1;
    }
    let len = body.as_ref().map_or(0, |o| o.length);
    if !setup_htc(bo, body.is_some(), len) {
        log(
            fetch_vsl(bo),
            LogTag::FetchError,
            "objmapper: out of workspace for the backend connection",
        );
        return -1;
    }
    if let Some(obj) = body {
        let vfe = vs::VFP_Push((*bo).vfc, &FD_BODY_VFP.0);
        if vfe.is_null() {
            (*bo).htc = ptr::null_mut();
            log(
                fetch_vsl(bo),
                LogTag::FetchError,
                "objmapper: out of workspace for the body processor",
            );
            return -1;
        }
        (*vfe).priv1 = Box::into_raw(Box::new(FdBody::new(obj))) as *mut c_void;
    }
    0
}

/// `finish` callback: the fetch is over, `bo->htc` is ours to clear.
///
/// # Safety
/// Called by Varnish with the fetch's live context.
unsafe extern "C" fn be_finish(ctx: *const vs::vrt_ctx, _be: vs::VCL_BACKEND) {
    (*(*ctx).bo).htc = ptr::null_mut();
}

/// The body of a hit: read with `pread` from the passed fd.
struct FdBody {
    file: File,
    offset: u64,
    length: u64,
    done: u64,
}

impl FdBody {
    fn new(obj: FdObject) -> FdBody {
        FdBody {
            file: File::from(obj.fd),
            offset: obj.offset,
            length: obj.length,
            done: 0,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.length - self.done;
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        loop {
            match self.file.read_at(&mut buf[..n], self.offset + self.done) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(r) => {
                    self.done += r as u64;
                    return Ok(r);
                }
            }
        }
    }
}

/// Body of a hit, `pull`: the next bytes from the fd into Varnish's buffer.
///
/// # Safety
/// Called by Varnish with the entry pushed in [`be_gethdrs`] (`priv1` is its `FdBody`)
/// and a writable buffer of `*lp` bytes at `p`.
unsafe extern "C" fn fd_body_pull(
    vc: *mut vs::vfp_ctx,
    vfe: *mut vs::vfp_entry,
    p: *mut c_void,
    lp: *mut vs::ssize_t,
) -> vs::vfp_status {
    let body = &mut *((*vfe).priv1 as *mut FdBody);
    let buf = std::slice::from_raw_parts_mut(p as *mut u8, *lp as usize);
    let read = guard(Err(std::io::Error::other("the VMOD panicked")), || {
        body.read(buf)
    });
    match read {
        Ok(0) if !buf.is_empty() => {
            *lp = 0;
            let msg = CString::new(format!(
                "objmapper: object fd ended after {} of {} bytes",
                body.done, body.length
            ))
            .unwrap_or_default();
            vs::VFP_Error(vc, c"%s".as_ptr(), msg.as_ptr())
        }
        Ok(n) => {
            *lp = n as vs::ssize_t;
            if body.done == body.length {
                vs::vfp_status_VFP_END
            } else {
                vs::vfp_status_VFP_OK
            }
        }
        Err(e) => {
            *lp = 0;
            let msg =
                CString::new(format!("objmapper: reading the object fd: {e}")).unwrap_or_default();
            vs::VFP_Error(vc, c"%s".as_ptr(), msg.as_ptr())
        }
    }
}

/// Body of a hit, `fini`: closes the fd.
///
/// # Safety
/// Called by Varnish once per entry, with `priv1` null or the `FdBody`.
unsafe extern "C" fn fd_body_fini(_vc: *mut vs::vfp_ctx, vfe: *mut vs::vfp_entry) {
    let p = (*vfe).priv1 as *mut FdBody;
    if !p.is_null() {
        drop(Box::from_raw(p));
        (*vfe).priv1 = ptr::null_mut();
    }
}

/// A store filter's state for one fetch: the tee and the fetch's log.
struct StoreFetch {
    tee: Tee,
    vsl: *mut vs::vsl_log,
}

/// Store filter `init`: start a PUT for this response, or step aside (VFP_NULL) when it
/// is not to be stored (a hit from objmapper itself, a TTL under a second, objmapper
/// unavailable).
///
/// # Safety
/// Called by Varnish with a fetch's live vfp_ctx (`req`, `resp`, `oc`, `wrk`) and an
/// entry of the filter registered in [`Registration::new`] (`vfp->priv1` is the object's
/// `Shared`, alive as long as the VCL).
unsafe extern "C" fn store_init(
    _ctx: *const vs::vrt_ctx,
    vc: *mut vs::vfp_ctx,
    vfe: *mut vs::vfp_entry,
) -> vs::vfp_status {
    // The context of a filter's init carries no busyobj: the fetch's bereq, beresp,
    // object and worker come with the vfp_ctx.
    let shared = shared((*(*vfe).vfp).priv1);
    let vsl = if (*vc).wrk.is_null() {
        ptr::null_mut()
    } else {
        (*(*vc).wrk).vsl
    };
    let resp_headers = headers((*vc).resp);
    if find(&resp_headers, store::RESULT_HEADER) == Some(b"hit") {
        return vs::vfp_status_VFP_NULL;
    }
    // What Varnish will not cache (pass, hit-for-miss, hit-for-pass: beresp.uncacheable,
    // or the built-in VCL's verdict on Set-Cookie, no-store...) is not stored either:
    // objmapper is a second level of the same cache, shared by every varnishd.
    let uncacheable =
        (vs::oc_flags_OC_F_PRIVATE | vs::oc_flags_OC_F_HFM | vs::oc_flags_OC_F_HFP) as u8;
    if !(*vc).oc.is_null() && (*(*vc).oc).flags & uncacheable != 0 {
        let msg = format!("objmapper {}: not storing: uncacheable", shared.name);
        log(vsl, LogTag::Debug, &msg);
        return vs::vfp_status_VFP_NULL;
    }
    let status = slot((*vc).resp, HDR_STATUS)
        .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok())
        .unwrap_or(200);
    let ttl = if (*vc).oc.is_null() {
        0.0
    } else {
        f64::from((*(*vc).oc).ttl)
    };
    let req = StoreRequest {
        key: request_key(shared, (*vc).req),
        status,
        headers: resp_headers,
        ttl,
    };
    let begun = guard(Err("the VMOD panicked".to_owned()), || {
        shared.begin_store(req)
    });
    match begun {
        Ok(Some(tee)) => {
            let f = StoreFetch { tee, vsl };
            (*vfe).priv1 = Box::into_raw(Box::new(f)) as *mut c_void;
            vs::vfp_status_VFP_OK
        }
        Ok(None) => {
            let msg = format!(
                "objmapper {}: not storing: TTL {ttl:.1}s is under a second",
                shared.name
            );
            log(vsl, LogTag::Debug, &msg);
            vs::vfp_status_VFP_NULL
        }
        Err(e) => {
            let msg = format!("objmapper {}: not storing: {e}", shared.name);
            log(vsl, LogTag::FetchError, &msg);
            vs::vfp_status_VFP_NULL
        }
    }
}

/// Store filter `pull`: pass the body through, copying it into the staging fd; COMMIT at
/// the end, ABORT if the fetch fails.
///
/// # Safety
/// Called by Varnish with an entry whose `init` succeeded (`priv1` is its `StoreFetch`)
/// and a writable buffer of `*lp` bytes at `p`.
unsafe extern "C" fn store_pull(
    vc: *mut vs::vfp_ctx,
    vfe: *mut vs::vfp_entry,
    p: *mut c_void,
    lp: *mut vs::ssize_t,
) -> vs::vfp_status {
    let st = vs::VFP_Suck(vc, p, lp);
    let f = &mut *((*vfe).priv1 as *mut StoreFetch);
    let tee = &mut f.tee;
    let shared = shared((*(*vfe).vfp).priv1);
    let bytes: &[u8] = match st {
        vs::vfp_status_VFP_OK | vs::vfp_status_VFP_END => {
            std::slice::from_raw_parts(p as *const u8, usize::try_from(*lp).unwrap_or(0))
        }
        _ => &[],
    };
    let res = guard(Err("the VMOD panicked".to_owned()), || match st {
        vs::vfp_status_VFP_OK => tee.write(bytes),
        vs::vfp_status_VFP_END => tee.write(bytes).and_then(|()| tee.finish()),
        _ => {
            tee.abort();
            Err("the fetch failed, PUT aborted".to_owned())
        }
    });
    if let Err(e) = res {
        let msg = format!("objmapper {}: not stored: {e}", shared.name);
        // Logged, not failed: the client still gets the body.
        log(f.vsl, LogTag::FetchError, &msg);
    }
    shared.recycle(tee);
    st
}

/// Store filter `fini`: dropping the tee aborts a PUT that was not committed.
///
/// # Safety
/// Called by Varnish once per entry, with `priv1` null or the `StoreFetch`.
unsafe extern "C" fn store_fini(_vc: *mut vs::vfp_ctx, vfe: *mut vs::vfp_entry) {
    let p = (*vfe).priv1 as *mut StoreFetch;
    if !p.is_null() {
        drop(Box::from_raw(p));
        (*vfe).priv1 = ptr::null_mut();
    }
}
