//! Return codes and the last-error message.
//!
//! Every export that can fail returns an `int`: `SSELOOP_OK` (0), the non-failure
//! `SSELOOP_EDONE`, or one of the negative `SSELOOP_E*` failure codes below. A failure also
//! stores a message in a per-thread slot that the host copies out with `sseloop_last_error`
//! (successful calls leave it alone, like `errno`). Each Rust error maps to a code in exactly one
//! place: [`Error::from_start`], [`Error::from_publish`] and the constructors here.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr};

use crate::handle::PublishError;
use crate::StartError;

/// Success.
pub const SSELOOP_OK: c_int = 0;
/// Not a failure: nothing (more) to do. `sseloop_poll` returns it once the loop has stopped.
pub const SSELOOP_EDONE: c_int = -1;
/// A NULL pointer where one is not allowed, or a malformed argument (bad address, non-UTF-8,
/// out-of-range value, id buffer too small).
pub const SSELOOP_EINVAL: c_int = -2;
/// The configuration is refused (option combination at `sseloop_new`, or a bad command line).
pub const SSELOOP_ECONFIG: c_int = -3;
/// An operating-system error (bind, epoll); the message has the OS's text.
pub const SSELOOP_EIO: c_int = -4;
/// The loop is stopping or has stopped: nothing more can be published.
pub const SSELOOP_ESTOPPED: c_int = -5;
/// No topic, or a topic outside `[A-Za-z0-9._~:/-]{1,128}`.
pub const SSELOOP_ETOPIC: c_int = -6;
/// An event type that is empty, longer than 128 bytes, or contains CR, LF or NUL.
pub const SSELOOP_EEVENT: c_int = -7;
/// Event data larger than the configured maximum body size.
pub const SSELOOP_ETOOLARGE: c_int = -8;
/// The loop is in use: a loop-side call made from inside a hook, or while another thread is in a
/// loop-side call on the same loop.
pub const SSELOOP_EBUSY: c_int = -9;
/// A bug inside sseloop (a caught panic). The loop that hit it refuses further loop-side calls;
/// it can still be freed.
pub const SSELOOP_EINTERNAL: c_int = -10;
/// Would block: the cross-thread publish queue is full (`publish_queue_bytes`). Nothing was
/// published; retry after the loop has run (back off, or drop the event).
pub const SSELOOP_EAGAIN: c_int = -11;
/// With a backplane: Redis did not accept the event within the append timeout (or is
/// unreachable). It may still have been appended; retry later.
pub const SSELOOP_EUNAVAILABLE: c_int = -12;

/// A failure on its way to the host: a code and the message for `sseloop_last_error`.
#[derive(Debug)]
pub struct Error {
    code: c_int,
    message: String,
}

impl Error {
    /// A failure with `code` and `message`.
    pub fn new(code: c_int, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    /// A NULL pointer passed for the argument `what`.
    pub fn null(what: &str) -> Error {
        // Rust cannot name a variable `loop`; the header does.
        let what = if what == "lp" { "loop" } else { what };
        Error::new(SSELOOP_EINVAL, format!("{what} must not be NULL"))
    }

    /// A failure of `Server::bind`.
    pub fn from_start(e: StartError) -> Error {
        match e {
            StartError::Config(e) => Error::new(SSELOOP_ECONFIG, e.to_string()),
            StartError::Io(e) => Error::new(SSELOOP_EIO, format!("cannot start: {e}")),
        }
    }

    /// A refused publish.
    pub fn from_publish(e: PublishError) -> Error {
        let code = match e {
            PublishError::BadTopic => SSELOOP_ETOPIC,
            PublishError::BadEventType => SSELOOP_EEVENT,
            PublishError::TooLarge => SSELOOP_ETOOLARGE,
            PublishError::Stopped => SSELOOP_ESTOPPED,
            PublishError::QueueFull => SSELOOP_EAGAIN,
            PublishError::Unavailable => SSELOOP_EUNAVAILABLE,
            PublishError::OnLoopThread => SSELOOP_EBUSY,
            PublishError::BadIdempotencyKey => SSELOOP_EINVAL,
        };
        Error::new(code, e.to_string())
    }

    /// An I/O failure while driving the loop.
    pub fn from_io(e: std::io::Error) -> Error {
        Error::new(SSELOOP_EIO, format!("polling failed: {e}"))
    }

    /// The code.
    pub fn code(&self) -> c_int {
        self.code
    }

    /// Stores the message as this thread's last error and returns the code.
    pub fn report(self) -> c_int {
        set_last_error(self.message);
        self.code
    }
}

/// Compile-time version of the header (`SSELOOP_VERSION_MAJOR` ...); equal to Cargo.toml's
/// version (a unit test checks) and to what `sseloop_version` returns at run time.
pub const SSELOOP_VERSION_MAJOR: c_int = 0;
/// See [`SSELOOP_VERSION_MAJOR`].
pub const SSELOOP_VERSION_MINOR: c_int = 1;
/// See [`SSELOOP_VERSION_MAJOR`].
pub const SSELOOP_VERSION_PATCH: c_int = 0;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Replaces this thread's last-error message.
pub fn set_last_error(message: String) {
    // `try_with`: during thread teardown the slot may be gone; losing the message is harmless.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = message;
        }
    });
}

/// Records a panic caught at the boundary of export `function`.
pub fn record_panic(function: &str, payload: &(dyn Any + Send)) {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown cause");
    set_last_error(format!("internal error in {function}: {what}"));
}

ffi_fn! {
    /// Copies this thread's last-error message into `buf` (`len` bytes, NUL-terminated, truncated
    /// to fit). Returns the message's full length in bytes (0 when no failure was recorded on this
    /// thread); `buf` may be NULL to ask for the length only.
    fn sseloop_last_error(buf: *mut c_char, len: usize) -> c_int {
        let message = LAST_ERROR
            .try_with(|slot| slot.try_borrow().map(|s| s.clone()).unwrap_or_default())
            .unwrap_or_default();
        // SAFETY: `buf` is NULL or has `len` writable bytes (this export's contract).
        let full = unsafe { super::copy_out(&message, buf, len) };
        c_int::try_from(full).unwrap_or(c_int::MAX)
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// A static, NUL-terminated name and description of a return code ("unknown code" for
    /// values that are not one). Never NULL; never freed.
    fn sseloop_strerror(code: c_int) -> *const c_char {
        describe(code).as_ptr()
    } ?= c"internal error".as_ptr();
}

ffi_fn! {
    /// The library version ("MAJOR.MINOR.PATCH"), static and NUL-terminated.
    fn sseloop_version() -> *const c_char {
        VERSION.as_ptr()
    } ?= VERSION.as_ptr();
}

const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };

fn describe(code: c_int) -> &'static CStr {
    match code {
        SSELOOP_OK => c"SSELOOP_OK: success",
        SSELOOP_EDONE => c"SSELOOP_EDONE: nothing to do (the loop has stopped)",
        SSELOOP_EINVAL => c"SSELOOP_EINVAL: invalid argument",
        SSELOOP_ECONFIG => c"SSELOOP_ECONFIG: configuration refused",
        SSELOOP_EIO => c"SSELOOP_EIO: operating-system error",
        SSELOOP_ESTOPPED => c"SSELOOP_ESTOPPED: the loop has stopped",
        SSELOOP_ETOPIC => c"SSELOOP_ETOPIC: missing or invalid topic",
        SSELOOP_EEVENT => c"SSELOOP_EEVENT: invalid event type",
        SSELOOP_ETOOLARGE => c"SSELOOP_ETOOLARGE: data larger than the maximum body size",
        SSELOOP_EBUSY => c"SSELOOP_EBUSY: the loop is in use (re-entrant or concurrent call)",
        SSELOOP_EINTERNAL => c"SSELOOP_EINTERNAL: internal error",
        SSELOOP_EAGAIN => c"SSELOOP_EAGAIN: publish queue full, try again later",
        SSELOOP_EUNAVAILABLE => c"SSELOOP_EUNAVAILABLE: backplane unavailable, try again later",
        _ => c"unknown code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_description_naming_it() {
        for (code, name) in [
            (SSELOOP_OK, "SSELOOP_OK"),
            (SSELOOP_EDONE, "SSELOOP_EDONE"),
            (SSELOOP_EINVAL, "SSELOOP_EINVAL"),
            (SSELOOP_ECONFIG, "SSELOOP_ECONFIG"),
            (SSELOOP_EIO, "SSELOOP_EIO"),
            (SSELOOP_ESTOPPED, "SSELOOP_ESTOPPED"),
            (SSELOOP_ETOPIC, "SSELOOP_ETOPIC"),
            (SSELOOP_EEVENT, "SSELOOP_EEVENT"),
            (SSELOOP_ETOOLARGE, "SSELOOP_ETOOLARGE"),
            (SSELOOP_EBUSY, "SSELOOP_EBUSY"),
            (SSELOOP_EINTERNAL, "SSELOOP_EINTERNAL"),
            (SSELOOP_EAGAIN, "SSELOOP_EAGAIN"),
            (SSELOOP_EUNAVAILABLE, "SSELOOP_EUNAVAILABLE"),
        ] {
            let text = describe(code).to_str().unwrap();
            assert!(text.starts_with(&format!("{name}:")), "{code}: {text}");
        }
        assert_eq!(describe(-99), c"unknown code");
    }

    #[test]
    fn version_constants_match_cargo_toml_and_sseloop_version() {
        let parts = [
            SSELOOP_VERSION_MAJOR,
            SSELOOP_VERSION_MINOR,
            SSELOOP_VERSION_PATCH,
        ];
        let text = parts.map(|p| p.to_string()).join(".");
        assert_eq!(
            text,
            env!("CARGO_PKG_VERSION"),
            "update src/ffi/error.rs and the header"
        );
        // SAFETY: no arguments; returns a static C string.
        let runtime = unsafe { CStr::from_ptr(sseloop_version()) };
        assert_eq!(runtime.to_str().unwrap(), text);
    }

    #[test]
    fn last_error_copies_truncates_and_reports_the_full_length() {
        set_last_error("héllo".to_string());
        let mut buf = [0x7f as c_char; 4];
        // SAFETY: buf has 4 bytes.
        let n = unsafe { sseloop_last_error(buf.as_mut_ptr(), buf.len()) };
        assert_eq!(n, 6);
        // "h" + 2-byte 'é' = 3 bytes fit before the NUL.
        // SAFETY: NUL-terminated by the call.
        let got = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(got.to_str().unwrap(), "hé");
        // SAFETY: NULL buffer asks for the length.
        assert_eq!(unsafe { sseloop_last_error(std::ptr::null_mut(), 0) }, 6);
        let mut one = [0x7f as c_char; 1];
        // SAFETY: one byte: only the NUL fits.
        unsafe { sseloop_last_error(one.as_mut_ptr(), 1) };
        assert_eq!(one[0], 0);
    }
}
