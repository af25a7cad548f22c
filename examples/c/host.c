/*
 * A C program that embeds sseloop in its own poll() loop (drive mode 3).
 *
 *   host [PORT [TICKS [INTERVAL_MS]]]      defaults: 8080, 0 (= forever), 1000
 *
 * - The main loop polls the loop's descriptor (sseloop_fd) beside its own: standard input (each
 *   line is published on topic "chat") and a self-pipe for SIGINT/SIGTERM. Its timeout comes
 *   from sseloop_timeout_ms, and it calls sseloop_poll(loop, 0) after every wake-up.
 * - A second thread publishes "tick N" on topic "ticks" every INTERVAL_MS (sseloop_publish is
 *   the one call, with sseloop_stop, allowed from any thread), and stops the loop after TICKS.
 *
 * Try it:  ./host 8080 &   curl -N 'http://127.0.0.1:8080/events?topic=ticks&topic=chat'
 * Build:   see docs/EMBEDDING.md (make -C examples/c, or pkg-config).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sseloop.h"

static sseloop_t *loop;
static long ticks = 0;
static long interval_ms = 1000;
static int signal_pipe[2] = {-1, -1};

/* Prints the failing call, its code and this thread's last-error message. */
static int report(const char *what, int rc) {
    char message[512];
    sseloop_last_error(message, sizeof message);
    fprintf(stderr, "host: %s: %s (%s)\n", what, sseloop_strerror(rc), message);
    return rc;
}

static void on_signal(int sig) {
    int saved = errno;
    char byte = (char)sig;
    if (write(signal_pipe[1], &byte, 1) < 0) { /* full pipe: a stop is pending anyway */
    }
    errno = saved;
}

static void *ticker(void *arg) {
    (void)arg;
    const char *topics[] = {"ticks"};
    for (long n = 1; ticks == 0 || n <= ticks; n++) {
        struct timespec pause = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
        nanosleep(&pause, NULL);
        char data[64], id[SSELOOP_ID_MAX];
        int len = snprintf(data, sizeof data, "tick %ld", n);
        int rc = sseloop_publish(loop, topics, 1, "tick", data, (size_t)len, id, sizeof id);
        if (rc == SSELOOP_ESTOPPED) return NULL; /* stopped by a signal meanwhile */
        if (rc != SSELOOP_OK) {
            report("publish", rc);
            break;
        }
    }
    sseloop_stop(loop); /* from this thread: fine, and idempotent */
    return NULL;
}

/* Publishes each complete line read from standard input on topic "chat". */
static int read_stdin(char *buf, size_t *len, size_t cap) {
    ssize_t n = read(STDIN_FILENO, buf + *len, cap - *len);
    if (n <= 0) return 0; /* EOF or error: stop watching stdin */
    *len += (size_t)n;
    char *start = buf, *nl;
    const char *topics[] = {"chat"};
    while ((nl = memchr(start, '\n', (size_t)(buf + *len - start))) != NULL) {
        int rc = sseloop_publish(loop, topics, 1, NULL, start, (size_t)(nl - start), NULL, 0);
        if (rc != SSELOOP_OK && rc != SSELOOP_ESTOPPED) report("publish line", rc);
        start = nl + 1;
    }
    *len = (size_t)(buf + *len - start);
    memmove(buf, start, *len);
    if (*len == cap) *len = 0; /* a line longer than the buffer: drop it */
    return 1;
}

int main(int argc, char **argv) {
    const char *port = argc > 1 ? argv[1] : "8080";
    if (argc > 2) ticks = atol(argv[2]);
    if (argc > 3) interval_ms = atol(argv[3]);
    if (interval_ms < 1) interval_ms = 1;

    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%s", port);
    sseloop_config_t *config = sseloop_config_new();
    if (!config) return report("config", SSELOOP_EINTERNAL), 1;
    int rc;
    if ((rc = sseloop_config_set_listen(config, listen)) != SSELOOP_OK ||
        (rc = sseloop_config_set_grace_ms(config, 1000)) != SSELOOP_OK)
        return report("config", rc), 1;
    rc = sseloop_new(config, &loop);
    sseloop_config_free(config); /* copied by sseloop_new */
    if (rc != SSELOOP_OK) return report("sseloop_new", rc), 1;
    printf("listening on 127.0.0.1:%d\n", sseloop_local_port(loop));
    fflush(stdout);

    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return perror("pipe2"), 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    pthread_t tick_thread;
    if (pthread_create(&tick_thread, NULL, ticker, NULL) != 0) return perror("pthread"), 1;

    struct pollfd fds[3] = {
        {.fd = sseloop_fd(loop), .events = POLLIN},
        {.fd = signal_pipe[0], .events = POLLIN},
        {.fd = STDIN_FILENO, .events = POLLIN},
    };
    char line[4096];
    size_t line_len = 0;
    int exit_code = 0;
    for (;;) {
        /* Recomputed every time: publishes, connections and timers move the next deadline. */
        int timeout = sseloop_timeout_ms(loop);
        if (poll(fds, 3, timeout) < 0 && errno != EINTR) {
            perror("poll");
            exit_code = 1;
            break;
        }
        if (fds[1].revents & POLLIN) {
            char sig;
            while (read(signal_pipe[0], &sig, 1) == 1) {
            }
            fprintf(stderr, "host: signal: stopping\n");
            sseloop_stop(loop);
        }
        if (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (!read_stdin(line, &line_len, sizeof line)) fds[2].fd = -1; /* poll skips < 0 */
        }
        /* Cheap when there is nothing to do; covers readiness and expired timers alike. */
        rc = sseloop_poll(loop, 0);
        if (rc == SSELOOP_EDONE) break;
        if (rc != SSELOOP_OK) {
            report("sseloop_poll", rc);
            exit_code = 1;
            break;
        }
    }

    sseloop_stop(loop); /* in case the loop ended on an error: lets the ticker finish */
    pthread_join(tick_thread, NULL);
    sseloop_stats_t stats;
    if (sseloop_stats(loop, &stats, sizeof stats) == SSELOOP_OK)
        printf("stopped: published=%llu deliveries=%llu accepted=%llu iterations=%llu\n",
               (unsigned long long)stats.published, (unsigned long long)stats.deliveries,
               (unsigned long long)stats.accepted, (unsigned long long)stats.loop_iterations);
    sseloop_free(loop);
    close(signal_pipe[0]);
    close(signal_pipe[1]);
    return exit_code;
}
