//! The binary's log output: plain text (as before) or one JSON object per line
//! (`--log-format json`: `ts`, `level`, `target`, `msg`), and a level that a reload can change.
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
            line.push_str(",\"msg\":");
            crate::json::push_json_str(&mut line, &record.args().to_string());
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

/// Switches the format of the lines that follow.
pub fn set_format(format: LogFormat) {
    FORMAT.store(format as u8, Ordering::Relaxed);
}

/// Switches the level in force.
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}
