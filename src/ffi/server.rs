//! `sseloop_t`: one `Server` plus what other threads may use without touching it.
//!
//! Thread rules (libuv's): every call here is loop-side: the `Server` inside is used by one thread
//! at a time, which [`Busy`] enforces (a second concurrent or re-entrant call gets
//! `SSELOOP_EBUSY`). Only `sseloop_publish` and `sseloop_stop` (in `publish.rs`) are for any
//! thread, and they reach only the `PublishHandle`. `sseloop_fd` and `sseloop_local_port` read
//! values copied at creation, so they are safe anywhere too.

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::config::sseloop_config_t;
use super::error::{
    Error, SSELOOP_EBUSY, SSELOOP_ECONFIG, SSELOOP_EDONE, SSELOOP_EINTERNAL, SSELOOP_OK,
};
use super::{copy_out, str_arg};
use crate::handle::PublishHandle;
use crate::{Server, Status};

/// The loop object behind `sseloop_t *`.
pub struct sseloop_t {
    /// Publish and stop, from any thread. Never mutated after creation.
    pub(crate) handle: PublishHandle,
    /// The epoll descriptor (copied: readable from any thread without touching the server).
    fd: RawFd,
    /// The bound port (copied, as `fd`).
    port: u16,
    /// Held for the whole of every loop-side call.
    busy: AtomicBool,
    /// The loop side; only reached through [`Busy::enter`].
    core: UnsafeCell<Core>,
}

pub(crate) struct Core {
    pub(crate) server: Server,
    /// Set when a panic unwound out of a loop-side call: the server's state may be torn.
    poisoned: bool,
}

/// Exclusive access to the loop side for the duration of one call.
pub(crate) struct Busy<'a> {
    owner: &'a sseloop_t,
}

impl<'a> Busy<'a> {
    /// Takes the loop side, or fails with `SSELOOP_EBUSY` (another call is using it) or
    /// `SSELOOP_EINTERNAL` (an earlier call panicked).
    pub(crate) fn enter(owner: &'a sseloop_t, function: &str) -> Result<Busy<'a>, Error> {
        if owner
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Error::new(
                SSELOOP_EBUSY,
                format!(
                    "{function}: the loop is in use (called from a hook, or while another thread \
                     is in a loop-side call)"
                ),
            ));
        }
        let busy = Busy { owner };
        if busy.core_ref().poisoned {
            return Err(Error::new(
                SSELOOP_EINTERNAL,
                format!("{function}: an earlier call on this loop failed internally"),
            ));
        }
        Ok(busy)
    }

    fn core_ref(&self) -> &Core {
        // SAFETY: the busy flag is ours (taken in `enter` with Acquire, released in `drop` with
        // Release), so no other reference to the core exists while `self` lives.
        unsafe { &*self.owner.core.get() }
    }

    pub(crate) fn core(&mut self) -> &mut Core {
        // SAFETY: as in `core_ref`; `&mut self` makes this the only borrow through this guard.
        unsafe { &mut *self.owner.core.get() }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.core().poisoned = true;
        }
        self.owner.busy.store(false, Ordering::Release);
    }
}

/// Counters and gauges of one loop: the numbers `/metrics` shows. All fields are `uint64_t`;
/// fields are only ever appended.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct sseloop_stats_t {
    /// Connections accepted.
    pub accepted: u64,
    /// Open plain-HTTP connections.
    pub open_http: u64,
    /// Open SSE streams.
    pub open_sse: u64,
    /// Open frame-mode connections.
    pub open_frames: u64,
    /// Events drained by the loop: one per publish whatever the number of topics, counted when
    /// the loop takes the event in (a `sseloop_publish` still queued for the loop is not counted
    /// yet).
    pub published: u64,
    /// Events queued to a subscriber (live and replayed).
    pub deliveries: u64,
    /// Bytes written to sockets.
    pub bytes_written: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Loop iterations.
    pub loop_iterations: u64,
    /// Events replayed from history.
    pub replayed: u64,
    /// Resumes from an id history no longer covers.
    pub resume_resets_expired: u64,
    /// Resumes from an id not of this run.
    pub resume_resets_unknown: u64,
    /// Server-initiated closes: request head too slow.
    pub closes_header_timeout: u64,
    /// Server-initiated closes: keep-alive idle.
    pub closes_idle_timeout: u64,
    /// Server-initiated closes: socket accepted nothing for too long.
    pub closes_write_stall: u64,
    /// Server-initiated closes: output queue over the limit.
    pub closes_slow_consumer: u64,
    /// Server-initiated closes: shutdown grace period over.
    pub closes_grace_expired: u64,
    /// Server-initiated closes: over the connection limit (503).
    pub closes_over_capacity: u64,
    /// Server-initiated closes: internal state-machine error.
    pub closes_internal: u64,
    /// `accept` failures for lack of descriptors.
    pub accept_fd_exhausted: u64,
    /// Other `accept` failures.
    pub accept_errors: u64,
    /// Requests refused for authentication.
    pub auth_failures: u64,
    /// Frames received in frame mode.
    pub frames_received: u64,
    /// Client publishes refused by the publish hook.
    pub publishes_vetoed: u64,
    /// Occupied connection slots.
    pub slab_connections: u64,
    /// Armed timers.
    pub timers: u64,
    /// Topic subscriptions held by connections.
    pub subscriptions: u64,
    /// Topics known.
    pub topics: u64,
    /// Events retained in history, summed over topics.
    pub history_events: u64,
    /// Bytes of the distinct events retained.
    pub history_bytes: u64,
    /// Write chunks lent to connections.
    pub chunks_lent: u64,
    /// Connection limit in force.
    pub max_connections: u64,
    /// Bytes the hub holds beyond history: entries still ahead of a reader, joined batches, the
    /// backlog (`sseloop_hub_transient_bytes`). Appended last, so older callers' layout holds.
    pub hub_transient_bytes: u64,
}

impl sseloop_stats_t {
    fn of(server: &Server) -> sseloop_stats_t {
        let m = server.metrics();
        let g = server.gauges();
        let n = |v: usize| v as u64;
        sseloop_stats_t {
            accepted: m.accepted,
            open_http: m.open[0],
            open_sse: m.open[1],
            open_frames: m.open[2],
            published: m.published,
            deliveries: m.deliveries,
            bytes_written: m.bytes_written,
            heartbeats: m.heartbeats,
            loop_iterations: m.loop_iterations,
            replayed: m.replayed,
            resume_resets_expired: m.resume_resets[0],
            resume_resets_unknown: m.resume_resets[1],
            closes_header_timeout: m.closes[0],
            closes_idle_timeout: m.closes[1],
            closes_write_stall: m.closes[2],
            closes_slow_consumer: m.closes[3],
            closes_grace_expired: m.closes[4],
            closes_over_capacity: m.closes[5],
            closes_internal: m.closes[6],
            accept_fd_exhausted: m.accept_fd_exhausted,
            accept_errors: m.accept_errors,
            auth_failures: m.auth_failures,
            frames_received: m.frames_received,
            publishes_vetoed: m.publishes_vetoed,
            slab_connections: n(g.slab_connections),
            timers: n(g.timers),
            subscriptions: n(g.subscriptions),
            topics: n(g.topics),
            history_events: n(g.history_events),
            history_bytes: n(g.history_bytes),
            chunks_lent: n(g.chunks_lent),
            max_connections: n(g.max_connections),
            hub_transient_bytes: n(g.hub_transient_bytes),
        }
    }
}

/// Takes the loop side of `lp` for `function`, or returns the failure's code from the caller.
macro_rules! enter {
    ($lp:ident, $function:literal) => {
        match Busy::enter($lp, $function) {
            Ok(busy) => busy,
            Err(e) => return e.report(),
        }
    };
}

ffi_fn! {
    /// Validates `config`, binds the listener and creates a loop; stores it in `*out` (NULL on
    /// failure). `config` is copied: the caller still owns it. The caller owns the loop and
    /// releases it with `sseloop_free`. Errors: SSELOOP_EINVAL (NULL argument), SSELOOP_ECONFIG
    /// (options refused), SSELOOP_EIO (bind or epoll failed).
    fn sseloop_new(config: *const sseloop_config_t, out: *mut *mut sseloop_t) -> c_int {
        if out.is_null() {
            return Error::null("out").report();
        }
        // SAFETY: `out` is non-NULL and points to writable storage for one pointer (contract).
        unsafe { out.write(std::ptr::null_mut()) };
        let config = non_null!(config);
        let server = match Server::bind(config.config.clone()) {
            Ok(server) => server,
            Err(e) => return Error::from_start(e).report(),
        };
        let lp = Box::new(sseloop_t {
            handle: server.handle(),
            fd: server.raw_fd(),
            port: server.local_addr().port(),
            busy: AtomicBool::new(false),
            core: UnsafeCell::new(Core {
                server,
                poisoned: false,
            }),
        });
        // SAFETY: checked non-NULL above.
        unsafe { out.write(Box::into_raw(lp)) };
        SSELOOP_OK
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// Frees a loop: closes the listener and every connection at once (call `sseloop_stop` and
    /// drive the loop until it reports SSELOOP_EDONE first for a graceful end). NULL is a no-op.
    /// No other thread may use the loop any more, and it must not be called from a hook: a loop
    /// that is in use is left alone (and leaked) with a last-error message instead.
    fn sseloop_free(lp: *mut sseloop_t) {
        if lp.is_null() {
            return;
        }
        {
            // SAFETY: a non-NULL pointer is a live loop from `sseloop_new` (contract).
            let shared = unsafe { &*lp };
            if shared
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                Error::new(SSELOOP_EBUSY, "sseloop_free: the loop is in use; not freed").report();
                return;
            }
        }
        // SAFETY: from `Box::into_raw` in `sseloop_new`; we hold the busy flag, and the contract
        // says no other thread uses the loop from now on, so this is the last reference.
        drop(unsafe { Box::from_raw(lp) });
    } ?= ();
}

ffi_fn! {
    /// Drive mode 1: runs the loop on the calling thread until it has stopped (after
    /// `sseloop_stop` and the grace period). Returns SSELOOP_OK then (also when it had already
    /// stopped), SSELOOP_EIO if polling fails, SSELOOP_EBUSY when the loop is in use.
    fn sseloop_run(lp: *mut sseloop_t) -> c_int {
        let lp = non_null!(lp);
        let mut busy = enter!(lp, "sseloop_run");
        match busy.core().server.run() {
            Ok(()) => SSELOOP_OK,
            Err(e) => Error::from_io(e).report(),
        }
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// Drive mode 2: one iteration, waiting at most `timeout_ms` for work (0: do not wait; a
    /// negative value: until the next timer or event). Returns SSELOOP_OK while the loop runs and
    /// SSELOOP_EDONE once it has stopped (not a failure); SSELOOP_EIO / SSELOOP_EBUSY on failure.
    fn sseloop_poll(lp: *mut sseloop_t, timeout_ms: c_int) -> c_int {
        let lp = non_null!(lp);
        let mut busy = enter!(lp, "sseloop_poll");
        let wait = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        match busy.core().server.poll_once(wait) {
            Ok(Status::Running) => SSELOOP_OK,
            Ok(Status::Stopped) => SSELOOP_EDONE,
            Err(e) => Error::from_io(e).report(),
        }
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// Applies a new configuration to a running loop, as SIGHUP does for the binary: the
    /// settings that can change live (authorization tokens and keys, CORS origin, heartbeat,
    /// retry, timeouts, max connections, log format and level) take effect before the next
    /// iteration; the others keep their values until a restart (the log line lists them). An
    /// invalid configuration changes nothing: SSELOOP_ECONFIG with the reason. `config` is
    /// copied: the caller still owns it. Loop-side (SSELOOP_EBUSY when the loop is in use).
    fn sseloop_reload(lp: *mut sseloop_t, config: *const sseloop_config_t) -> c_int {
        let lp = non_null!(lp);
        let config = non_null!(config);
        let mut busy = enter!(lp, "sseloop_reload");
        match busy.core().server.reload(&config.config) {
            Ok(_) => SSELOOP_OK,
            Err(e) => Error::new(SSELOOP_ECONFIG, e).report(),
        }
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// Drive mode 3: the loop's descriptor (epoll), for the host's own poller. When it is
    /// readable, or `sseloop_timeout_ms` has elapsed, call `sseloop_poll(loop, 0)`. Valid until
    /// `sseloop_free`; watch it for readability only, never read or close it. Any thread.
    fn sseloop_fd(lp: *const sseloop_t) -> c_int {
        non_null!(lp).fd
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// Milliseconds the host may wait before calling `sseloop_poll(loop, 0)` even if the
    /// descriptor stays quiet: -1 when no timer is armed, 0 when work is pending (rounded up so
    /// a host never spins on a sub-millisecond timer). Never fails and never sets the last
    /// error: NULL, a loop in use or a failed loop give 0 (poll now; `sseloop_poll` then reports
    /// the error).
    fn sseloop_timeout_ms(lp: *const sseloop_t) -> c_int {
        // SAFETY: NULL or a live loop (contract).
        let Some(lp) = (unsafe { lp.as_ref() }) else {
            return 0;
        };
        // Not a failure (0 means "poll now"), so the last error is left alone.
        let Ok(mut busy) = Busy::enter(lp, "sseloop_timeout_ms") else {
            return 0;
        };
        match busy.core().server.next_timeout() {
            None => -1,
            Some(d) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                c_int::try_from(ms).unwrap_or(c_int::MAX)
            }
        }
    } ?= 0;
}

ffi_fn! {
    /// The bound TCP port (useful after listening on port 0). Any thread.
    fn sseloop_local_port(lp: *const sseloop_t) -> c_int {
        c_int::from(non_null!(lp).port)
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// Fills the caller's `sseloop_stats_t` with the loop's counters and gauges (the numbers
    /// `/metrics` shows). `size` is the size of the caller's struct (`sizeof(sseloop_stats_t)` as
    /// its header declares it): fields are only ever appended, so a caller built against an older
    /// header gets the fields it knows and nothing is written past `size` bytes; fields the
    /// caller knows and this library does not are zeroed. Only whole fields are written.
    /// Loop-side: SSELOOP_EBUSY from inside a hook.
    fn sseloop_stats(lp: *const sseloop_t, out: *mut sseloop_stats_t, size: usize) -> c_int {
        let lp = non_null!(lp);
        if out.is_null() {
            return Error::null("out").report();
        }
        let mut busy = enter!(lp, "sseloop_stats");
        let stats = sseloop_stats_t::of(&busy.core().server);
        let field = std::mem::size_of::<u64>();
        let size = size - size % field;
        let known = size.min(std::mem::size_of::<sseloop_stats_t>());
        let dst = out.cast::<u8>();
        // SAFETY: `out` is non-NULL and has `size` writable bytes (contract); `known <= size`,
        // and `stats` is a local of `known` bytes or more, so the ranges cannot overlap. The
        // struct is `repr(C)` u64 fields with no padding, so every byte copied is initialised.
        unsafe {
            std::ptr::copy_nonoverlapping(
                std::ptr::addr_of!(stats).cast::<u8>(),
                dst,
                known,
            );
            std::ptr::write_bytes(dst.add(known), 0, size - known);
        }
        SSELOOP_OK
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// The server API (docs/API.md) without HTTP or authorization (the host is trusted):
    /// `method` ("GET", "POST", "DELETE") and `target` (path and query, e.g.
    /// "/api/v1/connections?topic=news") as NUL-terminated strings, `body` (`body_len` bytes, a
    /// disconnect's JSON; NULL when 0). The JSON answer goes to `out` (`out_len` bytes,
    /// NUL-terminated, truncated to fit; NULL to ask for the length) and the status the same HTTP
    /// request would get to `*status`. Returns the answer's full length. A revocation walks every
    /// connection before returning. Loop-side (SSELOOP_EBUSY from a hook).
    fn sseloop_api(
        lp: *const sseloop_t,
        method: *const c_char,
        target: *const c_char,
        body: *const c_char,
        body_len: usize,
        out: *mut c_char,
        out_len: usize,
        status: *mut c_int,
    ) -> c_int {
        let lp = non_null!(lp);
        if status.is_null() {
            return Error::null("status").report();
        }
        // SAFETY: NULL or NUL-terminated (contract).
        let (method, target) = match unsafe { (str_arg(method, "method"), str_arg(target, "target")) } {
            (Ok(m), Ok(t)) => (m, t),
            (Err(e), _) | (_, Err(e)) => return e.report(),
        };
        let body: &[u8] = if body_len == 0 {
            &[]
        } else if body.is_null() {
            return Error::null("body").report();
        } else {
            // SAFETY: `body` points to `body_len` readable bytes (contract), alive for this call.
            unsafe { std::slice::from_raw_parts(body.cast::<u8>(), body_len) }
        };
        let mut busy = enter!(lp, "sseloop_api");
        let (code, answer) = busy.core().server.api_request(method, target, body);
        // SAFETY: `status` is non-NULL and writable (contract); `out` is NULL or has `out_len`
        // writable bytes (contract).
        let full = unsafe {
            *status = c_int::from(code);
            copy_out(&answer, out, out_len)
        };
        c_int::try_from(full).unwrap_or(c_int::MAX)
    } ?= SSELOOP_EINTERNAL;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::config::{sseloop_config_free, sseloop_config_new, sseloop_config_set_listen};
    use crate::ffi::error::sseloop_last_error;
    use crate::ffi::publish::sseloop_stop;

    ffi_fn! {
        /// Panics unless given 7: exercises the boundary's fallback.
        fn ffi_test_panic(value: c_int) -> c_int {
            assert_eq!(value, 7, "boom");
            value
        } ?= SSELOOP_EINTERNAL;
    }

    fn last_error() -> String {
        let mut buf = [0 as std::ffi::c_char; 256];
        // SAFETY: buf has 256 bytes.
        unsafe { sseloop_last_error(buf.as_mut_ptr(), buf.len()) };
        // SAFETY: NUL-terminated by the call.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    fn new_loop() -> *mut sseloop_t {
        // SAFETY: every pointer passed is a live object of this test or a C string literal.
        unsafe {
            let config = sseloop_config_new();
            assert_eq!(
                sseloop_config_set_listen(config, c"127.0.0.1:0".as_ptr()),
                0
            );
            let mut lp = std::ptr::null_mut();
            assert_eq!(sseloop_new(config, &mut lp), SSELOOP_OK);
            sseloop_config_free(config);
            lp
        }
    }

    #[test]
    fn a_panic_becomes_the_fallback_code_and_a_message() {
        // SAFETY: no pointer arguments.
        assert_eq!(unsafe { ffi_test_panic(7) }, 7);
        // SAFETY: as above.
        assert_eq!(unsafe { ffi_test_panic(1) }, SSELOOP_EINTERNAL);
        let message = last_error();
        assert!(
            message.starts_with("internal error in ffi_test_panic:"),
            "{message}"
        );
        assert!(message.contains("boom"), "{message}");
    }

    #[test]
    fn a_loop_in_use_is_refused_and_a_torn_one_stays_refused() {
        let lp = new_loop();
        // SAFETY: `lp` is live until the `sseloop_free` at the end.
        let shared = unsafe { &*lp };
        {
            let _busy = Busy::enter(shared, "test").unwrap();
            let mut stats = sseloop_stats_t::default();
            let size = std::mem::size_of_val(&stats);
            // SAFETY: live loop, writable stats of `size` bytes.
            let rc = unsafe { sseloop_stats(lp, &mut stats, size) };
            assert_eq!(rc, SSELOOP_EBUSY);
            // SAFETY: live loop; refused (and not freed) while in use.
            unsafe { sseloop_free(lp) };
            assert!(last_error().contains("not freed"));
            // SAFETY: live loop: publish and stop never need the loop side.
            assert_eq!(unsafe { sseloop_stop(lp) }, SSELOOP_OK);
        }
        let torn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _busy = Busy::enter(shared, "test").unwrap();
            panic!("torn");
        }));
        assert!(torn.is_err());
        // SAFETY: live loop.
        assert_eq!(unsafe { sseloop_poll(lp, 0) }, SSELOOP_EINTERNAL);
        assert!(last_error().contains("earlier call"), "{}", last_error());
        // SAFETY: live loop.
        assert_eq!(unsafe { sseloop_timeout_ms(lp) }, 0);
        // SAFETY: live loop; frees it (a torn loop can still be freed).
        unsafe { sseloop_free(lp) };
    }
}
