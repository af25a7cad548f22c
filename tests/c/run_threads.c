/*
 * Drive mode 1 (sseloop_run on a thread of its own), with four threads publishing at once while
 * two SSE clients check that they receive every event, in id order and in each publisher's
 * order; then a third thread stops the loop (twice), the clients see the stream end, and
 * sseloop_run returns.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>

#include "testutil.h"

#define PUBLISHERS 4
#define PER_PUBLISHER 150
#define CLIENTS 2
#define TOTAL (PUBLISHERS * PER_PUBLISHER)

static sseloop_t *loop;
static int port;
static atomic_int clients_ready;
static atomic_int clients_done;
static int run_rc = 12345;

static void *run_thread(void *arg) {
    (void)arg;
    run_rc = sseloop_run(loop);
    return NULL;
}

static void *publisher(void *arg) {
    int me = (int)(intptr_t)arg;
    const char *topics[] = {"load"};
    unsigned long long last = 0;
    for (int i = 0; i < PER_PUBLISHER; i++) {
        char data[64], id[SSELOOP_ID_MAX];
        int n = snprintf(data, sizeof data, "p%d %d", me, i);
        CHECK_RC(sseloop_publish(loop, topics, 1, "tick", data, (size_t)n, id, sizeof id),
                 SSELOOP_OK);
        unsigned long long seq = id_seq(id);
        if (seq <= last) FAIL("publisher %d: id %s after seq %llu", me, id, last);
        last = seq;
    }
    return NULL;
}

static void *client(void *arg) {
    (void)arg;
    sse_client *c = calloc(1, sizeof *c);
    CHECK(c != NULL);
    CHECK(sse_open(c, port, "topic=load") == 200);
    atomic_fetch_add(&clients_ready, 1);
    int next[PUBLISHERS] = {0};
    unsigned long long last = 0;
    sse_event ev;
    for (int got = 0; got < TOTAL; got++) {
        if (!sse_next(c, &ev)) FAIL("stream ended after %d events", got);
        CHECK(strcmp(ev.event, "tick") == 0);
        unsigned long long seq = id_seq(ev.id);
        if (seq <= last) FAIL("id %s after seq %llu", ev.id, last);
        last = seq;
        int p = -1, i = -1;
        if (sscanf(ev.data, "p%d %d", &p, &i) != 2 || p < 0 || p >= PUBLISHERS)
            FAIL("bad data '%s'", ev.data);
        if (i != next[p]) FAIL("publisher %d: got %d, expected %d", p, i, next[p]);
        next[p]++;
    }
    atomic_fetch_add(&clients_done, 1);
    /* The stream stays open until the loop stops; it must then end, not hang. */
    CHECK(sse_drain_to_eof(c) == 0);
    close(c->fd);
    free(c);
    return NULL;
}

static void *stopper(void *arg) {
    (void)arg;
    CHECK_RC(sseloop_stop(loop), SSELOOP_OK);
    CHECK_RC(sseloop_stop(loop), SSELOOP_OK); /* idempotent */
    return NULL;
}

static void wait_for(atomic_int *counter, int want, const char *what) {
    double deadline = now_s() + 120;
    while (atomic_load(counter) < want) {
        if (now_s() > deadline) FAIL("timed out waiting for %s", what);
        sleep_ms(5);
    }
}

int main(void) {
    sseloop_config_t *config = sseloop_config_new();
    CHECK(config != NULL);
    CHECK_RC(sseloop_config_set_listen(config, "127.0.0.1:0"), SSELOOP_OK);
    CHECK_RC(sseloop_config_set_grace_ms(config, 5000), SSELOOP_OK);
    CHECK_RC(sseloop_new(config, &loop), SSELOOP_OK);
    sseloop_config_free(config);
    port = sseloop_local_port(loop);
    CHECK(port > 0);

    pthread_t runner, clients[CLIENTS], publishers[PUBLISHERS], stop_thread;
    CHECK(pthread_create(&runner, NULL, run_thread, NULL) == 0);
    for (int i = 0; i < CLIENTS; i++) CHECK(pthread_create(&clients[i], NULL, client, NULL) == 0);
    wait_for(&clients_ready, CLIENTS, "subscriptions");

    /* Loop-side calls from this thread while another drives the loop are refused, not raced. */
    sseloop_stats_t stats;
    int rc = sseloop_stats(loop, &stats, sizeof stats);
    CHECK(rc == SSELOOP_OK || rc == SSELOOP_EBUSY);

    for (int i = 0; i < PUBLISHERS; i++)
        CHECK(pthread_create(&publishers[i], NULL, publisher, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < PUBLISHERS; i++) CHECK(pthread_join(publishers[i], NULL) == 0);
    wait_for(&clients_done, CLIENTS, "deliveries");

    CHECK(pthread_create(&stop_thread, NULL, stopper, NULL) == 0);
    CHECK(pthread_join(stop_thread, NULL) == 0);
    CHECK(pthread_join(runner, NULL) == 0);
    CHECK_RC(run_rc, SSELOOP_OK);
    for (int i = 0; i < CLIENTS; i++) CHECK(pthread_join(clients[i], NULL) == 0);

    /* Stopped: publishing fails, driving is a no-op. */
    const char *topics[] = {"load"};
    CHECK_RC(sseloop_publish(loop, topics, 1, NULL, "late", 4, NULL, 0), SSELOOP_ESTOPPED);
    CHECK_LAST_ERROR("stopped");
    CHECK_RC(sseloop_poll(loop, 0), SSELOOP_EDONE);
    CHECK_RC(sseloop_run(loop), SSELOOP_OK);

    CHECK_RC(sseloop_stats(loop, &stats, sizeof stats), SSELOOP_OK);
    CHECK(stats.history_events == TOTAL);
    CHECK(stats.deliveries == (uint64_t)TOTAL * CLIENTS);
    CHECK(stats.accepted == CLIENTS);
    CHECK(stats.open_sse == 0 && stats.slab_connections == 0 && stats.subscriptions == 0);
    CHECK(stats.timers == 0);
    sseloop_free(loop);
    printf("run_threads: %d events x %d clients from %d threads: ok\n", TOTAL, CLIENTS, PUBLISHERS);
    return 0;
}
