/*
 * sseloop.h: embed the sseloop Server-Sent Events loop in a C program.
 *
 * Declares exactly what src/ffi/ exports (tests/ffi.rs fails when the two drift: names, parameter
 * and return types, constants and struct fields are checked against the Rust source and the
 * built library). docs/EMBEDDING.md has the full contract of every function.
 *
 * Thread rules (as libuv states them): a loop is driven by one thread at a time. Every function
 * taking a sseloop_t is loop-side, except sseloop_publish and sseloop_stop, which may be called
 * from any thread at any time (they queue work and wake the loop; wake-ups coalesce), and
 * sseloop_fd and sseloop_local_port, which only read values fixed at creation. A loop-side call
 * made while another is in progress on the same loop (from a hook, or from another thread)
 * fails with SSELOOP_EBUSY instead of corrupting anything. Hooks run on the driving thread.
 *
 * Ownership: every object comes from a _new function and is released by the matching _free;
 * _free(NULL) is a no-op. Strings passed in are copied or used only during the call. Strings
 * handed to hooks are valid only during the hook call.
 *
 * Errors: functions returning int give SSELOOP_OK (0) or a negative SSELOOP_E* code, except
 * where a function documents a value (a descriptor, a port, a length). SSELOOP_EDONE is not a
 * failure. After a failure, sseloop_last_error copies a message (kept per thread).
 *
 * Link: -lsseloop (libsseloop.so, or the static libsseloop.a plus -lpthread -ldl -lm); after
 * `make install`, `pkg-config --cflags --libs sseloop` (add --static for the archive).
 */
#ifndef SSELOOP_H
#define SSELOOP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Return codes ---------------------------------------------------------------------- */

enum sseloop_code {
    SSELOOP_OK = 0,          /* success */
    SSELOOP_EDONE = -1,      /* not a failure: nothing (more) to do; the loop has stopped */
    SSELOOP_EINVAL = -2,     /* NULL where not allowed, malformed or out-of-range argument */
    SSELOOP_ECONFIG = -3,    /* configuration refused (at sseloop_new, or a bad command line) */
    SSELOOP_EIO = -4,        /* operating-system error (bind, epoll) */
    SSELOOP_ESTOPPED = -5,   /* publish after sseloop_stop */
    SSELOOP_ETOPIC = -6,     /* no topic, or one outside [A-Za-z0-9._~:/-]{1,128} */
    SSELOOP_EEVENT = -7,     /* event type empty, over 128 bytes, or containing CR/LF/NUL */
    SSELOOP_ETOOLARGE = -8,  /* data larger than the maximum body size */
    SSELOOP_EBUSY = -9,      /* loop-side call while the loop is in use (hook, other thread) */
    SSELOOP_EINTERNAL = -10, /* internal error (a caught panic); the loop refuses further use */
    SSELOOP_EAGAIN = -11,    /* would block: publish queue full; retry after the loop has run */
    SSELOOP_EUNAVAILABLE = -12 /* backplane: Redis did not accept the event in time; retry */
};

/* The version of this header (Cargo.toml's); sseloop_version() gives the library's at run time.
 * A program may compare the two to detect a library older than the header it was built with. */
#define SSELOOP_VERSION_MAJOR 0
#define SSELOOP_VERSION_MINOR 1
#define SSELOOP_VERSION_PATCH 0

/* Bytes an id buffer passed to sseloop_publish must have (ids are shorter, NUL included). */
#define SSELOOP_ID_MAX 64

/* Copies this thread's last failure message into buf (len bytes, NUL-terminated, truncated to
 * fit). Returns the message's full length (0 if none); buf may be NULL to ask for it. */
int sseloop_last_error(char *buf, size_t len);

/* Static "SSELOOP_EXXX: description" text of a code ("unknown code" otherwise). Never NULL. */
const char *sseloop_strerror(int code);

/* The library version, "MAJOR.MINOR.PATCH". Static. */
const char *sseloop_version(void);

/* ---- Options ----------------------------------------------------------------------------- */

/* Options of a loop. Single-threaded; copied by sseloop_new. */
typedef struct sseloop_config_t sseloop_config_t;

/* New options with the sseloop binary's defaults (the SSELOOP_*_TOKEN environment variables are
 * NOT read). NULL on failure. Release with sseloop_config_free. */
sseloop_config_t *sseloop_config_new(void);

/* Releases options. NULL is a no-op. */
void sseloop_config_free(sseloop_config_t *config);

/* Replaces every option by parsing argv like the sseloop binary (argv[0] is skipped; the
 * SSELOOP_*_TOKEN environment variables apply). SSELOOP_ECONFIG with the parser's message on a
 * bad command line (also for --help / --version, whose text becomes the message); the options
 * are then unchanged. */
int sseloop_config_parse_args(sseloop_config_t *config, int argc, const char *const *argv);

/* Setters, one per command-line option (same names, same ranges, shown below as [min, max]).
 * SSELOOP_EINVAL for a NULL config or a value out of range (the message names the option and its
 * range); the option is then unchanged. Combinations are checked by sseloop_new. */

/* "HOST:PORT" ("[::1]:PORT" for IPv6); port 0 picks a free port. Host names resolve now. */
int sseloop_config_set_listen(sseloop_config_t *config, const char *addr);
/* Heartbeat after this much silence on a stream; [1, 86400000]. */
int sseloop_config_set_heartbeat_ms(sseloop_config_t *config, uint64_t ms);
/* The retry: value sent to clients; [0, 86400000]. */
int sseloop_config_set_retry_ms(sseloop_config_t *config, uint64_t ms);
/* Events kept per topic for Last-Event-ID resume; 0 disables history; [0, 1048576]. */
int sseloop_config_set_history(sseloop_config_t *config, size_t events);
/* Bytes of history over all topics, encodings included; [0, 2^40]. Default 64 MiB. */
int sseloop_config_set_history_bytes(sseloop_config_t *config, size_t bytes);
/* Most topics existing at once; [1, 16777216]. Default 65536. */
int sseloop_config_set_max_topics(sseloop_config_t *config, size_t topics);
/* Bearer tokens; NULL removes one. An empty token is refused by sseloop_new. */
int sseloop_config_set_publish_token(sseloop_config_t *config, const char *token);
int sseloop_config_set_subscribe_token(sseloop_config_t *config, const char *token);
/* Nonzero: allow token-less publishing on a non-loopback address. */
int sseloop_config_set_open_publish(sseloop_config_t *config, int enabled);
/* --backplane: "redis://[USER:PASSWORD@]HOST:PORT[/DB]", NULL removes it (SSELOOP_EINVAL for a
 * malformed URL). Other backplane options: sseloop_config_parse_args. */
int sseloop_config_set_backplane(sseloop_config_t *config, const char *url);
int sseloop_config_set_cors_origin(sseloop_config_t *config, const char *origin);
/* Largest publish body on every path, sseloop_publish included; [0, 2^30]. Default 1 MiB. */
int sseloop_config_set_max_body(sseloop_config_t *config, size_t bytes);
/* [1, 16777216]; 0 restores the default: RLIMIT_NOFILE minus a reserve. */
int sseloop_config_set_max_connections(sseloop_config_t *config, size_t connections);
/* Shutdown grace period; [0, 86400000]. */
int sseloop_config_set_grace_ms(sseloop_config_t *config, uint64_t ms);
/* The three timeouts: [1, 86400000]. */
int sseloop_config_set_header_timeout_ms(sseloop_config_t *config, uint64_t ms);
int sseloop_config_set_idle_timeout_ms(sseloop_config_t *config, uint64_t ms);
int sseloop_config_set_write_stall_ms(sseloop_config_t *config, uint64_t ms);
/* How often a long round of writes to subscribers takes new input (publishes, Redis's answers),
 * in microseconds; [0, 1000000], 0 after every write. Default 250. */
int sseloop_config_set_round_input_us(sseloop_config_t *config, uint64_t us);
/* Output queued per connection before a slow-consumer cut; [2^16, 2^40], and sseloop_new wants
 * at least max_body + 65536. Default 2 MiB. */
int sseloop_config_set_max_queue_bytes(sseloop_config_t *config, size_t bytes);
/* Bytes sseloop_publish may have queued for the loop before SSELOOP_EAGAIN; [2^16, 2^40], and
 * sseloop_new wants at least max_body. Default 16 MiB. */
int sseloop_config_set_publish_queue_bytes(sseloop_config_t *config, size_t bytes);
/* Largest frame payload accepted from frame clients; [256, 2^30]. Default 1 MiB. */
int sseloop_config_set_max_frame(sseloop_config_t *config, size_t bytes);

/* Per-client limits (docs/SECURITY.md); 0 turns each off, the default. Connections per client
 * address; [0, 16777216]. */
int sseloop_config_set_max_connections_per_ip(sseloop_config_t *config, size_t connections);
/* Bits of an IPv6 address naming one client; [1, 128]. Default 64. */
int sseloop_config_set_ipv6_prefix(sseloop_config_t *config, uint64_t bits);
/* Comma-separated CIDR blocks whose Forwarded / X-Forwarded-For name the client; NULL or ""
 * removes them (SSELOOP_EINVAL for a bad block). */
int sseloop_config_set_trusted_proxy(sseloop_config_t *config, const char *cidrs);
/* Publishes per second per publisher (JWT subject, else address); [0, 1000000]. */
int sseloop_config_set_publish_rate(sseloop_config_t *config, uint64_t per_second);
/* The publish token bucket's size; 0 = one second of the rate; [0, 1000000]. */
int sseloop_config_set_publish_burst(sseloop_config_t *config, uint64_t burst);
/* Topics and patterns per stream, SUBSCRIBE frames included; [0, 64]. */
int sseloop_config_set_max_subscriptions_per_conn(sseloop_config_t *config, size_t subscriptions);
/* New connections per second per client address; [0, 1000000]. */
int sseloop_config_set_max_new_connections_rate(sseloop_config_t *config, uint64_t per_second);

/* JWT authorization (--jwt-*; docs/SECURITY.md). NULL removes a string option. JWT and the static
 * tokens are exclusive, and a cookie needs a specific CORS origin: sseloop_new checks the
 * combination and reads the key (SSELOOP_ECONFIG). */
/* HMAC secret (at least 32 bytes): HS256/384/512 tokens. */
int sseloop_config_set_jwt_secret(sseloop_config_t *config, const char *secret);
/* Path of a PEM public key (RSA, EC P-256/P-384, Ed25519), read by sseloop_new. */
int sseloop_config_set_jwt_public_key(sseloop_config_t *config, const char *path);
int sseloop_config_set_jwt_issuer(sseloop_config_t *config, const char *issuer);
int sseloop_config_set_jwt_audience(sseloop_config_t *config, const char *audience);
/* Clock skew tolerated on exp and nbf, in seconds (default 5, at most 86400). */
int sseloop_config_set_jwt_leeway(sseloop_config_t *config, uint64_t seconds);
/* Cookie the subscribe token may also come from (EventSource withCredentials). */
int sseloop_config_set_jwt_cookie(sseloop_config_t *config, const char *name);

/* TLS (--tls-*, --backplane-ca; docs/SECURITY.md): paths of PEM files, NULL removes one. With a
 * certificate and its key the listener speaks TLS 1.2/1.3; a client CA requires client
 * certificates. sseloop_new reads the files and checks the key against the certificate
 * (SSELOOP_ECONFIG); sseloop_reload reads them again for new handshakes. */
int sseloop_config_set_tls_cert(sseloop_config_t *config, const char *path);
int sseloop_config_set_tls_key(sseloop_config_t *config, const char *path);
int sseloop_config_set_tls_client_ca(sseloop_config_t *config, const char *path);
int sseloop_config_set_backplane_ca(sseloop_config_t *config, const char *path);

/* ---- The loop ---------------------------------------------------------------------------- */

typedef struct sseloop_t sseloop_t;

/* Validates config, binds and creates a loop in *out (NULL on failure). config is copied.
 * SSELOOP_EINVAL (NULL), SSELOOP_ECONFIG (options refused), SSELOOP_EIO (bind/epoll failed). */
int sseloop_new(const sseloop_config_t *config, sseloop_t **out);

/* Frees a loop, closing the listener and every connection at once (stop it and drive it to
 * SSELOOP_EDONE first for a graceful end). NULL is a no-op. No thread may use the loop any more;
 * never call it from a hook (a loop in use is left alone, and leaked, instead). */
void sseloop_free(sseloop_t *loop);

/* Drive mode 1: runs on the calling thread until the loop has stopped; SSELOOP_OK then. */
int sseloop_run(sseloop_t *loop);

/* Drive mode 2: one iteration, waiting at most timeout_ms (0 = no wait, negative = until the
 * next timer or event). SSELOOP_OK while running, SSELOOP_EDONE once stopped. */
int sseloop_poll(sseloop_t *loop, int timeout_ms);

/* Applies a new configuration to a running loop, as SIGHUP does for the sseloop binary: the
 * settings that can change live (authorization tokens and keys, CORS origin, heartbeat, retry,
 * timeouts, max connections, log format and level) take effect before the next iteration; the
 * others keep their values until a restart. An invalid configuration changes nothing:
 * SSELOOP_ECONFIG. config is copied. Loop-side. */
int sseloop_reload(sseloop_t *loop, const sseloop_config_t *config);

/* Drive mode 3: a descriptor that is readable when the loop has work; watch it for POLLIN in the
 * host's poller, and call sseloop_poll(loop, 0) when it is readable or sseloop_timeout_ms has
 * elapsed. Never read or close it. Any thread. Negative code on failure. */
int sseloop_fd(const sseloop_t *loop);

/* Milliseconds until the loop needs sseloop_poll(loop, 0) even without I/O: -1 = no timer,
 * 0 = now. Never fails and never sets the last error: NULL or a busy loop give 0. Recompute
 * before every wait. */
int sseloop_timeout_ms(const sseloop_t *loop);

/* The bound TCP port (after listening on port 0). Any thread. Negative code on failure. */
int sseloop_local_port(const sseloop_t *loop);

/* Publishes one event (one id) to ntopics topics. ANY THREAD, also from hooks. event_type may
 * be NULL; data is len bytes of UTF-8 (NULL allowed when len is 0). If id_buf is not NULL it
 * must hold SSELOOP_ID_MAX bytes and receives the id. Nothing is published on failure:
 * SSELOOP_EINVAL, SSELOOP_ETOPIC, SSELOOP_EEVENT, SSELOOP_ETOOLARGE, SSELOOP_ESTOPPED, and
 * SSELOOP_EAGAIN when the queue to the loop is full (publish_queue_bytes): the loop is busy or
 * not being driven; retry later (back off) or drop the event, never spin.
 * With a backplane, the call waits until Redis accepted the event (at most the append timeout)
 * and the id is the cluster-wide one; SSELOOP_EUNAVAILABLE when Redis did not answer in time
 * (the event may still have been appended), SSELOOP_EBUSY when called on the thread that drives
 * the loop (it would wait for itself: publish from another thread). */
int sseloop_publish(const sseloop_t *loop, const char *const *topics, size_t ntopics,
                    const char *event_type, const char *data, size_t len,
                    char *id_buf, size_t id_buf_len);

/* sseloop_publish with an idempotency key: 1..=128 visible ASCII characters (SSELOOP_EINVAL
 * otherwise), NULL for none. A repeat with the same key within idempotency_window_secs (default
 * 300) returns the first call's id in id_buf and publishes nothing; with a backplane the key is
 * kept in Redis, so a retry through another node is recognized too. ANY THREAD. */
int sseloop_publish_idempotent(const sseloop_t *loop, const char *const *topics, size_t ntopics,
                               const char *event_type, const char *data, size_t len,
                               const char *idempotency_key, char *id_buf, size_t id_buf_len);

/* Asks the loop to stop gracefully (stop accepting, let connections finish within the grace
 * period). ANY THREAD, also from hooks. Idempotent: SSELOOP_OK every time. */
int sseloop_stop(const sseloop_t *loop);

/* ---- Server API --------------------------------------------------------------------------- */

/* The server API of docs/API.md without HTTP or authorization (the host is trusted): method
 * ("GET", "POST", "DELETE") and target (path and query, e.g. "/api/v1/connections?topic=news"),
 * body (body_len bytes: a disconnect's JSON; NULL when 0). The JSON answer is copied into out
 * (out_len bytes, NUL-terminated, truncated to fit; NULL to ask for the length) and *status gets
 * the HTTP status the same request would get. Returns the answer's full length (like snprintf).
 * A revocation walks every connection before returning; with a backplane, presence and history
 * older than the cache wait for Redis (at most --backplane-timeout-ms). Loop-side (SSELOOP_EBUSY
 * from a hook). */
int sseloop_api(const sseloop_t *loop, const char *method, const char *target, const char *body,
                size_t body_len, char *out, size_t out_len, int *status);

/* ---- Statistics -------------------------------------------------------------------------- */

/* The numbers GET /metrics shows. Fields are only ever appended: pass sizeof(sseloop_stats_t)
 * to sseloop_stats so that a newer library never writes past an older program's struct. */
typedef struct sseloop_stats_t {
    uint64_t accepted;              /* connections accepted */
    uint64_t open_http;             /* open plain-HTTP connections */
    uint64_t open_sse;              /* open SSE streams */
    uint64_t open_frames;           /* open frame-mode connections */
    uint64_t published;             /* events drained by the loop (queued publishes: not yet) */
    uint64_t deliveries;            /* events queued to subscribers (live and replayed) */
    uint64_t bytes_written;         /* bytes written to sockets */
    uint64_t heartbeats;            /* heartbeats sent */
    uint64_t loop_iterations;       /* loop iterations */
    uint64_t replayed;              /* events replayed from history */
    uint64_t resume_resets_expired; /* resumes from an id history no longer covers */
    uint64_t resume_resets_unknown; /* resumes from an id not of this run */
    uint64_t closes_header_timeout; /* server-initiated closes, by cause */
    uint64_t closes_idle_timeout;
    uint64_t closes_write_stall;
    uint64_t closes_slow_consumer;
    uint64_t closes_grace_expired;
    uint64_t closes_over_capacity;
    uint64_t closes_internal;
    uint64_t accept_fd_exhausted;   /* accept failures for lack of descriptors */
    uint64_t accept_errors;         /* other accept failures */
    uint64_t auth_failures;         /* requests refused for authentication */
    uint64_t frames_received;       /* frames received in frame mode */
    uint64_t publishes_vetoed;      /* client publishes refused by the publish hook */
    uint64_t slab_connections;      /* gauges: occupied connection slots */
    uint64_t timers;                /* armed timers */
    uint64_t subscriptions;         /* topic subscriptions */
    uint64_t topics;                /* topics known */
    uint64_t history_events;        /* events retained, summed over topics */
    uint64_t history_bytes;         /* bytes of the distinct events retained */
    uint64_t chunks_lent;           /* write chunks lent to connections */
    uint64_t max_connections;       /* connection limit in force */
    uint64_t hub_transient_bytes;   /* bytes held beyond history (ahead of readers, batches, backlog) */
} sseloop_stats_t;

/* Fills the first size bytes of *out (size = sizeof *out as the caller knows it; only whole
 * fields; fields this library does not know are zeroed). Loop-side (SSELOOP_EBUSY from a hook). */
int sseloop_stats(const sseloop_t *loop, sseloop_stats_t *out, size_t size);

/* ---- Hooks (run on the driving thread) --------------------------------------------------- */
/* A hook may call sseloop_publish, sseloop_stop, sseloop_fd, sseloop_local_port,
 * sseloop_last_error, sseloop_strerror and sseloop_version. Other calls on the same loop fail
 * with SSELOOP_EBUSY (sseloop_free does nothing). A hook must return normally: no longjmp, no
 * C++ exception. */

enum sseloop_verdict {
    SSELOOP_ALLOW = 0, /* publish it */
    SSELOOP_DENY = 1   /* refuse it (any nonzero value does): HTTP 403, frames ERROR FORBIDDEN */
};

/* A client's publish (HTTP or frames) before it gets an id. Pointers valid during the call. */
typedef struct sseloop_publish_attempt_t {
    const char *const *topics; /* ntopics NUL-terminated names (validated, distinct) */
    size_t ntopics;
    const char *event_type;    /* NUL-terminated, or NULL for none */
    const char *data;          /* data_len bytes of UTF-8, NOT NUL-terminated */
    size_t data_len;
    uint64_t connection;       /* the publishing connection's id */
    const char *subject;       /* the publisher's verified JWT sub, NUL-terminated; NULL without */
} sseloop_publish_attempt_t;

typedef int (*sseloop_publish_hook)(void *userdata, const sseloop_publish_attempt_t *attempt);

enum sseloop_connection_kind {
    SSELOOP_CONNECTION_OPENED = 1,
    SSELOOP_CONNECTION_CLOSED = 2
};

/* A connection opened or closed. peer is valid during the call only. */
typedef struct sseloop_connection_event_t {
    int kind;         /* SSELOOP_CONNECTION_OPENED or SSELOOP_CONNECTION_CLOSED */
    uint64_t id;      /* unique for the life of the loop */
    const char *peer; /* "ADDR:PORT" on open when known, else NULL */
} sseloop_connection_event_t;

typedef void (*sseloop_connection_hook)(void *userdata, const sseloop_connection_event_t *event);

/* Install (replace) a hook; hook NULL removes it. userdata is passed back unchanged and must stay
 * valid until the hook is replaced or the loop freed. Loop-side. */
int sseloop_set_publish_hook(sseloop_t *loop, sseloop_publish_hook hook, void *userdata);
int sseloop_set_connection_hook(sseloop_t *loop, sseloop_connection_hook hook, void *userdata);

#ifdef __cplusplus
}
#endif

#endif /* SSELOOP_H */
