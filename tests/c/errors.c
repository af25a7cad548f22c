/*
 * Error paths, single-threaded: every NULL the API refuses (SSELOOP_EINVAL with a message naming
 * the argument), bad option values, refused configurations, a port in use, publish refusals,
 * the last-error buffer contract, and stopping twice then publishing.
 */
#define _GNU_SOURCE
#include "testutil.h"

static void check_codes(void) {
    CHECK(strstr(sseloop_strerror(SSELOOP_EBUSY), "SSELOOP_EBUSY") != NULL);
    CHECK(strstr(sseloop_strerror(SSELOOP_EDONE), "nothing to do") != NULL);
    CHECK(strcmp(sseloop_strerror(12345), "unknown code") == 0);
    CHECK(strstr(sseloop_strerror(SSELOOP_EAGAIN), "SSELOOP_EAGAIN") != NULL);
    const char *v = sseloop_version();
    CHECK(v != NULL && strchr(v, '.') != NULL);
    /* The header's compile-time version is the library's run-time version. */
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", SSELOOP_VERSION_MAJOR, SSELOOP_VERSION_MINOR,
             SSELOOP_VERSION_PATCH);
    CHECK(strcmp(v, want) == 0);
    /* Nothing failed on this thread yet. */
    CHECK(sseloop_last_error(NULL, 0) == 0);
}

static void check_nulls(void) {
    sseloop_t *loop = (sseloop_t *)(uintptr_t)1; /* must be overwritten with NULL */
    sseloop_stats_t stats;
    const char *topics[] = {"t"};
    char id[SSELOOP_ID_MAX];

    CHECK_RC(sseloop_new(NULL, &loop), SSELOOP_EINVAL);
    CHECK(loop == NULL);
    CHECK_LAST_ERROR("config must not be NULL");
    sseloop_config_t *config = sseloop_config_new();
    CHECK(config != NULL);
    CHECK_RC(sseloop_new(config, NULL), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("out must not be NULL");
    CHECK_RC(sseloop_config_set_listen(NULL, "127.0.0.1:0"), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("config must not be NULL");
    CHECK_RC(sseloop_config_set_listen(config, NULL), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("addr must not be NULL");
    CHECK_RC(sseloop_config_set_cors_origin(config, NULL), SSELOOP_EINVAL);
    CHECK_RC(sseloop_config_set_heartbeat_ms(NULL, 5), SSELOOP_EINVAL);
    /* sseloop_timeout_ms never fails, so it leaves the last error alone. */
    CHECK(sseloop_timeout_ms(NULL) == 0);
    CHECK_LAST_ERROR("config must not be NULL");
    CHECK_RC(sseloop_config_parse_args(NULL, 0, NULL), SSELOOP_EINVAL);
    CHECK_RC(sseloop_config_parse_args(config, 2, NULL), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("argv must not be NULL");
    CHECK_RC(sseloop_config_parse_args(config, -1, NULL), SSELOOP_EINVAL);
    const char *null_arg[] = {"host", NULL};
    CHECK_RC(sseloop_config_parse_args(config, 2, null_arg), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("argv element must not be NULL");

    CHECK_RC(sseloop_run(NULL), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("loop must not be NULL");
    CHECK_RC(sseloop_poll(NULL, 0), SSELOOP_EINVAL);
    CHECK_RC(sseloop_fd(NULL), SSELOOP_EINVAL);
    CHECK_RC(sseloop_local_port(NULL), SSELOOP_EINVAL);
    CHECK(sseloop_timeout_ms(NULL) == 0);
    CHECK_RC(sseloop_stats(NULL, &stats, sizeof stats), SSELOOP_EINVAL);
    CHECK_RC(sseloop_publish(NULL, topics, 1, NULL, "x", 1, id, sizeof id), SSELOOP_EINVAL);
    CHECK_RC(sseloop_stop(NULL), SSELOOP_EINVAL);
    CHECK_RC(sseloop_set_publish_hook(NULL, NULL, NULL), SSELOOP_EINVAL);
    CHECK_RC(sseloop_set_connection_hook(NULL, NULL, NULL), SSELOOP_EINVAL);
    sseloop_free(NULL);
    sseloop_config_free(NULL);
    sseloop_config_free(config);
}

static void check_config_errors(void) {
    sseloop_config_t *config = sseloop_config_new();
    sseloop_t *loop = NULL;
    CHECK(config != NULL);

    CHECK_RC(sseloop_config_set_listen(config, "not an address"), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("invalid listen address 'not an address'");
    CHECK_RC(sseloop_config_set_listen(config, "127.0.0.1:99999"), SSELOOP_EINVAL);
    CHECK_RC(sseloop_config_set_heartbeat_ms(config, 0), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("--heartbeat-ms must be between 1 and 86400000 (got 0)");
    CHECK_RC(sseloop_config_set_idle_timeout_ms(config, 0), SSELOOP_EINVAL);

    /* Every numeric setter checks the option's range (the table the command line uses). */
    CHECK_RC(sseloop_config_set_retry_ms(config, UINT64_MAX), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("--retry-ms must be between 0 and 86400000 (got 18446744073709551615)");
    CHECK_RC(sseloop_config_set_retry_ms(config, 86400000), SSELOOP_OK);
    CHECK_RC(sseloop_config_set_grace_ms(config, UINT64_MAX), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("--grace-ms");
    CHECK_RC(sseloop_config_set_write_stall_ms(config, 86400001), SSELOOP_EINVAL);
    CHECK_RC(sseloop_config_set_round_input_us(config, 1000001), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("--round-input-us must be between 0 and 1000000");
    CHECK_RC(sseloop_config_set_round_input_us(config, 0), SSELOOP_OK);
    CHECK_RC(sseloop_config_set_max_frame(config, 10), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("--max-frame must be between 256 and");
    CHECK_RC(sseloop_config_set_max_body(config, SIZE_MAX), SSELOOP_EINVAL);
    CHECK_RC(sseloop_config_set_history(config, SIZE_MAX), SSELOOP_EINVAL);
    CHECK_RC(sseloop_config_set_history_bytes(config, SIZE_MAX), SSELOOP_EINVAL);
    CHECK_RC(sseloop_config_set_history_bytes(config, 0), SSELOOP_OK);
    CHECK_RC(sseloop_config_set_max_topics(config, 0), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("--max-topics must be between 1 and 16777216 (got 0)");
    CHECK_RC(sseloop_config_set_max_topics(config, 1000), SSELOOP_OK);
    CHECK_RC(sseloop_config_set_publish_queue_bytes(config, 1024), SSELOOP_EINVAL);
    CHECK_RC(sseloop_config_set_max_connections(config, SIZE_MAX), SSELOOP_EINVAL);
    CHECK_RC(sseloop_config_set_max_connections(config, 0), SSELOOP_OK);
    const char *huge_retry[] = {"host", "--retry-ms", "18446744073709551615"};
    CHECK_RC(sseloop_config_parse_args(config, 3, huge_retry), SSELOOP_ECONFIG);
    CHECK_LAST_ERROR("--retry-ms must be between 0 and 86400000");

    /* Combinations are checked by sseloop_new: the queue caps must hold the largest event. */
    CHECK_RC(sseloop_config_set_max_queue_bytes(config, 1 << 20), SSELOOP_OK);
    CHECK_RC(sseloop_new(config, &loop), SSELOOP_ECONFIG);
    CHECK(loop == NULL);
    CHECK_LAST_ERROR("--max-queue-bytes (1048576) must be at least --max-body (1048576)");
    CHECK_RC(sseloop_config_set_max_queue_bytes(config, 2 << 20), SSELOOP_OK);
    CHECK_RC(sseloop_config_set_publish_queue_bytes(config, 65536), SSELOOP_OK);
    CHECK_RC(sseloop_new(config, &loop), SSELOOP_ECONFIG);
    CHECK_LAST_ERROR("--publish-queue-bytes (65536) must be at least --max-body");
    CHECK_RC(sseloop_config_set_publish_queue_bytes(config, 16 << 20), SSELOOP_OK);

    /* Non-loopback without a token: refused before anything is bound. */
    CHECK_RC(sseloop_config_set_listen(config, "0.0.0.0:0"), SSELOOP_OK);
    CHECK_RC(sseloop_new(config, &loop), SSELOOP_ECONFIG);
    CHECK(loop == NULL);
    CHECK_LAST_ERROR("refusing to listen on non-loopback");
    CHECK_RC(sseloop_config_set_listen(config, "127.0.0.1:0"), SSELOOP_OK);

    CHECK_RC(sseloop_config_set_publish_token(config, ""), SSELOOP_OK);
    CHECK_RC(sseloop_new(config, &loop), SSELOOP_ECONFIG);
    CHECK_LAST_ERROR("--publish-token must not be empty");
    CHECK_RC(sseloop_config_set_publish_token(config, NULL), SSELOOP_OK);
    CHECK_RC(sseloop_config_set_cors_origin(config, "a b"), SSELOOP_OK);
    CHECK_RC(sseloop_new(config, &loop), SSELOOP_ECONFIG);
    CHECK_LAST_ERROR("--cors-origin");
    CHECK_RC(sseloop_config_set_cors_origin(config, "*"), SSELOOP_OK);

    /* Command lines: errors carry the parser's text; the options stay as they were. */
    const char *bad[] = {"host", "--bogus"};
    CHECK_RC(sseloop_config_parse_args(config, 2, bad), SSELOOP_ECONFIG);
    CHECK_LAST_ERROR("--bogus");
    const char *zero[] = {"host", "--heartbeat-ms", "0"};
    CHECK_RC(sseloop_config_parse_args(config, 3, zero), SSELOOP_ECONFIG);
    CHECK_LAST_ERROR("heartbeat-ms");

    /* A port in use: the second bind fails with the OS's reason. */
    CHECK_RC(sseloop_new(config, &loop), SSELOOP_OK);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", sseloop_local_port(loop));
    CHECK_RC(sseloop_config_set_listen(config, addr), SSELOOP_OK);
    sseloop_t *second = NULL;
    CHECK_RC(sseloop_new(config, &second), SSELOOP_EIO);
    CHECK(second == NULL);
    CHECK_LAST_ERROR("in use");
    sseloop_free(loop); /* never driven, never stopped: freed all the same */
    sseloop_config_free(config);
}

static void check_last_error_buffer(void) {
    sseloop_config_t *config = sseloop_config_new();
    CHECK_RC(sseloop_config_set_heartbeat_ms(config, 0), SSELOOP_EINVAL);
    int full = sseloop_last_error(NULL, 0);
    CHECK(full == (int)strlen("--heartbeat-ms must be between 1 and 86400000 (got 0)"));
    char small[5];
    memset(small, 'x', sizeof small);
    CHECK(sseloop_last_error(small, sizeof small) == full);
    CHECK(strcmp(small, "--he") == 0);
    /* A success leaves the message alone (like errno). */
    CHECK_RC(sseloop_config_set_heartbeat_ms(config, 10), SSELOOP_OK);
    CHECK(sseloop_last_error(NULL, 0) == full);
    sseloop_config_free(config);
}

static void check_publish_and_stop(void) {
    sseloop_config_t *config = sseloop_config_new();
    const char *argv[] = {"host",       "--listen", "127.0.0.1:0", "--max-body",
                          "16",         "--grace-ms", "100"};
    CHECK_RC(sseloop_config_parse_args(config, 7, argv), SSELOOP_OK);
    sseloop_t *loop = NULL;
    CHECK_RC(sseloop_new(config, &loop), SSELOOP_OK);
    sseloop_config_free(config);
    CHECK(sseloop_fd(loop) >= 0);
    CHECK(sseloop_local_port(loop) > 0);

    const char *ok[] = {"news", "sport"};
    const char *bad_topic[] = {"bad topic"};
    const char *null_topic[] = {NULL};
    char id[SSELOOP_ID_MAX], id2[SSELOOP_ID_MAX];
    CHECK_RC(sseloop_publish(loop, ok, 0, NULL, "x", 1, NULL, 0), SSELOOP_ETOPIC);
    CHECK_RC(sseloop_publish(loop, bad_topic, 1, NULL, "x", 1, NULL, 0), SSELOOP_ETOPIC);
    CHECK_LAST_ERROR("topic");
    CHECK_RC(sseloop_publish(loop, NULL, 1, NULL, "x", 1, NULL, 0), SSELOOP_EINVAL);
    CHECK_RC(sseloop_publish(loop, null_topic, 1, NULL, "x", 1, NULL, 0), SSELOOP_EINVAL);
    CHECK_RC(sseloop_publish(loop, ok, 1, "a\nb", "x", 1, NULL, 0), SSELOOP_EEVENT);
    CHECK_RC(sseloop_publish(loop, ok, 1, NULL, "0123456789abcdefX", 17, NULL, 0),
             SSELOOP_ETOOLARGE);
    CHECK_RC(sseloop_publish(loop, ok, 1, NULL, "\xff\xfe", 2, NULL, 0), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("UTF-8");
    CHECK_RC(sseloop_publish(loop, ok, 1, NULL, NULL, 3, NULL, 0), SSELOOP_EINVAL);
    CHECK_RC(sseloop_publish(loop, ok, 1, NULL, "x", 1, id, 8), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("SSELOOP_ID_MAX");

    CHECK_RC(sseloop_publish(loop, ok, 2, "kind", "0123456789abcdef", 16, id, sizeof id),
             SSELOOP_OK);
    CHECK_RC(sseloop_publish(loop, ok, 1, NULL, NULL, 0, id2, sizeof id2), SSELOOP_OK);
    CHECK(id_seq(id2) == id_seq(id) + 1);
    CHECK(strncmp(id, id2, (size_t)(strrchr(id, '-') - id)) == 0); /* same run prefix */
    CHECK_RC(sseloop_publish(loop, ok, 1, NULL, "z", 1, NULL, 0), SSELOOP_OK);

    CHECK_RC(sseloop_stop(loop), SSELOOP_OK);
    CHECK_RC(sseloop_stop(loop), SSELOOP_OK);
    CHECK_RC(sseloop_publish(loop, ok, 1, NULL, "late", 4, id, sizeof id), SSELOOP_ESTOPPED);
    CHECK_LAST_ERROR("stopped");
    int rc, iterations = 0;
    while ((rc = sseloop_poll(loop, 100)) == SSELOOP_OK) CHECK(++iterations < 1000);
    CHECK_RC(rc, SSELOOP_EDONE);
    CHECK_RC(sseloop_poll(loop, -1), SSELOOP_EDONE);
    CHECK_RC(sseloop_run(loop), SSELOOP_OK);
    CHECK_RC(sseloop_stop(loop), SSELOOP_OK);

    sseloop_stats_t stats;
    CHECK_RC(sseloop_stats(loop, &stats, sizeof stats), SSELOOP_OK);
    CHECK_RC(sseloop_stats(loop, NULL, sizeof(sseloop_stats_t)), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("out must not be NULL");
    CHECK(stats.history_events == 4); /* two topics for the first event */

    /* The caller's struct size bounds what is written: an older, shorter struct gets only the
     * fields it knows; a newer, longer one gets zeros past the fields this library knows. */
    uint64_t older[3];
    memset(older, 0xab, sizeof older);
    CHECK_RC(sseloop_stats(loop, (sseloop_stats_t *)(void *)older, 2 * sizeof(uint64_t)),
             SSELOOP_OK);
    CHECK(older[0] == stats.accepted && older[1] == stats.open_http);
    CHECK(older[2] == UINT64_C(0xabababababababab));
    /* A size that is not a whole number of fields: the partial field is not written. */
    memset(older, 0xab, sizeof older);
    CHECK_RC(sseloop_stats(loop, (sseloop_stats_t *)(void *)older, sizeof(uint64_t) + 3),
             SSELOOP_OK);
    CHECK(older[0] == stats.accepted && older[1] == UINT64_C(0xabababababababab));
    enum { KNOWN = sizeof(sseloop_stats_t) / sizeof(uint64_t) };
    uint64_t newer[KNOWN + 4];
    memset(newer, 0xab, sizeof newer);
    CHECK_RC(sseloop_stats(loop, (sseloop_stats_t *)(void *)newer, sizeof newer), SSELOOP_OK);
    CHECK(newer[KNOWN - 2] == stats.max_connections);
    CHECK(newer[KNOWN - 1] == stats.hub_transient_bytes); /* appended last: the ABI order holds */
    for (int i = KNOWN; i < KNOWN + 4; i++) CHECK(newer[i] == 0);
    sseloop_free(loop);
}

/* hub_transient_bytes: events published from the host wait in the hub's backlog, which is
 * recorded a slice (half --max-queue-bytes, at least 64 KiB) per iteration; once all are
 * recorded (history holds them) nothing is held beyond history. */
static void check_transient_bytes(void) {
    sseloop_config_t *config = sseloop_config_new();
    const char *argv[] = {"host", "--listen", "127.0.0.1:0", "--max-body", "8k",
                          "--max-queue-bytes", "72k"};
    CHECK_RC(sseloop_config_parse_args(config, 7, argv), SSELOOP_OK);
    sseloop_t *loop = NULL;
    CHECK_RC(sseloop_new(config, &loop), SSELOOP_OK);
    sseloop_config_free(config);
    const char *topics[] = {"bulk"};
    static char data[4000];
    memset(data, 'd', sizeof data);
    enum { EVENTS = 40 };
    for (int i = 0; i < EVENTS; i++)
        CHECK_RC(sseloop_publish(loop, topics, 1, NULL, data, sizeof data, NULL, 0), SSELOOP_OK);
    sseloop_stats_t stats;
    CHECK_RC(sseloop_stats(loop, &stats, sizeof stats), SSELOOP_OK);
    CHECK(stats.hub_transient_bytes == 0); /* still queued outside the hub */
    CHECK_RC(sseloop_poll(loop, 0), SSELOOP_OK);
    CHECK_RC(sseloop_stats(loop, &stats, sizeof stats), SSELOOP_OK);
    CHECK(stats.history_events > 0 && stats.history_events < EVENTS);
    /* Each waiting event holds its data and both encodings: over 3 x 4000 bytes. */
    CHECK(stats.hub_transient_bytes >= (EVENTS - stats.history_events) * 3 * sizeof data);
    for (int i = 0; i < 100 && stats.history_events < EVENTS; i++) {
        CHECK_RC(sseloop_poll(loop, 0), SSELOOP_OK);
        CHECK_RC(sseloop_stats(loop, &stats, sizeof stats), SSELOOP_OK);
    }
    CHECK(stats.history_events == EVENTS);
    CHECK(stats.hub_transient_bytes == 0);
    CHECK(stats.history_bytes >= EVENTS * 3 * sizeof data);
    sseloop_free(loop);
}

int main(void) {
    check_codes();
    check_nulls();
    check_config_errors();
    check_last_error_buffer();
    check_publish_and_stop();
    check_transient_bytes();
    printf("errors: ok\n");
    return 0;
}
