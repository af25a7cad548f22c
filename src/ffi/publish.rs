//! The two exports allowed on any thread: publish and stop.
//!
//! They reach only `sseloop_t::handle` (a `PublishHandle`: `Send + Sync`, queue + `mio::Waker`),
//! through a pointer to that field, never a reference to the loop side, so they are sound while
//! the loop thread is inside `sseloop_poll` or a hook. Wake-ups coalesce: many publishes before
//! the loop runs cost one wake-up, and the loop drains the whole queue per wake.

use std::ffi::{c_char, c_int};

use super::error::{Error, SSELOOP_EINTERNAL, SSELOOP_EINVAL, SSELOOP_OK};
use super::server::sseloop_t;
use super::{copy_out, str_arg};
use crate::handle::PublishHandle;

/// Bytes an id buffer must have for `sseloop_publish` (ids are shorter, NUL included).
pub const SSELOOP_ID_MAX: usize = 64;

/// The publish handle of a loop pointer, without touching the loop side.
///
/// # Safety
///
/// `lp` must be non-NULL and point to a live `sseloop_t`.
unsafe fn handle_of<'a>(lp: *const sseloop_t) -> &'a PublishHandle {
    // SAFETY: `lp` is live (this function's contract). The field is never mutated after
    // creation, and projecting to it creates no reference to the `UnsafeCell` the loop thread
    // may be mutating.
    unsafe { &*std::ptr::addr_of!((*lp).handle) }
}

ffi_fn! {
    /// Publishes one event (one id) to `ntopics` topics. Any thread, including from a hook.
    /// `event_type` may be NULL (plain `message`); `data` is `len` bytes of UTF-8 (NULL allowed
    /// when `len` is 0). When `id_buf` is not NULL it must have at least SSELOOP_ID_MAX bytes and
    /// receives the event's id, NUL-terminated; ids are assigned here, in publish order, and are
    /// final. Errors: SSELOOP_EINVAL, SSELOOP_ETOPIC, SSELOOP_EEVENT, SSELOOP_ETOOLARGE,
    /// SSELOOP_ESTOPPED (after `sseloop_stop`), SSELOOP_EAGAIN (the queue to the loop holds
    /// `publish_queue_bytes`: retry after the loop has run). Nothing is published on error.
    fn sseloop_publish(
        lp: *const sseloop_t,
        topics: *const *const c_char,
        ntopics: usize,
        event_type: *const c_char,
        data: *const c_char,
        len: usize,
        id_buf: *mut c_char,
        id_buf_len: usize,
    ) -> c_int {
        // SAFETY: the caller's pointers, forwarded unchanged (same contract).
        unsafe {
            publish(lp, topics, ntopics, event_type, data, len, None, id_buf, id_buf_len)
        }
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `sseloop_publish` with an idempotency key (NUL-terminated, 1..=128 visible ASCII
    /// characters; NULL for none): a repeat with the same key within the idempotency window
    /// answers the first call's id and publishes nothing. With a backplane the key is kept in
    /// Redis, so a retry on another node is recognized too.
    fn sseloop_publish_idempotent(
        lp: *const sseloop_t,
        topics: *const *const c_char,
        ntopics: usize,
        event_type: *const c_char,
        data: *const c_char,
        len: usize,
        idempotency_key: *const c_char,
        id_buf: *mut c_char,
        id_buf_len: usize,
    ) -> c_int {
        let key = if idempotency_key.is_null() {
            None
        } else {
            // SAFETY: non-NULL and NUL-terminated (contract).
            match unsafe { str_arg(idempotency_key, "idempotency_key") } {
                Ok(k) if crate::idempotency::valid_key(k) => Some(k),
                Ok(_) => {
                    let why = "idempotency_key must be 1..=128 visible ASCII characters";
                    return Error::new(SSELOOP_EINVAL, why).report();
                }
                Err(e) => return e.report(),
            }
        };
        // SAFETY: the caller's pointers, forwarded unchanged (same contract).
        unsafe {
            publish(lp, topics, ntopics, event_type, data, len, key, id_buf, id_buf_len)
        }
    } ?= SSELOOP_EINTERNAL;
}

/// The body of both publish exports.
///
/// # Safety
///
/// The pointers follow `sseloop_publish`'s contract.
#[allow(clippy::too_many_arguments)]
unsafe fn publish(
    lp: *const sseloop_t,
    topics: *const *const c_char,
    ntopics: usize,
    event_type: *const c_char,
    data: *const c_char,
    len: usize,
    key: Option<&str>,
    id_buf: *mut c_char,
    id_buf_len: usize,
) -> c_int {
    if lp.is_null() {
        return Error::null("loop").report();
    }
    if !id_buf.is_null() && id_buf_len < SSELOOP_ID_MAX {
        return Error::new(
            SSELOOP_EINVAL,
            format!(
                "id_buf_len is {id_buf_len}; it must be at least SSELOOP_ID_MAX \
                     ({SSELOOP_ID_MAX})"
            ),
        )
        .report();
    }
    if ntopics > 0 && topics.is_null() {
        return Error::null("topics").report();
    }
    let mut names = Vec::with_capacity(ntopics);
    for i in 0..ntopics {
        // SAFETY: `topics` holds `ntopics` pointers (contract) and `i < ntopics`.
        let topic = unsafe { *topics.add(i) };
        // SAFETY: each element is NULL or NUL-terminated (contract).
        match unsafe { str_arg(topic, "topic") } {
            Ok(t) => names.push(t),
            Err(e) => return e.report(),
        }
    }
    let event_type = if event_type.is_null() {
        None
    } else {
        // SAFETY: non-NULL and NUL-terminated (contract).
        match unsafe { str_arg(event_type, "event_type") } {
            Ok(t) => Some(t),
            Err(e) => return e.report(),
        }
    };
    let bytes: &[u8] = if len == 0 {
        &[]
    } else if data.is_null() {
        return Error::null("data").report();
    } else {
        // SAFETY: `data` points to `len` readable bytes (contract), alive for this call.
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Error::new(SSELOOP_EINVAL, "data is not valid UTF-8").report();
    };
    // SAFETY: `lp` is non-NULL and live (contract).
    let handle = unsafe { handle_of(lp) };
    match handle.publish_idempotent(&names, event_type, text, key) {
        Ok(id) => {
            // SAFETY: `id_buf` is NULL or has `id_buf_len >= SSELOOP_ID_MAX` bytes.
            let full = unsafe { copy_out(&id, id_buf, id_buf_len) };
            debug_assert!(full < SSELOOP_ID_MAX, "id {id} longer than SSELOOP_ID_MAX");
            SSELOOP_OK
        }
        Err(e) => Error::from_publish(e).report(),
    }
}

ffi_fn! {
    /// Asks the loop to stop gracefully: it stops accepting, lets connections finish within the
    /// grace period, then `sseloop_run` returns / `sseloop_poll` reports SSELOOP_EDONE. Any
    /// thread, including from a hook; idempotent (a second stop returns SSELOOP_OK). Later
    /// publishes fail with SSELOOP_ESTOPPED.
    fn sseloop_stop(lp: *const sseloop_t) -> c_int {
        if lp.is_null() {
            return Error::null("loop").report();
        }
        // SAFETY: `lp` is non-NULL and live (contract).
        unsafe { handle_of(lp) }.stop();
        SSELOOP_OK
    } ?= SSELOOP_EINTERNAL;
}
