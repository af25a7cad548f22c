//! The C ABI: `include/sseloop.h` declares exactly what this module exports (a test keeps them in
//! step), and `docs/EMBEDDING.md` gives each function's contract.
//!
//! - [`error`]: the `SSELOOP_E*` codes, the per-thread last-error text, `sseloop_strerror`.
//! - [`config`]: the options object and its setters.
//! - [`server`]: the loop object (`sseloop_t`): create, free, the three drive modes, stats.
//! - [`publish`]: the two calls allowed from any thread, publish and stop.
//! - [`hooks`]: host callbacks (publish veto, connection open/close).
//! - [`jwt`]: the JWT authorization options.
//!
//! Invariants kept here:
//! - Every export goes through `ffi_fn!`: `extern "C"`, `#[no_mangle]`, and `catch_unwind`
//!   with a per-function fallback, so no panic crosses into C. Pointer arguments are checked for
//!   NULL (→ `SSELOOP_EINVAL`) before any use.
//! - The `Server` is not `Send`. An `sseloop_t` keeps it in an `UnsafeCell` guarded by an atomic
//!   "in use" flag: loop-side calls take the flag or fail with `SSELOOP_EBUSY` (a hook calling
//!   `sseloop_poll`, two threads driving at once), so the `Server` is only ever touched by one
//!   thread at a time, with acquire/release ordering between turns. Publish and stop never touch
//!   it: they use a `PublishHandle` (which is `Send + Sync`) stored beside it.
//! - Why a `!Send` server may be driven from a thread other than its creator's: it is `!Send`
//!   because of the `Rc`-shared encoded events inside it, and none of those escape it, so handing
//!   the whole server from one thread to the next, with a happens-before edge (the busy flag), is
//!   what `Send` would allow for a type without them. It holds no thread-local state. The host's
//!   hook `userdata` is used on whichever thread drives the loop, as documented.
#![allow(non_camel_case_types)]

/// Defines one C export: `#[no_mangle] pub unsafe extern "C"`, with the body run under
/// `catch_unwind`. A panic records a last-error message and returns the fallback given after
/// `?=` (every export has one, so no unwinding ever reaches the host).
macro_rules! ffi_fn {
    (
        $(#[$meta:meta])*
        fn $name:ident($($arg:ident: $arg_ty:ty),* $(,)?) -> $ret:ty $body:block ?= $fallback:expr;
    ) => {
        $(#[$meta])*
        ///
        /// # Safety
        ///
        /// Pointer arguments must be NULL or valid as `include/sseloop.h` documents for this
        /// function (objects from this library not yet freed, strings NUL-terminated, buffers at
        /// least as long as the length passed with them).
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $arg_ty),*) -> $ret {
            let call = ::std::panic::AssertUnwindSafe(move || -> $ret { $body });
            match ::std::panic::catch_unwind(call) {
                Ok(value) => value,
                Err(payload) => {
                    $crate::ffi::error::record_panic(stringify!($name), payload.as_ref());
                    $fallback
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        fn $name:ident($($arg:ident: $arg_ty:ty),* $(,)?) $body:block ?= ();
    ) => {
        ffi_fn! {
            $(#[$meta])*
            fn $name($($arg: $arg_ty),*) -> () $body ?= ();
        }
    };
}

/// Borrows the object behind a pointer argument, or returns `SSELOOP_EINVAL` (with a last-error
/// message naming the argument) from the enclosing export when it is NULL.
macro_rules! non_null {
    ($ptr:ident) => {
        // SAFETY: the export's contract (see `ffi_fn!`) is that a non-NULL pointer argument points
        // to a live object of its type; NULL is handled here.
        match unsafe { $ptr.as_ref() } {
            Some(r) => r,
            None => {
                return $crate::ffi::error::Error::null(stringify!($ptr)).report();
            }
        }
    };
}

/// Like `non_null!`, for an argument the export mutates.
macro_rules! non_null_mut {
    ($ptr:ident) => {
        // SAFETY: as for `non_null!`; the caller also guarantees no other reference to this object
        // is in use during the call (config objects are single-threaded by contract).
        match unsafe { $ptr.as_mut() } {
            Some(r) => r,
            None => {
                return $crate::ffi::error::Error::null(stringify!($ptr)).report();
            }
        }
    };
}

pub mod config;
pub mod error;
pub mod hooks;
pub mod jwt;
pub mod publish;
pub mod server;
pub mod tls;

pub use config::sseloop_config_t;
pub use error::{
    SSELOOP_EAGAIN, SSELOOP_EBUSY, SSELOOP_ECONFIG, SSELOOP_EDONE, SSELOOP_EEVENT,
    SSELOOP_EINTERNAL, SSELOOP_EINVAL, SSELOOP_EIO, SSELOOP_ESTOPPED, SSELOOP_ETOOLARGE,
    SSELOOP_ETOPIC, SSELOOP_EUNAVAILABLE, SSELOOP_OK,
};
pub use hooks::{
    sseloop_connection_event_t, sseloop_connection_hook, sseloop_publish_attempt_t,
    sseloop_publish_hook, SSELOOP_ALLOW, SSELOOP_CONNECTION_CLOSED, SSELOOP_CONNECTION_OPENED,
    SSELOOP_DENY,
};
pub use publish::SSELOOP_ID_MAX;
pub use server::{sseloop_stats_t, sseloop_t};

use std::ffi::{c_char, CStr};

use error::Error;

/// Reads a NUL-terminated UTF-8 argument. `what` names it in the error message.
///
/// # Safety
///
/// `ptr` must be NULL or point to a NUL-terminated string that stays valid for `'a`.
pub(crate) unsafe fn str_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Error> {
    if ptr.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: non-NULL and NUL-terminated per this function's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    std::str::from_utf8(bytes)
        .map_err(|_| Error::new(SSELOOP_EINVAL, format!("{what} is not valid UTF-8")))
}

/// Copies `text` into a host buffer of `len` bytes as a NUL-terminated string, truncated (at a
/// character boundary) to fit. Returns the full length of `text` in bytes, like `snprintf`.
///
/// # Safety
///
/// `buf` must be NULL (then `len` must be 0) or point to `len` writable bytes.
pub(crate) unsafe fn copy_out(text: &str, buf: *mut c_char, len: usize) -> usize {
    if !buf.is_null() && len > 0 {
        let mut n = text.len().min(len - 1);
        while !text.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: `buf` has `len` writable bytes and `n + 1 <= len`; `text` is a different
        // allocation (Rust memory), so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    text.len()
}
