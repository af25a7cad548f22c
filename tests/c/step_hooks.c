/*
 * Drive mode 2 (sseloop_poll on the main thread) with both hooks and the stats:
 * - the publish hook vetoes topic "secret" (the HTTP publisher gets 403) and, re-entrantly,
 *   republishes every allowed event to topic "audit" (allowed from a hook; the copy gets its id
 *   first), while the loop-side calls it tries are refused with SSELOOP_EBUSY;
 * - the connection hook counts opens and closes, which must balance;
 * - stats and sseloop_timeout_ms follow what the client thread does.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>

#include "testutil.h"

static sseloop_t *loop;
static int port;
static atomic_int step; /* client progress, read by the main loop */

struct counts {
    int opened, closed, attempts, denied, reentry_checked;
    char peer[64];
};

static int on_publish(void *userdata, const sseloop_publish_attempt_t *a) {
    struct counts *counts = userdata;
    counts->attempts++;
    CHECK(a->ntopics == 1 && a->topics != NULL && a->topics[0] != NULL);
    CHECK(a->connection >= 1);
    if (strcmp(a->topics[0], "secret") == 0) {
        counts->denied++;
        return SSELOOP_DENY;
    }
    CHECK(strcmp(a->topics[0], "news") == 0);
    CHECK(a->event_type != NULL && strcmp(a->event_type, "headline") == 0);
    CHECK(a->data_len == 5 && memcmp(a->data, "hello", 5) == 0);

    /* Re-entrancy: loop-side calls are refused, queueing calls work. */
    sseloop_stats_t stats;
    CHECK_RC(sseloop_poll(loop, 0), SSELOOP_EBUSY);
    CHECK_LAST_ERROR("in use");
    int api_status = 0;
    CHECK_RC(sseloop_api(loop, "GET", "/api/v1/bans", NULL, 0, NULL, 0, &api_status),
             SSELOOP_EBUSY);
    CHECK_RC(sseloop_run(loop), SSELOOP_EBUSY);
    CHECK_RC(sseloop_stats(loop, &stats, sizeof stats), SSELOOP_EBUSY);
    CHECK_RC(sseloop_set_publish_hook(loop, NULL, NULL), SSELOOP_EBUSY);
    CHECK(sseloop_timeout_ms(loop) == 0);
    CHECK(sseloop_local_port(loop) == port);
    CHECK(sseloop_fd(loop) >= 0);
    sseloop_free(loop); /* refused: the loop is in use (checked below: it keeps working) */
    const char *audit[] = {"audit"};
    char id[SSELOOP_ID_MAX];
    CHECK_RC(sseloop_publish(loop, audit, 1, "audited", a->data, a->data_len, id, sizeof id),
             SSELOOP_OK);
    counts->reentry_checked++;
    return SSELOOP_ALLOW;
}

static void on_connection(void *userdata, const sseloop_connection_event_t *ev) {
    struct counts *counts = userdata;
    CHECK(ev->id >= 1);
    if (ev->kind == SSELOOP_CONNECTION_OPENED) {
        counts->opened++;
        CHECK(ev->peer != NULL);
        snprintf(counts->peer, sizeof counts->peer, "%s", ev->peer);
    } else {
        CHECK(ev->kind == SSELOOP_CONNECTION_CLOSED);
        CHECK(ev->peer == NULL);
        counts->closed++;
    }
}

static void *client(void *arg) {
    (void)arg;
    sse_client *sub = calloc(1, sizeof *sub);
    CHECK(sub != NULL);
    CHECK(sse_open(sub, port, "topic=audit&topic=news") == 200);
    atomic_store(&step, 1);
    while (atomic_load(&step) != 2) sleep_ms(2); /* main checks the stats of an open stream */

    char body[512];
    int status =
        http_request(port, "POST", "/publish?topic=secret", "classified", body, sizeof body);
    if (status != 403) FAIL("vetoed publish: status %d, body %s", status, body);
    status = http_request(port, "POST", "/publish?topic=news&event=headline", "hello", body,
                          sizeof body);
    if (status != 200) FAIL("allowed publish: status %d, body %s", status, body);
    CHECK(strstr(body, "\"id\"") != NULL);

    /* The hook ran before the news got its id, so the audit copy it published has the lower id
     * and arrives first; the secret never arrives. */
    sse_event ev;
    CHECK(sse_next(sub, &ev));
    CHECK(strcmp(ev.event, "audited") == 0 && strcmp(ev.data, "hello") == 0);
    unsigned long long first = id_seq(ev.id);
    CHECK(sse_next(sub, &ev));
    CHECK(strcmp(ev.event, "headline") == 0 && strcmp(ev.data, "hello") == 0);
    CHECK(id_seq(ev.id) == first + 1);
    close(sub->fd);
    free(sub);
    atomic_store(&step, 3);
    return NULL;
}

/* Drives the loop until `done()` or a deadline. */
static void drive_until(int (*done)(void *), void *arg, const char *what) {
    double deadline = now_s() + 120;
    while (!done(arg)) {
        if (now_s() > deadline) FAIL("timed out waiting for %s", what);
        CHECK_RC(sseloop_poll(loop, 20), SSELOOP_OK);
    }
}

static int step_is(void *want) { return atomic_load(&step) == (int)(intptr_t)want; }
static int all_closed(void *arg) {
    struct counts *c = arg;
    return c->opened == 3 && c->closed == 3;
}

int main(void) {
    sseloop_config_t *config = sseloop_config_new();
    CHECK(config != NULL);
    CHECK_RC(sseloop_config_set_listen(config, "127.0.0.1:0"), SSELOOP_OK);
    CHECK_RC(sseloop_config_set_heartbeat_ms(config, 60000), SSELOOP_OK);
    CHECK_RC(sseloop_config_set_grace_ms(config, 2000), SSELOOP_OK);
    CHECK_RC(sseloop_new(config, &loop), SSELOOP_OK);
    sseloop_config_free(config);
    port = sseloop_local_port(loop);

    struct counts counts;
    memset(&counts, 0, sizeof counts);
    CHECK_RC(sseloop_set_publish_hook(loop, on_publish, &counts), SSELOOP_OK);
    CHECK_RC(sseloop_set_connection_hook(loop, on_connection, &counts), SSELOOP_OK);

    /* Nothing armed yet: no timer, so the host may sleep until the descriptor is readable. */
    CHECK(sseloop_timeout_ms(loop) == -1);
    CHECK_RC(sseloop_poll(loop, 0), SSELOOP_OK);

    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, client, NULL) == 0);
    drive_until(step_is, (void *)1, "the subscription");

    sseloop_stats_t stats;
    CHECK_RC(sseloop_stats(loop, &stats, sizeof stats), SSELOOP_OK);
    CHECK(stats.open_sse == 1 && stats.subscriptions == 2 && stats.accepted == 1);
    int timeout = sseloop_timeout_ms(loop); /* the stream's heartbeat is armed */
    CHECK(timeout >= 0 && timeout <= 60000);
    CHECK(counts.opened == 1 && strncmp(counts.peer, "127.0.0.1:", 10) == 0);

    /* The server API without HTTP: the one stream is listed; a bad revocation is refused. */
    char answer[4096];
    int status = 0;
    int len = sseloop_api(loop, "GET", "/api/v1/connections?topic=news", NULL, 0, answer,
                          sizeof answer, &status);
    CHECK(len > 0 && (size_t)len < sizeof answer && status == 200);
    CHECK(strstr(answer, "\"kind\":\"sse\"") != NULL);
    len = sseloop_api(loop, "POST", "/api/v1/disconnect", "{}", 2, answer, sizeof answer, &status);
    CHECK(len > 0 && status == 400 && strstr(answer, "\"status\":400") != NULL);
    len = sseloop_api(loop, "GET", "/api/v1/bans", NULL, 0, NULL, 0, &status);
    CHECK(len == (int)strlen("{\"bans\":[]}\n") && status == 200);
    atomic_store(&step, 2);

    drive_until(step_is, (void *)3, "the client");
    drive_until(all_closed, &counts, "every connection to close");
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(counts.attempts == 2 && counts.denied == 1 && counts.reentry_checked == 1);

    CHECK_RC(sseloop_stats(loop, &stats, sizeof stats), SSELOOP_OK);
    CHECK(stats.publishes_vetoed == 1);
    CHECK(stats.published == 2); /* the news and the hook's audit copy */
    CHECK(stats.history_events == 2);
    CHECK(stats.accepted == 3 && stats.slab_connections == 0 && stats.subscriptions == 0);
    CHECK(stats.deliveries == 2 && stats.bytes_written > 0 && stats.loop_iterations > 0);

    /* Removing the hooks: publishing to "secret" is now allowed. */
    CHECK_RC(sseloop_set_publish_hook(loop, NULL, NULL), SSELOOP_OK);
    CHECK_RC(sseloop_set_connection_hook(loop, NULL, NULL), SSELOOP_OK);

    CHECK_RC(sseloop_stop(loop), SSELOOP_OK);
    int rc;
    double deadline = now_s() + 60;
    while ((rc = sseloop_poll(loop, -1)) == SSELOOP_OK) {
        if (now_s() > deadline) FAIL("loop did not stop");
    }
    CHECK_RC(rc, SSELOOP_EDONE);
    CHECK_RC(sseloop_poll(loop, 0), SSELOOP_EDONE);
    sseloop_free(loop);
    printf("step_hooks: veto, re-entrancy, %d opens / %d closes: ok\n", counts.opened,
           counts.closed);
    return 0;
}
