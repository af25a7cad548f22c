/*
 * Helpers for the C programs tests/ffi.rs compiles and runs: CHECK macros that name the failing
 * line, blocking loopback sockets with timeouts, one-shot HTTP requests, and an SSE reader that
 * tolerates split reads. Header-only (every function static inline) so each test is one .c file.
 */
#ifndef SSELOOP_TESTUTIL_H
#define SSELOOP_TESTUTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also defined by each test before its first include */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "sseloop.h"

/* Generous: valgrind slows everything down 20-50x on a loaded 2-core machine. */
#define IO_TIMEOUT_S 60

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: FAILED: ", __FILE__, __LINE__);                                    \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        exit(1);                                                                                   \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) FAIL("%s", #cond);                                                            \
    } while (0)

/* Checks that a call returned `want`, printing the last error otherwise. */
#define CHECK_RC(call, want)                                                                       \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != (want)) {                                                                       \
            char msg_[512];                                                                        \
            sseloop_last_error(msg_, sizeof msg_);                                                 \
            FAIL("%s returned %d (%s), want %d; last error: %s", #call, rc_,                       \
                 sseloop_strerror(rc_), (int)(want), msg_);                                        \
        }                                                                                          \
    } while (0)

/* Checks that this thread's last error message contains `needle`. */
#define CHECK_LAST_ERROR(needle)                                                                   \
    do {                                                                                           \
        char msg_[1024];                                                                           \
        sseloop_last_error(msg_, sizeof msg_);                                                     \
        if (!strstr(msg_, (needle))) FAIL("last error '%s' lacks '%s'", msg_, (needle));           \
    } while (0)

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A blocking TCP connection to 127.0.0.1:port with read/write timeouts. */
static inline int connect_port(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) FAIL("socket: %s", strerror(errno));
    struct timeval tv = {IO_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        FAIL("connect to port %d: %s", port, strerror(errno));
    return fd;
}

static inline void send_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) FAIL("send: %s", strerror(errno));
        data += n;
        len -= (size_t)n;
    }
}

/* Sends one request with `Connection: close`, reads to EOF; returns the status (body copied). */
static inline int http_request(int port, const char *method, const char *target, const char *body,
                        char *resp_body, size_t cap) {
    int fd = connect_port(port);
    char head[1024];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     method, target, blen);
    send_all(fd, head, (size_t)n);
    if (blen) send_all(fd, body, blen);
    static __thread char buf[65536];
    size_t len = 0;
    for (;;) {
        if (len == sizeof buf - 1) FAIL("response too large");
        ssize_t r = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) FAIL("recv: %s", strerror(errno));
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    int status = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1) FAIL("no status line in '%s'", buf);
    if (resp_body && cap) {
        const char *b = strstr(buf, "\r\n\r\n");
        snprintf(resp_body, cap, "%s", b ? b + 4 : "");
    }
    return status;
}

/* An SSE subscription read with a small parser (LF line endings, as sseloop sends). */
typedef struct {
    int fd;
    char buf[1 << 16];
    size_t len;
} sse_client;

typedef struct {
    char id[SSELOOP_ID_MAX];
    char event[160];
    char data[4096];
} sse_event;

/* Subscribes to `query` (e.g. "topic=a"); returns the status. On 200 the `retry:` preamble has
 * been read too, so the subscription is registered when this returns. */
static inline int sse_open(sse_client *c, int port, const char *query) {
    c->fd = connect_port(port);
    c->len = 0;
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /events?%s HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n",
                     query);
    send_all(c->fd, req, (size_t)n);
    char *end;
    for (;;) {
        c->buf[c->len] = 0;
        if ((end = strstr(c->buf, "\r\n\r\n")) != NULL) break;
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, 0);
        if (r <= 0) FAIL("sse head: %s", r == 0 ? "EOF" : strerror(errno));
        c->len += (size_t)r;
    }
    int status = 0;
    sscanf(c->buf, "HTTP/1.1 %d", &status);
    size_t used = (size_t)(end + 4 - c->buf);
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
    return status;
}

/* Reads the next block ending in a blank line. Returns 1 with the block in `out` (NUL-terminated,
 * without the blank line), 0 on EOF. */
static inline int sse_block(sse_client *c, char *out, size_t cap) {
    for (;;) {
        c->buf[c->len] = 0;
        char *end = strstr(c->buf, "\n\n");
        if (end) {
            size_t n = (size_t)(end - c->buf);
            if (n >= cap) FAIL("sse block too large");
            memcpy(out, c->buf, n);
            out[n] = 0;
            memmove(c->buf, end + 2, c->len - n - 2);
            c->len -= n + 2;
            return 1;
        }
        if (c->len == sizeof c->buf - 1) FAIL("sse buffer full");
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) return 0;
        if (r < 0) {
            if (errno == ECONNRESET) return 0;
            FAIL("sse recv: %s", strerror(errno));
        }
        c->len += (size_t)r;
    }
}

/* The next event carrying data (comments, `retry:` and heartbeats are skipped). 1, or 0 on EOF. */
static inline int sse_next(sse_client *c, sse_event *ev) {
    static __thread char block[1 << 16];
    while (sse_block(c, block, sizeof block)) {
        ev->event[0] = 0;
        ev->data[0] = 0;
        int has_data = 0;
        char *save = NULL;
        for (char *line = strtok_r(block, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            if (strncmp(line, "id: ", 4) == 0) {
                snprintf(ev->id, sizeof ev->id, "%s", line + 4);
            } else if (strncmp(line, "event: ", 7) == 0) {
                snprintf(ev->event, sizeof ev->event, "%s", line + 7);
            } else if (strncmp(line, "data: ", 6) == 0) {
                size_t have = strlen(ev->data);
                snprintf(ev->data + have, sizeof ev->data - have, "%s%s", has_data ? "\n" : "",
                         line + 6);
                has_data = 1;
            }
        }
        if (has_data) return 1;
    }
    return 0;
}

/* Reads until the server closes the stream; returns the number of data events skipped. */
static inline int sse_drain_to_eof(sse_client *c) {
    sse_event ev;
    int n = 0;
    while (sse_next(c, &ev)) n++;
    return n;
}

/* The sequence number of an id "<run>-<n>". */
static inline unsigned long long id_seq(const char *id) {
    const char *dash = strrchr(id, '-');
    if (!dash) FAIL("id '%s' has no dash", id);
    return strtoull(dash + 1, NULL, 10);
}

#endif
