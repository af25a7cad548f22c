//! The binary's log output: plain text (as before) or one JSON object per line
//! (`--log-format json`: `ts`, `level`, `target`, `msg`), and a level that a reload can change.
//! Lines made of fields ([`Fields`], the access log) are `key=value` pairs (logfmt) in text and
//! the object's own keys in JSON (where the caller gives a short `msg` too).
//!
//! `env_logger` does the filtering and writing. Its own filter lets everything through that
//! `RUST_LOG` allows; the level in force is the global `log::max_level`, which a reload moves
//! without re-initialising the logger (the format is read per line from an atomic for the same
//! reason).

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use log::LevelFilter;

pub use crate::config::LogFormat;

static FORMAT: AtomicU8 = AtomicU8::new(0);

/// The target of access lines (`--access-log`); in JSON their fields are the object's keys.
pub const ACCESS_TARGET: &str = "sseloop::access";

/// Installs the logger. `level` overrides `RUST_LOG`'s default of `info` (module directives in
/// `RUST_LOG` still apply below it).
pub fn init(format: LogFormat, level: Option<LevelFilter>) {
    set_format(format);
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if level.is_some() {
        // The global max level decides; let the builder pass everything it is given.
        builder.filter_level(LevelFilter::Trace);
    }
    builder.format(|buf, record| {
        if FORMAT.load(Ordering::Relaxed) == LogFormat::Json as u8 {
            let mut line = String::with_capacity(128);
            line.push_str("{\"ts\":\"");
            line.push_str(&buf.timestamp_millis().to_string());
            line.push_str("\",\"level\":\"");
            line.push_str(record.level().as_str());
            line.push_str("\",\"target\":");
            crate::json::push_json_str(&mut line, record.target());
            if record.target() == ACCESS_TARGET {
                // The message is already the JSON members of a `Fields` line, `msg` among them.
                line.push(',');
                line.push_str(&record.args().to_string());
            } else {
                line.push_str(",\"msg\":");
                crate::json::push_json_str(&mut line, &record.args().to_string());
            }
            line.push('}');
            writeln!(buf, "{line}")
        } else {
            writeln!(
                buf,
                "[{} {:<5} {}] {}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                record.args()
            )
        }
    });
    // A second init (tests, an embedding host with its own logger) keeps the first logger.
    let _ = builder.try_init();
    if let Some(level) = level {
        log::set_max_level(level);
    }
}

/// A log line made of named fields, written in the format in force: `key=value` pairs separated
/// by spaces in text (a value with a space, a quote, `=` or a control character is quoted as a
/// JSON string), JSON members (`"key":value`) in JSON.
pub struct Fields {
    out: String,
    json: bool,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            out: String::with_capacity(192),
            json: FORMAT.load(Ordering::Relaxed) == LogFormat::Json as u8,
        }
    }
}

impl Fields {
    fn key(&mut self, key: &str) {
        if !self.out.is_empty() {
            self.out.push(if self.json { ',' } else { ' ' });
        }
        if self.json {
            crate::json::push_json_str(&mut self.out, key);
            self.out.push(':');
        } else {
            self.out.push_str(key);
            self.out.push('=');
        }
    }

    fn push_text(&mut self, value: &str) {
        let plain = !value.is_empty()
            && !value
                .chars()
                .any(|c| c <= ' ' || c == '"' || c == '=' || c == '\\' || c == '\u{7f}');
        if plain && !self.json {
            self.out.push_str(value);
        } else {
            crate::json::push_json_str(&mut self.out, value);
        }
    }

    /// The line is JSON members.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// A text field.
    pub fn text(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        self.push_text(value);
        self
    }

    /// A number, written as it is (`value` must be a number's text: an integer or a decimal).
    pub fn number(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        use std::fmt::Write as _;
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// A missing value: `-` in text, `null` in JSON.
    pub fn none(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.out.push_str(if self.json { "null" } else { "-" });
        self
    }

    /// A list: comma-separated in text (`-` when empty), an array in JSON.
    pub fn list<'a>(&mut self, key: &str, values: impl IntoIterator<Item = &'a str>) -> &mut Self {
        self.key(key);
        if self.json {
            self.out.push('[');
            for (i, v) in values.into_iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                crate::json::push_json_str(&mut self.out, v);
            }
            self.out.push(']');
        } else {
            let joined: Vec<&str> = values.into_iter().collect();
            if joined.is_empty() {
                self.out.push('-');
            } else {
                self.push_text(&joined.join(","));
            }
        }
        self
    }

    /// The line's text.
    pub fn as_str(&self) -> &str {
        &self.out
    }
}

/// Switches the format of the lines that follow.
pub fn set_format(format: LogFormat) {
    FORMAT.store(format as u8, Ordering::Relaxed);
}

/// Switches the level in force.
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(json: bool) -> String {
        let mut f = Fields {
            out: String::new(),
            json,
        };
        f.text("peer", "127.0.0.1:5")
            .text("path", "/a b")
            .list("topics", ["x", "y"])
            .number("status", 200)
            .none("sub");
        f.out
    }

    #[test]
    fn fields_are_logfmt_in_text_and_members_in_json() {
        assert_eq!(
            line(false),
            "peer=127.0.0.1:5 path=\"/a b\" topics=x,y status=200 sub=-"
        );
        assert_eq!(
            line(true),
            "\"peer\":\"127.0.0.1:5\",\"path\":\"/a b\",\"topics\":[\"x\",\"y\"],\
             \"status\":200,\"sub\":null"
        );
    }
}
