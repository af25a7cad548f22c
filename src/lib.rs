//! sseloop: one thread, one `mio::Poll`, every connection in a slab, Server-Sent Events out.
//!
//! Module map (who owns what; docs/ARCHITECTURE.md gives the layers, which `tests/layering.rs`
//! enforces):
//! - [`api`]: the server API's requests, its JSON answers and the banned subjects.
//! - [`auth`]: JWT verification, topic patterns and their coverage, token sources.
//! - [`config`]: options, defaults, ranges, validation, the backplane URL (the CLI is generated
//!   from it), and where values come from (flags, `SSELOOP_*` variables, a TOML file:
//!   [`config::sources`]). Plain values: it imports nothing else from the crate.
//! - [`ids`]: the run prefix of event ids.
//! - [`event_loop`]: the `Poll`, accept, dispatch, fan-out, flush, shutdown. Dispatches only.
//! - [`conn`]: a connection's stage (HTTP / SSE), lifecycle ([`conn::state`]), output queue and
//!   deadlines; [`conn::io`] is the socket edge (errno lives there only).
//! - [`http`]: request heads and bodies, routing, canned responses, CORS.
//! - [`sse`]: event → `text/event-stream` bytes.
//! - [`hub`]: topics, subscriptions, the id sequence, per-topic history and replay.
//! - [`backplane`]: the Redis Streams backplane (N nodes, one hub): its two Redis links in the
//!   loop, the append and read scripts, reconnection.
//! - [`idempotency`]: `Idempotency-Key` answers without a backplane.
//! - [`buf`]: the shared encoded event, output queues, pooled MSS-sized write chunks.
//! - [`timer`]: every deadline in one structure; drives the poll timeout.
//! - [`metrics`]: counters and the Prometheus page; [`procstat`]: the process figures it shows.
//! - [`systemd`]: readiness notification and socket activation (inert without systemd).
//! - [`logging`]: text or JSON log lines, a level a reload can change; [`json`]: JSON strings.
//! - [`handle`]: publish and stop from other threads (queue + `mio::Waker`).
//! - [`hooks`]: host callbacks (publish veto, connection open/close).
//! - [`limits`]: per-client limits (connections and new connections per address, publishes per
//!   publisher, subscriptions per stream) and their bounded tables.
//! - [`ffi`]: the C ABI (`include/sseloop.h`, docs/EMBEDDING.md): exports, error codes,
//!   last-error text, drive modes for hosts.
//! - [`frame`]: the binary frame protocol (codec, payloads, a blocking client). Pure.
//! - [`tls`]: TLS configuration (certificates, mTLS, the backplane's client side) and the
//!   per-connection session the loop drives (rustls, `ring` provider).
//! - [`console`]: the web console's compiled-in files and the `/stats` JSON (`--ui`). Pure.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod auth;
pub mod backplane;
pub mod buf;
pub mod config;
pub mod conn;
pub mod console;
pub mod event_loop;
pub mod ffi;
pub mod frame;
pub mod handle;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod idempotency;
pub mod ids;
pub mod json;
pub mod limits;
pub mod logging;
pub mod loop_state;
pub mod metrics;
pub mod procstat;
pub mod ratelimit;
pub mod sse;
pub mod systemd;
pub mod timer;
pub mod tls;

pub use config::{Config, COMMIT, VERSION};
pub use event_loop::{Server, StartError, Status};
pub use handle::{PublishError, PublishHandle};
