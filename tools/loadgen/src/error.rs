//! One error type for the tool: a message with its context chain, enough for a CLI that reports
//! and exits. Hot paths never build one; they count instead.

use std::fmt;

/// A failure that stops the run (bad option, unreachable server, unreadable /proc file).
#[derive(Debug)]
pub struct Error(String);

/// Result alias used across the tool.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with just a message.
    pub fn msg(m: impl Into<String>) -> Self {
        Error(m.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Adds "what we were doing" in front of a lower-level error.
pub trait Context<T> {
    /// Wraps the error as `"{what}: {error}"`.
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error(format!("{what}: {e}")))
    }
}
