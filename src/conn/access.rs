//! The access log (`--access-log`): one line per finished request or stream, at target
//! `sseloop::access` (fields in `logging::Fields`).
//!
//! A connection carries an [`Access`] only when the option was on at accept, so with it off a
//! connection holds one empty pointer and the write path tests it once per write. The line is
//! built when a request is answered (its response queued: every status, refusals included) or
//! when a stream, or a request never answered, is released. What is kept is chosen so that no
//! credential can reach the log: the path without its query string, the topics from the query,
//! and the JWT's subject; never the query, a header or a token.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Closing, Connection, Stage};
use crate::http::request::query_pairs;
use crate::http::{Method, RequestHead};
use crate::logging::{Fields, ACCESS_TARGET};
use crate::loop_state::LoopState;
use crate::metrics::CLOSE_CAUSES;

/// Topics kept for one line at most (a request names at most this many anyway).
const MAX_TOPICS: usize = super::http_stage::MAX_TOPICS_PER_REQUEST;

/// A connection's access-log state.
pub(super) struct Access {
    peer: SocketAddr,
    /// The request being served: set when its head is read, taken when its answer is logged.
    /// For a stream, the request that opened it, logged when the stream ends.
    current: Option<Box<RequestLine>>,
    /// Why the server ended a stream in an orderly way (token expired, shutdown, a broken frame).
    ending: Option<&'static str>,
}

/// What the line says about one request.
pub(super) struct RequestLine {
    method: Method,
    path: Box<str>,
    topics: Vec<Box<str>>,
    started: Instant,
    subject: Option<Box<str>>,
}

impl Connection {
    /// Turns the access log on for this connection (accepted from `peer`).
    pub fn log_access(&mut self, peer: SocketAddr) {
        self.access = Some(Box::new(Access {
            peer,
            current: None,
            ending: None,
        }));
    }

    /// A request head was read (its first byte came at `started`).
    pub(super) fn access_request(&mut self, head: &RequestHead, started: Instant) {
        let Some(access) = self.access.as_deref_mut() else {
            return;
        };
        let topics = query_topics(&head.query);
        access.current = Some(Box::new(RequestLine {
            method: head.method,
            path: head.path.as_str().into(),
            topics,
            started,
            subject: None,
        }));
    }

    /// The verified JWT subject of the request being served.
    pub(super) fn access_subject(&mut self, subject: Option<&str>) {
        if let Some(line) = self.access.as_deref_mut().and_then(|a| a.current.as_mut()) {
            line.subject = subject.map(Box::from);
        }
    }

    /// Why the server is ending this stream in an orderly way (logged as its close reason).
    pub(super) fn access_ending(&mut self, why: &'static str) {
        if let Some(access) = self.access.as_deref_mut() {
            access.ending.get_or_insert(why);
        }
    }

    /// Takes the request being served, to be logged when its answer is known (a publish waiting
    /// for the backplane).
    pub(super) fn access_take(&mut self) -> Option<Box<RequestLine>> {
        self.access.as_deref_mut()?.current.take()
    }

    /// Logs the answer to the request being served (`status`, `bytes` of response).
    pub(super) fn access_answered(&mut self, status: u16, bytes: usize, sh: &LoopState) {
        if self.access.is_some() {
            let line = self.access_take();
            self.access_answered_for(line, status, bytes, sh);
        }
    }

    /// Logs the answer to `line` (`None`: a request whose head could not be read).
    pub(super) fn access_answered_for(
        &self,
        line: Option<Box<RequestLine>>,
        status: u16,
        bytes: usize,
        sh: &LoopState,
    ) {
        let Some(access) = self.access.as_deref() else {
            return;
        };
        if sh.config.access_log {
            let mut f = Fields::default();
            request_fields(&mut f, access.peer, line.as_deref(), Some(status));
            f.number("status", status).number("bytes", bytes);
            duration_field(&mut f, line.as_deref());
            subject_field(&mut f, line.as_deref().and_then(|l| l.subject.as_deref()));
            emit(&f);
        }
    }

    /// The connection is being released: a stream's line (its status, the bytes written, why it
    /// ended), or a request that never got its answer. Called before `release` (the JWT subject
    /// is still known).
    pub(crate) fn access_closed(&mut self, closing: Closing, sh: &LoopState) {
        let Some(access) = self.access.as_deref() else {
            return;
        };
        let status = match self.stage {
            Stage::Sse => Some(200),
            Stage::Frames(_) => Some(101),
            Stage::Http(_) => None,
        };
        let Some(line) = access.current.as_deref() else {
            return;
        };
        if !sh.config.access_log {
            return;
        }
        let mut f = Fields::default();
        request_fields(&mut f, access.peer, Some(line), status);
        match status {
            // The connection's own count: the access log starts with the connection.
            Some(s) => f.number("status", s).number("bytes", self.written),
            None => f.none("status").number("bytes", 0),
        };
        duration_field(&mut f, Some(line));
        subject_field(&mut f, self.subject().or(line.subject.as_deref()));
        let reason = match closing {
            Closing::Forced { cause, .. } => CLOSE_CAUSES
                .iter()
                .find(|(_, c)| *c == cause)
                .map_or("forced", |(label, _)| label),
            Closing::Broken => "socket_error",
            Closing::Done => access.ending.unwrap_or(if self.peer_eof {
                "client_closed"
            } else {
                "closed"
            }),
        };
        f.text("reason", reason);
        emit(&f);
    }
}

/// The request's fields; in JSON first a `msg` (`GET /events 200`), which every JSON line has.
fn request_fields(
    f: &mut Fields,
    peer: SocketAddr,
    line: Option<&RequestLine>,
    status: Option<u16>,
) {
    if f.is_json() {
        let (method, path) = line.map_or(("-", "-"), |l| (l.method.as_str(), &*l.path));
        let status = status.map_or_else(|| "-".to_string(), |s| s.to_string());
        f.text("msg", &format!("{method} {path} {status}"));
    }
    f.text("peer", &peer.to_string());
    match line {
        Some(l) => f
            .text("method", l.method.as_str())
            .text("path", &l.path)
            .list("topics", l.topics.iter().map(|t| &**t)),
        None => f.none("method").none("path").list("topics", []),
    };
}

/// Milliseconds since the request's first byte, to the microsecond (the clock is read here: the
/// iteration's time is too coarse for a request answered within it).
fn duration_field(f: &mut Fields, line: Option<&RequestLine>) {
    let now = Instant::now();
    let ms = line.map_or(0.0, |l| {
        now.saturating_duration_since(l.started).as_secs_f64() * 1000.0
    });
    f.number("duration_ms", format_args!("{ms:.3}"));
}

fn subject_field(f: &mut Fields, subject: Option<&str>) {
    match subject {
        Some(s) => f.text("sub", s),
        None => f.none("sub"),
    };
}

fn emit(f: &Fields) {
    log::info!(target: ACCESS_TARGET, "{}", f.as_str());
}

/// The topics a query names (`topic=`), and nothing else from it: the query may hold a token.
fn query_topics(query: &str) -> Vec<Box<str>> {
    query_pairs(query)
        .filter_map(Result::ok)
        .filter(|(name, _)| name == "topic")
        .take(MAX_TOPICS)
        .map(|(_, value)| Box::from(value.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_topic_values_are_kept_from_the_query() {
        let q = "topic=a&access_token=SECRET&topic=b%2Fc&lastEventId=1";
        let owned = query_topics(q);
        let topics: Vec<&str> = owned.iter().map(|t| &**t).collect();
        assert_eq!(topics, ["a", "b/c"]);
    }
}
