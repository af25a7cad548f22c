//! Host callbacks: the publish hook (may veto a client's publish) and the connection hook.
//!
//! Both run on the thread driving the loop, in the middle of an iteration. Re-entrancy (c-ares
//! style): a hook may call `sseloop_publish` and `sseloop_stop` (they only queue work), and the
//! calls that never touch the loop side (`sseloop_fd`, `sseloop_local_port`, `sseloop_last_error`,
//! `sseloop_strerror`, `sseloop_version`). Loop-side calls (`sseloop_run`, `sseloop_poll`,
//! `sseloop_stats`, `sseloop_set_*_hook`) fail with `SSELOOP_EBUSY`, `sseloop_timeout_ms` gives 0
//! and `sseloop_free` refuses. A hook must return normally (no `longjmp`, no C++ exception).

use std::ffi::{c_char, c_int, c_void, CString};

use super::error::{SSELOOP_EINTERNAL, SSELOOP_OK};
use super::server::{sseloop_t, Busy};
use crate::hooks::{ConnectionEvent, PublishAttempt, Verdict};

/// The publish hook's "publish it" answer.
pub const SSELOOP_ALLOW: c_int = 0;
/// The publish hook's "refuse it" answer (any nonzero value refuses): HTTP publishers get 403,
/// frame publishers an ERROR FORBIDDEN.
pub const SSELOOP_DENY: c_int = 1;
/// `sseloop_connection_event_t::kind` of an accepted connection.
pub const SSELOOP_CONNECTION_OPENED: c_int = 1;
/// `sseloop_connection_event_t::kind` of a closed connection.
pub const SSELOOP_CONNECTION_CLOSED: c_int = 2;

/// An event a client is publishing (HTTP or frames), shown before it gets an id. Every pointer
/// is valid only during the hook call.
#[repr(C)]
pub struct sseloop_publish_attempt_t {
    /// `ntopics` NUL-terminated topic names (validated, distinct).
    pub topics: *const *const c_char,
    /// Number of topics (at least 1).
    pub ntopics: usize,
    /// The event type, NUL-terminated, or NULL for none.
    pub event_type: *const c_char,
    /// The data: `data_len` bytes of UTF-8, not NUL-terminated.
    pub data: *const c_char,
    /// Length of `data` in bytes.
    pub data_len: usize,
    /// The publishing connection's id (as given to the connection hook).
    pub connection: u64,
    /// The verified `sub` of the publisher's JWT, NUL-terminated; NULL without JWT
    /// authorization or when the token has no `sub`.
    pub subject: *const c_char,
}

/// A connection opened or closed. `peer` is valid only during the hook call.
#[repr(C)]
pub struct sseloop_connection_event_t {
    /// `SSELOOP_CONNECTION_OPENED` or `SSELOOP_CONNECTION_CLOSED`.
    pub kind: c_int,
    /// Unique for the life of the loop.
    pub id: u64,
    /// "ADDR:PORT" of the peer (NUL-terminated) on open, when known; NULL otherwise.
    pub peer: *const c_char,
}

/// Publish hook: returns `SSELOOP_ALLOW` or `SSELOOP_DENY`.
pub type sseloop_publish_hook =
    Option<unsafe extern "C" fn(*mut c_void, *const sseloop_publish_attempt_t) -> c_int>;
/// Connection hook.
pub type sseloop_connection_hook =
    Option<unsafe extern "C" fn(*mut c_void, *const sseloop_connection_event_t)>;

/// Builds the C view of an attempt and asks the host.
fn ask(
    hook: unsafe extern "C" fn(*mut c_void, *const sseloop_publish_attempt_t) -> c_int,
    userdata: *mut c_void,
    attempt: &PublishAttempt<'_>,
) -> Verdict {
    // Topics and event types are validated (no NUL), so these conversions cannot fail; a
    // failure would mean a bug upstream, and refusing is the safe answer to it.
    let Ok(topics) = attempt
        .topics
        .iter()
        .map(|t| CString::new(*t))
        .collect::<Result<Vec<_>, _>>()
    else {
        return Verdict::Deny;
    };
    let Ok(event_type) = attempt.event_type.map(CString::new).transpose() else {
        return Verdict::Deny;
    };
    // A `sub` with a NUL in it cannot be shown to C faithfully: refuse rather than truncate
    // the identity an audit would record.
    let Ok(subject) = attempt.subject.map(CString::new).transpose() else {
        return Verdict::Deny;
    };
    let pointers: Vec<*const c_char> = topics.iter().map(|t| t.as_ptr()).collect();
    let view = sseloop_publish_attempt_t {
        topics: pointers.as_ptr(),
        ntopics: pointers.len(),
        event_type: event_type.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
        data: attempt.data.as_ptr().cast(),
        data_len: attempt.data.len(),
        connection: attempt.connection,
        subject: subject.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
    };
    // SAFETY: the host registered `hook` as a function of this type and `userdata` as its
    // argument; `view` and everything it points to live until the call returns.
    match unsafe { hook(userdata, &view) } {
        SSELOOP_ALLOW => Verdict::Allow,
        _ => Verdict::Deny,
    }
}

fn tell(
    hook: unsafe extern "C" fn(*mut c_void, *const sseloop_connection_event_t),
    userdata: *mut c_void,
    event: ConnectionEvent,
) {
    let (kind, id, peer) = match event {
        ConnectionEvent::Opened { id, peer } => (SSELOOP_CONNECTION_OPENED, id, peer),
        ConnectionEvent::Closed { id } => (SSELOOP_CONNECTION_CLOSED, id, None),
    };
    let peer = peer.and_then(|p| CString::new(p.to_string()).ok());
    let view = sseloop_connection_event_t {
        kind,
        id,
        peer: peer.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()),
    };
    // SAFETY: as in `ask`: a host-registered function and its userdata; `view` outlives the call.
    unsafe { hook(userdata, &view) }
}

ffi_fn! {
    /// Installs (replaces) the publish hook; NULL `hook` removes it (everything is allowed).
    /// `userdata` is passed back unchanged; the host owns it and keeps it valid until the hook is
    /// replaced or the loop freed. Loop-side: SSELOOP_EBUSY from inside a hook.
    fn sseloop_set_publish_hook(
        lp: *mut sseloop_t,
        hook: sseloop_publish_hook,
        userdata: *mut c_void,
    ) -> c_int {
        let lp = non_null!(lp);
        let mut busy = match Busy::enter(lp, "sseloop_set_publish_hook") {
            Ok(busy) => busy,
            Err(e) => return e.report(),
        };
        let server = &mut busy.core().server;
        match hook {
            Some(hook) => server.set_publish_hook(move |attempt| ask(hook, userdata, attempt)),
            None => server.set_publish_hook(|_| Verdict::Allow),
        }
        SSELOOP_OK
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// Installs (replaces) the connection hook; NULL `hook` removes it. `userdata` as for
    /// `sseloop_set_publish_hook`. Loop-side: SSELOOP_EBUSY from inside a hook.
    fn sseloop_set_connection_hook(
        lp: *mut sseloop_t,
        hook: sseloop_connection_hook,
        userdata: *mut c_void,
    ) -> c_int {
        let lp = non_null!(lp);
        let mut busy = match Busy::enter(lp, "sseloop_set_connection_hook") {
            Ok(busy) => busy,
            Err(e) => return e.report(),
        };
        let server = &mut busy.core().server;
        match hook {
            Some(hook) => server.set_connection_hook(move |event| tell(hook, userdata, event)),
            None => server.set_connection_hook(|_| {}),
        }
        SSELOOP_OK
    } ?= SSELOOP_EINTERNAL;
}
