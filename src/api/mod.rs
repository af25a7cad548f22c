//! The server API under `/api/v1/` (docs/API.md): its requests parsed into [`ApiCall`]s, the
//! JSON it answers, and the table of banned subjects ([`bans`]). Pure: `conn/api.rs` authorizes
//! and answers what one connection and the hub can answer; `event_loop/admin.rs` serves the
//! calls that walk the other connections, a bounded slice per iteration.

pub mod bans;

use std::borrow::Cow;
use std::fmt::Write as _;

pub use bans::Bans;

use crate::http::request::query_pairs;
use crate::http::{response, HttpError, Method};
use crate::json::push_json_str;

/// Most entries one page holds (`limit=`), so a page never holds the loop for long.
pub const MAX_PAGE: usize = 1000;
/// Entries per page without `limit=`.
pub const DEFAULT_PAGE: usize = 100;
/// Longest ban (`ban_secs`): a week. Longer bans belong in the token issuer.
pub const MAX_BAN_SECS: u64 = 7 * 24 * 3600;
/// Longest close reason kept (bytes); longer ones are cut at a character boundary.
pub const MAX_REASON: usize = 200;
/// Largest request body of the API (a disconnect's JSON).
pub const MAX_BODY: usize = 4096;

/// One API request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiCall {
    /// `GET /api/v1/connections?topic=&sub=&limit=&cursor=`.
    Connections { filter: Filter, page: Page },
    /// `DELETE /api/v1/connections/{id}?reason=`.
    CloseConnection { id: u64, reason: String },
    /// `POST /api/v1/disconnect` with a JSON body ([`parse_revoke`]).
    Disconnect(Revoke),
    /// `GET /api/v1/bans`.
    Bans,
    /// `GET /api/v1/topics?prefix=&limit=&cursor=`.
    Topics { prefix: String, page: Page },
    /// `GET /api/v1/history?topic=&after=&limit=`.
    History {
        topic: String,
        after: Option<String>,
        limit: usize,
    },
    /// `GET /api/v1/presence?topic=&limit=&cursor=` (the cursor is the last subject of the
    /// previous page).
    Presence {
        topic: String,
        limit: usize,
        after: Option<String>,
    },
}

/// Which connections a listing or a revocation matches (all when both are `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Subscribed to this topic or pattern (by name, exactly).
    pub topic: Option<String>,
    /// Authorized by a token with this `sub`.
    pub sub: Option<String>,
}

/// A page request: at most `limit` entries, starting at the opaque `cursor` (0: the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    pub cursor: u64,
}

/// `POST /api/v1/disconnect`: close every stream matching `filter`, and with `ban_secs` refuse
/// the subject's new streams and publishes for that long.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revoke {
    pub filter: Filter,
    pub ban_secs: u64,
    pub reason: String,
}

impl ApiCall {
    /// Whether the call needs an admin grant (history needs the topic's subscribe grant).
    pub fn needs_admin(&self) -> bool {
        !matches!(self, ApiCall::History { .. } | ApiCall::Presence { .. })
    }

    /// The `op` label of `sseloop_admin_requests_total`.
    pub fn op(&self) -> &'static str {
        match self {
            ApiCall::Connections { .. } => "connections",
            ApiCall::CloseConnection { .. } => "close_connection",
            ApiCall::Disconnect(_) => "disconnect",
            ApiCall::Bans => "bans",
            ApiCall::Topics { .. } => "topics",
            ApiCall::History { .. } => "history",
            ApiCall::Presence { .. } => "presence",
        }
    }
}

/// A call that needed Redis (presence or history with a backplane) whose answer did not come.
const UNAVAILABLE: HttpError = HttpError {
    reason: "backplane unavailable",
    ..HttpError::NOT_READY
};

/// The status and body of [`UNAVAILABLE`].
pub fn unavailable() -> (u16, String) {
    (UNAVAILABLE.status, response::error_body(&UNAVAILABLE))
}

const BAD_LIMIT: HttpError = HttpError {
    reason: "limit must be a number from 1 to 1000",
    ..HttpError::BAD_ENCODING
};
const BAD_CURSOR: HttpError = HttpError {
    reason: "cursor must be a value from a previous page's next_cursor",
    ..HttpError::BAD_ENCODING
};
const BAD_ID: HttpError = HttpError {
    reason: "connection id must be a number",
    ..HttpError::BAD_ENCODING
};
const NEED_TOPIC: HttpError = HttpError {
    reason: "topic is required",
    ..HttpError::BAD_ENCODING
};
/// A body that is not the JSON the call takes.
pub const BAD_BODY: HttpError = HttpError {
    reason: "body must be a JSON object with \"sub\" and/or \"topic\" strings, optional \"ban_secs\" (0..=604800) and \"reason\"",
    ..HttpError::BAD_ENCODING
};
/// A revocation that matches nothing by construction.
const NEED_TARGET: HttpError = HttpError {
    reason: "name a \"sub\" or a \"topic\"",
    ..HttpError::BAD_ENCODING
};
const BAN_NEEDS_SUB: HttpError = HttpError {
    reason: "ban_secs needs a \"sub\"",
    ..HttpError::BAD_ENCODING
};

/// The methods each API path allows (for 405's `Allow`).
pub fn allowed(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/api/v1/")?;
    Some(match rest {
        "connections" | "bans" | "topics" | "history" | "presence" => "GET, OPTIONS",
        "disconnect" => "POST, OPTIONS",
        r if r.starts_with("connections/") => "DELETE, OPTIONS",
        _ => return None,
    })
}

/// Parses an API request's method, path and query (a disconnect's body comes later).
pub fn parse(method: Method, path: &str, query: &str) -> Result<ApiCall, HttpError> {
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return Err(HttpError::NOT_FOUND);
    };
    let pairs = decode(query)?;
    let get = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let page = || -> Result<Page, HttpError> {
        let limit = page_limit(get("limit"))?;
        let cursor = match get("cursor") {
            None => 0,
            Some(v) => v.parse::<u64>().map_err(|_| BAD_CURSOR)?,
        };
        Ok(Page { limit, cursor })
    };
    let call = match (method, rest) {
        (Method::Get, "connections") => ApiCall::Connections {
            filter: Filter {
                topic: get("topic"),
                sub: get("sub"),
            },
            page: page()?,
        },
        (Method::Get, "bans") => ApiCall::Bans,
        (Method::Get, "topics") => ApiCall::Topics {
            prefix: get("prefix").unwrap_or_default(),
            page: page()?,
        },
        (Method::Get, "history") => ApiCall::History {
            topic: get("topic").ok_or(NEED_TOPIC)?,
            after: get("after"),
            limit: page()?.limit,
        },
        (Method::Get, "presence") => ApiCall::Presence {
            topic: get("topic").ok_or(NEED_TOPIC)?,
            limit: page_limit(get("limit"))?,
            after: get("cursor"),
        },
        (Method::Post, "disconnect") => ApiCall::Disconnect(Revoke::default()),
        (Method::Delete, r) if r.starts_with("connections/") => {
            let id = r["connections/".len()..]
                .parse::<u64>()
                .map_err(|_| BAD_ID)?;
            ApiCall::CloseConnection {
                id,
                reason: clip_reason(get("reason").as_deref().unwrap_or("closed by an operator")),
            }
        }
        _ => {
            return Err(match allowed(path) {
                Some(allow) => HttpError::method_not_allowed(allow),
                None => HttpError::NOT_FOUND,
            })
        }
    };
    Ok(call)
}

fn page_limit(value: Option<String>) -> Result<usize, HttpError> {
    match value {
        None => Ok(DEFAULT_PAGE),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(BAD_LIMIT),
        },
    }
}

fn decode(query: &str) -> Result<Vec<(String, String)>, HttpError> {
    query_pairs(query)
        .map(|pair| {
            pair.map(|(n, v): (Cow<'_, str>, Cow<'_, str>)| (n.into_owned(), v.into_owned()))
        })
        .collect()
}

/// The body of `POST /api/v1/disconnect`: `{"sub":"alice"}`, `{"topic":"x"}`, both (a stream
/// must match both), with optional `"ban_secs"` (needs `sub`) and `"reason"`.
pub fn parse_revoke(body: &[u8]) -> Result<Revoke, HttpError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        sub: Option<String>,
        topic: Option<String>,
        #[serde(default)]
        ban_secs: u64,
        reason: Option<String>,
    }
    let b: Body = serde_json::from_slice(body).map_err(|_| BAD_BODY)?;
    if b.sub.is_none() && b.topic.is_none() {
        return Err(NEED_TARGET);
    }
    if b.ban_secs > MAX_BAN_SECS {
        return Err(BAD_BODY);
    }
    if b.ban_secs > 0 && b.sub.is_none() {
        return Err(BAN_NEEDS_SUB);
    }
    Ok(Revoke {
        filter: Filter {
            topic: b.topic,
            sub: b.sub,
        },
        ban_secs: b.ban_secs,
        reason: clip_reason(b.reason.as_deref().unwrap_or("revoked by an operator")),
    })
}

/// The reserved topic on which a node tells the others, through the backplane's shared log, of a
/// revocation: they close their matching streams and set the ban. Clients cannot name it (`$` is
/// outside the topic alphabet), and the loop takes it out before the hub sees it.
pub const CONTROL_TOPIC: &str = "$sseloop:revoke";

/// A revocation as it travels between nodes (`node`: who applied it already).
#[derive(serde::Serialize, serde::Deserialize)]
struct ControlMessage {
    node: String,
    sub: Option<String>,
    topic: Option<String>,
    ban_secs: u64,
    reason: String,
}

/// The data of a [`CONTROL_TOPIC`] event: `revoke` as applied by `node`.
pub fn encode_control(node: &str, revoke: &Revoke) -> String {
    let msg = ControlMessage {
        node: node.to_owned(),
        sub: revoke.filter.sub.clone(),
        topic: revoke.filter.topic.clone(),
        ban_secs: revoke.ban_secs,
        reason: revoke.reason.clone(),
    };
    serde_json::to_string(&msg).unwrap_or_default()
}

/// Reads a [`CONTROL_TOPIC`] event's data: the node that sent it and the revocation; `None` for
/// anything else (a newer version's message is ignored, not guessed at).
pub fn decode_control(data: &str) -> Option<(String, Revoke)> {
    let msg: ControlMessage = serde_json::from_str(data).ok()?;
    if (msg.sub.is_none() && msg.topic.is_none()) || msg.ban_secs > MAX_BAN_SECS {
        return None;
    }
    let ban_secs = if msg.sub.is_some() { msg.ban_secs } else { 0 };
    let revoke = Revoke {
        filter: Filter {
            topic: msg.topic,
            sub: msg.sub,
        },
        ban_secs,
        reason: clip_reason(&msg.reason),
    };
    Some((msg.node, revoke))
}

/// A close reason, bounded and on one line (it is sent to the client).
pub fn clip_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// How a listed connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An SSE stream.
    Sse,
    /// A frame connection (after `Upgrade: cafe`).
    Frames,
    /// Plain HTTP requests: publishers, probes, the console.
    Http,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Sse => "sse",
            Kind::Frames => "frames",
            Kind::Http => "http",
        }
    }
}

/// One connection as `GET /api/v1/connections` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub id: u64,
    pub peer: String,
    pub kind: Kind,
    /// Topics and patterns (patterns end in `*`).
    pub topics: Vec<String>,
    pub sub: Option<String>,
    pub age_ms: u128,
    pub bytes_written: u64,
    pub bytes_queued: u64,
    /// Events recorded for its subscriptions and not yet written to it.
    pub events_behind: u64,
}

impl ConnInfo {
    fn render(&self, o: &mut String) {
        let _ = write!(o, "{{\"id\":{},\"peer\":", self.id);
        push_json_str(o, &self.peer);
        o.push_str(",\"kind\":");
        push_json_str(o, self.kind.label());
        o.push_str(",\"topics\":");
        push_str_array(o, self.topics.iter().map(String::as_str));
        o.push_str(",\"sub\":");
        push_opt_str(o, self.sub.as_deref());
        let _ = write!(
            o,
            ",\"age_ms\":{},\"bytes_written\":{},\"bytes_queued\":{},\"events_behind\":{}}}",
            self.age_ms, self.bytes_written, self.bytes_queued, self.events_behind
        );
    }
}

/// `{"connections":[…],"next_cursor":N|null}`: `null` when the walk reached the end.
pub fn render_connections(list: &[ConnInfo], next_cursor: Option<u64>) -> String {
    let mut o = String::with_capacity(64 + list.len() * 200);
    o.push_str("{\"connections\":[");
    for (i, c) in list.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        c.render(&mut o);
    }
    o.push_str("],\"next_cursor\":");
    push_opt_u64(&mut o, next_cursor);
    o.push_str("}\n");
    o
}

/// `{"closed":N}` (a disconnect or a revocation), with the ban's length when one was set, and
/// `"cluster":true` when the other nodes of a backplane were told too (they close theirs).
pub fn render_closed(closed: u64, banned_secs: u64, cluster: bool) -> String {
    let mut o = format!("{{\"closed\":{closed}");
    if banned_secs > 0 {
        let _ = write!(o, ",\"banned_secs\":{banned_secs}");
    }
    if cluster {
        o.push_str(",\"cluster\":true");
    }
    o.push_str("}\n");
    o
}

/// One topic as `GET /api/v1/topics` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub subscribers: usize,
    pub retained_events: usize,
    pub retained_bytes: usize,
    /// Unix seconds of its last event (`None`: none since it was created).
    pub last_event_unix: Option<u64>,
}

/// `{"topics":[…],"next_cursor":N|null}`.
pub fn render_topics(list: &[TopicInfo], next_cursor: Option<u64>) -> String {
    let mut o = String::with_capacity(64 + list.len() * 120);
    o.push_str("{\"topics\":[");
    for (i, t) in list.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"name\":");
        push_json_str(&mut o, &t.name);
        let _ = write!(
            o,
            ",\"pattern\":{},\"subscribers\":{},\"retained_events\":{},\"retained_bytes\":{},\"last_event_unix\":",
            t.name.ends_with('*'),
            t.subscribers,
            t.retained_events,
            t.retained_bytes
        );
        push_opt_u64(&mut o, t.last_event_unix);
        o.push('}');
    }
    o.push_str("],\"next_cursor\":");
    push_opt_u64(&mut o, next_cursor);
    o.push_str("}\n");
    o
}

/// One retained event as `GET /api/v1/history` returns it.
pub struct HistoryEvent<'a> {
    pub id: &'a str,
    pub event: Option<&'a str>,
    pub data: &'a str,
    pub topics: &'a [Box<str>],
}

/// `{"events":[…],"reset":null|"expired"|"unknown","more":bool}`: `reset` says, as a resume's
/// notice would, that events after `after` are no longer retained (or `after` is not an id of
/// this server); `more` that `limit` cut the list.
pub fn render_history(events: &[HistoryEvent<'_>], reset: Option<&str>, more: bool) -> String {
    let mut o = String::with_capacity(64 + events.iter().map(|e| e.data.len() + 96).sum::<usize>());
    o.push_str("{\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"id\":");
        push_json_str(&mut o, e.id);
        o.push_str(",\"event\":");
        push_opt_str(&mut o, e.event);
        o.push_str(",\"topics\":");
        push_str_array(&mut o, e.topics.iter().map(|t| &**t));
        o.push_str(",\"data\":");
        push_json_str(&mut o, e.data);
        o.push('}');
    }
    o.push_str("],\"reset\":");
    push_opt_str(&mut o, reset);
    let _ = writeln!(o, ",\"more\":{more}}}");
    o
}

/// `{"topic":…,"subscribers":N,"subjects":[…]|null,"next_cursor":"…"|null}`: `subjects` is
/// `null` when the caller may not see them (no presence grant); `"subjects_cut":true` is added
/// when a node of a backplane had more subjects on the topic than it keeps in Redis.
pub fn render_presence(
    topic: &str,
    subscribers: u64,
    subjects: Option<&[&str]>,
    next_cursor: Option<&str>,
    cut: bool,
) -> String {
    let mut o = String::from("{\"topic\":");
    push_json_str(&mut o, topic);
    let _ = write!(o, ",\"subscribers\":{subscribers},\"subjects\":");
    match subjects {
        Some(list) => push_str_array(&mut o, list.iter().copied()),
        None => o.push_str("null"),
    }
    o.push_str(",\"next_cursor\":");
    push_opt_str(&mut o, next_cursor);
    if cut {
        o.push_str(",\"subjects_cut\":true");
    }
    o.push_str("}\n");
    o
}

fn push_opt_str(o: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(o, s),
        None => o.push_str("null"),
    }
}

fn push_opt_u64(o: &mut String, n: Option<u64>) {
    match n {
        Some(n) => {
            let _ = write!(o, "{n}");
        }
        None => o.push_str("null"),
    }
}

fn push_str_array<'a>(o: &mut String, items: impl Iterator<Item = &'a str>) {
    o.push('[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            o.push(',');
        }
        push_json_str(o, s);
    }
    o.push(']');
}

#[cfg(test)]
mod tests;
