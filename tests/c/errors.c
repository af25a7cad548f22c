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
    const char *v = sseloop_version();
    CHECK(v != NULL && strchr(v, '.') != NULL);
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
    CHECK_RC(sseloop_stats(NULL, &stats), SSELOOP_EINVAL);
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
    CHECK_LAST_ERROR("heartbeat_ms must be at least 1");
    CHECK_RC(sseloop_config_set_idle_timeout_ms(config, 0), SSELOOP_EINVAL);

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
    CHECK(full == (int)strlen("heartbeat_ms must be at least 1"));
    char small[5];
    memset(small, 'x', sizeof small);
    CHECK(sseloop_last_error(small, sizeof small) == full);
    CHECK(strcmp(small, "hear") == 0);
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
    CHECK_RC(sseloop_stats(loop, &stats), SSELOOP_OK);
    CHECK_RC(sseloop_stats(loop, NULL), SSELOOP_EINVAL);
    CHECK_LAST_ERROR("out must not be NULL");
    CHECK(stats.history_events == 4); /* two topics for the first event */
    sseloop_free(loop);
}

int main(void) {
    check_codes();
    check_nulls();
    check_config_errors();
    check_last_error_buffer();
    check_publish_and_stop();
    printf("errors: ok\n");
    return 0;
}
