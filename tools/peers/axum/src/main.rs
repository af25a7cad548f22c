//! axum + tokio peer for tools/bench.sh (PEERS=1): the idiomatic async-Rust SSE server on one
//! thread (current_thread runtime), one `tokio::sync::broadcast` channel per topic, one task per
//! connection, axum's `Sse` response per subscriber.
//!
//!   GET  /events?topic=T   text/event-stream (chunked); each event `id: <seq>` + `data: <body>`
//!   POST /publish?topic=T  the body (UTF-8) becomes one event of T; `200 {"id":"<seq>"}`
//!
//! A subscriber that falls more than `--capacity` events behind is lagged by the channel; its
//! stream then ends (connection closed), like a slow consumer elsewhere. Prints
//! "listening on ADDR" on stderr once it accepts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use axum::Router;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt as _;

type Shared = Arc<(u64, String)>;

#[derive(Clone)]
struct Hub {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
}

struct Inner {
    topics: HashMap<String, broadcast::Sender<Shared>>,
    seq: u64,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // One thread: the lock is never contended, and never poisoned by a panic elsewhere.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn topic(query: &Option<String>) -> Option<String> {
    let t = query
        .as_deref()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("topic="))?;
    (!t.is_empty()).then(|| t.to_string())
}

async fn events(State(hub): State<Hub>, RawQuery(query): RawQuery) -> Response {
    let Some(t) = topic(&query) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let rx = hub
        .lock()
        .topics
        .entry(t)
        .or_insert_with(|| broadcast::channel(hub.capacity).0)
        .subscribe();
    // A lagged receiver yields an error: end the stream there.
    let stream = BroadcastStream::new(rx)
        .take_while(|r| r.is_ok())
        .filter_map(|r| r.ok())
        .map(|ev| Ok::<_, Infallible>(Event::default().id(ev.0.to_string()).data(ev.1.as_str())));
    Sse::new(stream).into_response()
}

async fn publish(State(hub): State<Hub>, RawQuery(query): RawQuery, body: String) -> Response {
    let Some(t) = topic(&query) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let id = {
        let mut inner = hub.lock();
        inner.seq += 1;
        let seq = inner.seq;
        if let Some(tx) = inner.topics.get(&t) {
            // No receiver left is not an error for a publisher.
            let _ = tx.send(Arc::new((seq, body)));
        }
        seq
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"id\":\"{id}\"}}\n"),
    )
        .into_response()
}

fn main() {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 8080).into();
    let mut capacity = 1024usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v) {
            ("--listen", Some(v)) => match v.parse() {
                Ok(addr) => listen = addr,
                Err(e) => fail(&format!("--listen {v}: {e}")),
            },
            ("--capacity", Some(v)) => match v.parse() {
                Ok(n) if n > 0 => capacity = n,
                _ => fail(&format!("--capacity {v}: expected a positive number")),
            },
            _ => fail("usage: axum-sse-peer [--listen ADDR] [--capacity EVENTS]"),
        }
    }
    let hub = Hub {
        inner: Arc::new(Mutex::new(Inner {
            topics: HashMap::new(),
            seq: 0,
        })),
        capacity,
    };
    let app = Router::new()
        .route("/events", get(events))
        .route("/publish", post(publish))
        .with_state(hub);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("runtime: {e}")),
    };
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!("listening on {}", listener.local_addr()?);
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await
    });
    if let Err(e) = served {
        fail(&format!("serve on {listen}: {e}"));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("axum-sse-peer: {msg}");
    std::process::exit(2);
}
