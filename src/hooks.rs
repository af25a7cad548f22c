//! Host callbacks, run on the loop thread: a publish hook that sees (and may veto) every event a
//! client publishes over HTTP or frames, and a connection hook told of every open and close.
//!
//! Re-entrancy: a hook runs in the middle of an iteration, with the loop's state borrowed, so it
//! cannot reach the `Server` (Rust's borrow rules enforce this; the C API documents it). It may
//! publish through a `PublishHandle`: that event gets its id at once, so when the publish hook
//! then allows the client's event, the hook's own event has the lower id and is delivered first.

use std::net::SocketAddr;

/// An event a client is publishing, shown to the publish hook before it gets an id.
#[derive(Debug)]
pub struct PublishAttempt<'a> {
    /// Topics (validated, distinct).
    pub topics: &'a [&'a str],
    /// The `event:` type, if any.
    pub event_type: Option<&'a str>,
    /// The data (UTF-8).
    pub data: &'a str,
    /// The publishing connection's id (as given to the connection hook).
    pub connection: u64,
    /// The verified `sub` of the publisher's JWT (JWT authorization only), for auditing.
    pub subject: Option<&'a str>,
}

/// The publish hook's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Publish it.
    Allow,
    /// Refuse it: HTTP publishers get 403, frame publishers an ERROR `FORBIDDEN`.
    Deny,
}

/// A connection opened or closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// Accepted (before its first request is read).
    Opened {
        /// Unique for the life of the server (slab keys are reused; these are not).
        id: u64,
        /// The peer's address, if the kernel reported it.
        peer: Option<SocketAddr>,
    },
    /// Closed; every resource it held is released.
    Closed {
        /// The id given at `Opened`.
        id: u64,
    },
}

/// The publish hook type.
pub type PublishHook = Box<dyn FnMut(&PublishAttempt<'_>) -> Verdict>;
/// The connection hook type.
pub type ConnectionHook = Box<dyn FnMut(ConnectionEvent)>;

/// The installed hooks.
#[derive(Default)]
pub struct Hooks {
    pub(crate) publish: Option<PublishHook>,
    pub(crate) connection: Option<ConnectionHook>,
}

impl Hooks {
    /// Asks the publish hook, if any (allow when none is installed).
    pub(crate) fn allow_publish(&mut self, attempt: &PublishAttempt<'_>) -> bool {
        match self.publish.as_mut() {
            Some(hook) => hook(attempt) == Verdict::Allow,
            None => true,
        }
    }

    /// Tells the connection hook, if any.
    pub(crate) fn connection(&mut self, event: ConnectionEvent) {
        if let Some(hook) = self.connection.as_mut() {
            hook(event);
        }
    }
}
