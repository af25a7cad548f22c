//! `sseloop-load`: drives an SSE server with many subscribers and pipelined publishers and
//! reports deliveries per second, latency percentiles, loss, and the server's CPU and memory.
//!
//! Module map:
//! - [`cli`]: options and their checks, giving a [`cli::Plan`].
//! - [`driver`]: the single-threaded mio loop, phases, stop decisions, the report's raw figures.
//! - [`churn`]: the handshake-rate mode (`--churn`): new subscribers, one after another.
//! - [`conn`]: subscriber and publisher connections; the socket edge.
//! - [`transport`]: the seam for subscriber protocols (SSE now, sseloop frames later).
//! - [`sse`], [`http`], [`payload`]: pure parsers and encoders (unit-tested at every split).
//! - [`tally`]: loss/duplicate/reorder accounting, the in-flight window, latency histogram.
//! - [`report`]: table, JSON, `--summarize` medians. [`sys`]: rlimit, /proc, socket options.
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod churn;
mod cli;
mod conn;
mod driver;
mod error;
mod http;
mod payload;
mod report;
mod sse;
mod sys;
mod tally;
mod tls;
mod transport;
mod url;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Args;
use crate::error::Result;

/// Exit status for loss, duplicates, disconnects, publish errors, stall or timeout.
const EXIT_FAILED_RUN: u8 = 1;
/// Exit status for usage errors and runs that could not start.
const EXIT_SETUP: u8 = 2;
/// sseloop's default `--max-queue-bytes`, for the window-size warning.
const SSELOOP_DEFAULT_MAX_QUEUE: u64 = 2 << 20;

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILED_RUN),
        Err(e) => {
            eprintln!("sseloop-load: {e}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

/// Returns whether the run (or every summarized run) was clean.
fn real_main(args: &Args) -> Result<bool> {
    if let Some(paths) = &args.summarize {
        let (summary, ok) = report::summarize(paths)?;
        if args.json {
            println!("{summary:#}");
        } else {
            print!("{}", report::summary_table(&summary));
        }
        return Ok(ok);
    }
    // The descriptor limit decides how many subscribers fit; raise it before checking.
    let nofile = match sys::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("sseloop-load: cannot raise RLIMIT_NOFILE: {e}");
            1024
        }
    };
    let plan = args.plan(nofile)?;
    // Rough SSE encoding overhead per event ("id: <run>-<seq>\ndata: " and blank line).
    let queue_bound = plan.window as u64 * (plan.size as u64 + 48);
    if !plan.idle && queue_bound > SSELOOP_DEFAULT_MAX_QUEUE {
        eprintln!(
            "sseloop-load: warning: --window {} x ~{} B per event may queue {} KiB per subscriber; \
             sseloop cuts subscribers past --max-queue-bytes (2 MiB by default)",
            plan.window,
            plan.size + 48,
            queue_bound / 1024
        );
    }
    let report = if plan.churn {
        churn::run(&plan)?
    } else {
        driver::run(&plan)?
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| error::Error::msg(format!("encode report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", report.table());
    }
    Ok(report.ok)
}
