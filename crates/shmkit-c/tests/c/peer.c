/* The C side of the C ABI tests (crates/shmkit-c/tests/c.rs): one program, a mode
 * per scenario. Exits 0 on success; on failure prints what went wrong and exits 1. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <unistd.h>

#include "shmkit.h"

#define FOREVER (-1)
#define SECONDS(s) ((int64_t)(s) * 1000000000LL)

static int failures = 0;

#define CHECK(expr, want)                                                            \
    do {                                                                             \
        int got_ = (expr);                                                           \
        if (got_ != (want)) {                                                        \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d: %s\n",         \
                    __FILE__, __LINE__, #expr, got_, shmkit_strerror(got_), (want),  \
                    shmkit_last_error());                                            \
            failures++;                                                              \
        }                                                                            \
    } while (0)

#define OK(expr) CHECK(expr, SHMKIT_OK)

/* OK, and give up at once if it failed (what follows would use what it made). */
#define MUST(expr)                      \
    do {                                \
        int before_ = failures;         \
        OK(expr);                       \
        if (failures != before_) return 1; \
    } while (0)

/* FNV-1a over a message's body: the last 8 bytes of every test message. */
static uint64_t fnv(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Message i: 8 bytes of i, (i % 200) bytes of pattern, then the checksum. */
static size_t make(unsigned char *buf, uint64_t i) {
    size_t n = 8 + (size_t)(i % 200);
    memcpy(buf, &i, 8);
    for (size_t k = 8; k < n; k++) buf[k] = (unsigned char)(i * 31 + k);
    uint64_t h = fnv(buf, n);
    memcpy(buf + n, &h, 8);
    return n + 8;
}

static int check(const unsigned char *buf, size_t len, uint64_t i) {
    uint64_t seq, h;
    if (len < 16) return 0;
    memcpy(&seq, buf, 8);
    memcpy(&h, buf + len - 8, 8);
    return seq == i && h == fnv(buf, len - 8) && len == 8 + (i % 200) + 8;
}

/* echo IN OUT N: receives N checked messages on IN (opened), sends each back on OUT
 * (created); even ones go through recv_ref and a loan (zero-copy both ways). */
static int echo(const char *in, const char *out, long n) {
    shmkit_receiver *rx = NULL;
    shmkit_sender *tx = NULL;
    MUST(shmkit_sender_create(out, 1 << 16, 0, 0600, &tx));
    MUST(shmkit_receiver_open(in, SECONDS(10), &rx));
    unsigned char buf[512];
    for (long i = 0; i < n && !failures; i++) {
        if (i % 2 == 0) {
            const void *data;
            size_t len;
            void *room;
            OK(shmkit_receiver_recv_ref(rx, &data, &len, SECONDS(30)));
            if (!check(data, len, (uint64_t)i)) {
                fprintf(stderr, "message %ld is wrong\n", i);
                return 1;
            }
            MUST(shmkit_sender_loan(tx, len, SECONDS(30), &room));
            memcpy(room, data, len);
            OK(shmkit_sender_commit(tx, len));
            OK(shmkit_receiver_release(rx));
        } else {
            size_t len;
            OK(shmkit_receiver_recv(rx, buf, sizeof buf, &len, SECONDS(30)));
            if (!check(buf, len, (uint64_t)i)) {
                fprintf(stderr, "message %ld is wrong\n", i);
                return 1;
            }
            OK(shmkit_sender_send(tx, buf, len, SECONDS(30)));
        }
    }
    shmkit_receiver_close(rx);
    shmkit_sender_close(tx);
    return failures != 0;
}

/* origin OUT IN N: sends N checked messages on OUT (created), checks the echoes on IN
 * (opened), keeping at most 64 in flight. */
static int origin(const char *out, const char *in, long n) {
    shmkit_sender *tx = NULL;
    shmkit_receiver *rx = NULL;
    MUST(shmkit_sender_create(out, 1 << 16, 0, 0600, &tx));
    printf("ready\n");
    fflush(stdout);
    MUST(shmkit_receiver_open(in, SECONDS(10), &rx));
    unsigned char buf[512];
    long back = 0;
    for (long i = 0; i < n && !failures; i++) {
        size_t len = make(buf, (uint64_t)i);
        OK(shmkit_sender_send(tx, buf, len, SECONDS(30)));
        while (i - back >= 64 && !failures) {
            OK(shmkit_receiver_recv(rx, buf, sizeof buf, &len, SECONDS(30)));
            if (!check(buf, len, (uint64_t)back)) {
                fprintf(stderr, "echo %ld is wrong\n", back);
                return 1;
            }
            back++;
        }
    }
    while (back < n && !failures) {
        size_t len;
        OK(shmkit_receiver_recv(rx, buf, sizeof buf, &len, SECONDS(30)));
        if (!check(buf, len, (uint64_t)back)) {
            fprintf(stderr, "echo %ld is wrong\n", back);
            return 1;
        }
        back++;
    }
    shmkit_sender_close(tx);
    shmkit_receiver_close(rx);
    return failures != 0;
}

/* recv-all TARGET: creates a receiver, writes every message to stdout until the
 * sender closes (SHMKIT_EPIPE). */
static int recv_all(const char *target) {
    shmkit_receiver *rx = NULL;
    MUST(shmkit_receiver_create(target, 1 << 16, 0, 0600, &rx));
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        const void *data;
        size_t len;
        int rc = shmkit_receiver_recv_ref(rx, &data, &len, SECONDS(30));
        if (rc == SHMKIT_EPIPE) break;
        OK(rc);
        if (rc) return 1;
        fwrite(data, 1, len, stdout);
        OK(shmkit_receiver_release(rx));
    }
    shmkit_receiver_close(rx);
    return failures != 0;
}

/* send-lines TARGET: opens a sender and sends each line of stdin (with its newline). */
static int send_lines(const char *target) {
    shmkit_sender *tx = NULL;
    MUST(shmkit_sender_open(target, SECONDS(10), &tx));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) OK(shmkit_sender_send(tx, line, (size_t)n, FOREVER));
    free(line);
    shmkit_sender_close(tx);
    return failures != 0;
}

/* hold TARGET: creates a sender, sends "last words", says ready, waits to be killed. */
static int hold(const char *target) {
    shmkit_sender *tx = NULL;
    MUST(shmkit_sender_create(target, 4096, 0, 0600, &tx));
    OK(shmkit_sender_send(tx, "last words", 10, 0));
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
    return 0;
}

/* outlive TARGET PID: opens the receiver of a channel whose sender (PID) is being
 * killed: gets its committed message, then SHMKIT_EOWNERDEAD with the pid. */
static int outlive(const char *target, long pid) {
    shmkit_receiver *rx = NULL;
    MUST(shmkit_receiver_open(target, SECONDS(10), &rx));
    printf("ready\n");
    fflush(stdout);
    char buf[64];
    size_t len = 0;
    OK(shmkit_receiver_recv(rx, buf, sizeof buf, &len, SECONDS(10)));
    if (len != 10 || memcmp(buf, "last words", 10) != 0) failures++;
    CHECK(shmkit_receiver_recv(rx, buf, sizeof buf, &len, SECONDS(10)), SHMKIT_EOWNERDEAD);
    if (shmkit_last_count() != (uint64_t)pid) {
        fprintf(stderr, "dead pid %llu, expected %ld\n", (unsigned long long)shmkit_last_count(), pid);
        failures++;
    }
    shmkit_receiver_close(rx);
    return failures != 0;
}

static ptrdiff_t double_it(void *ctx, const void *req, size_t len, void *reply, size_t cap) {
    long *served = ctx;
    char text[32];
    if (len >= sizeof text) return -1;
    memcpy(text, req, len);
    text[len] = 0;
    if (strcmp(text, "stop") == 0) return -1;
    int n = snprintf(reply, cap, "%ld", 2 * strtol(text, NULL, 10));
    (*served)++;
    return n;
}

/* serve TARGET: answers "N" with "2N" until a client sends "stop". */
static int serve(const char *target) {
    shmkit_server *s = NULL;
    MUST(shmkit_server_create(target, 4, 0, 0600, &s));
    printf("ready\n");
    fflush(stdout);
    long served = 0;
    uint64_t answered = 0;
    CHECK(shmkit_server_serve(s, double_it, &served, FOREVER, &answered), SHMKIT_ECANCELED);
    if ((uint64_t)served != answered - 1 && (uint64_t)served != answered) failures++;
    printf("served %ld\n", served);
    shmkit_server_close(s);
    return failures != 0;
}

/* call TARGET N: N calls, each checked, then "stop". */
static int call(const char *target, long n) {
    shmkit_client *c = NULL;
    MUST(shmkit_client_connect(target, SECONDS(10), &c));
    char req[32], rep[32];
    for (long i = 0; i < n && !failures; i++) {
        size_t len = 0;
        int rl = snprintf(req, sizeof req, "%ld", i);
        OK(shmkit_client_call(c, req, (size_t)rl, rep, sizeof rep - 1, &len, SECONDS(10)));
        rep[len] = 0;
        if (strtol(rep, NULL, 10) != 2 * i) {
            fprintf(stderr, "call %ld: reply %s\n", i, rep);
            failures++;
        }
    }
    size_t len;
    shmkit_client_call(c, "stop", 4, rep, sizeof rep, &len, SECONDS(1)); /* not answered */
    shmkit_client_close(c);
    return failures != 0;
}

/* api TARGET: every kind of end in one process, and each failure code. */
static int api(const char *base) {
    char name[256];
    unsigned char buf[256];
    size_t len;
    const void *data;
    void *room;

    /* SPSC: try, timeout, EMSGSIZE keeps the message, loans, abandon, EBUSY. */
    shmkit_sender *tx = NULL;
    shmkit_receiver *rx = NULL;
    snprintf(name, sizeof name, "%s.spsc", base);
    MUST(shmkit_sender_create(name, 4096, 0, 0600, &tx));
    CHECK(shmkit_sender_create(name, 4096, 0, 0600, &tx), SHMKIT_EEXIST);
    MUST(shmkit_receiver_open(name, 0, &rx));
    if (shmkit_sender_max_message(tx) != 4096 / 2 - 16) failures++;
    CHECK(shmkit_receiver_recv(rx, buf, sizeof buf, &len, 0), SHMKIT_EAGAIN);
    CHECK(shmkit_receiver_recv(rx, buf, sizeof buf, &len, 1000000), SHMKIT_ETIMEDOUT);
    OK(shmkit_sender_send(tx, "0123456789", 10, 0));
    CHECK(shmkit_receiver_recv(rx, buf, 4, &len, 0), SHMKIT_EMSGSIZE);
    if (len != 10 || shmkit_last_count() != 10) failures++;
    OK(shmkit_receiver_recv(rx, buf, sizeof buf, &len, 0));
    if (len != 10 || memcmp(buf, "0123456789", 10)) failures++;
    MUST(shmkit_sender_loan(tx, 100, 0, &room));
    CHECK(shmkit_sender_send(tx, "x", 1, 0), SHMKIT_EBUSY);
    memcpy(room, "abc", 3);
    CHECK(shmkit_sender_commit(tx, 101), SHMKIT_EINVAL);
    OK(shmkit_sender_commit(tx, 3));
    MUST(shmkit_sender_loan(tx, 8, 0, &room));
    OK(shmkit_sender_abandon(tx));
    CHECK(shmkit_sender_commit(tx, 1), SHMKIT_EINVAL);
    OK(shmkit_receiver_recv_ref(rx, &data, &len, 0));
    if (len != 3 || memcmp(data, "abc", 3)) failures++;
    CHECK(shmkit_receiver_recv(rx, buf, sizeof buf, &len, 0), SHMKIT_EBUSY);
    OK(shmkit_receiver_release(rx));
    CHECK(shmkit_receiver_release(rx), SHMKIT_EINVAL);
    CHECK(shmkit_sender_send(tx, buf, 4096, 0), SHMKIT_EMSGSIZE);
    int fd = -1;
    OK(shmkit_receiver_fd(rx, &fd));
    if (fd < 0) failures++;
    OK(shmkit_receiver_set_wait(rx, SHMKIT_WAIT_BLOCK));
    CHECK(shmkit_receiver_set_wait(rx, 42), SHMKIT_EINVAL);
    shmkit_sender_close(tx);
    CHECK(shmkit_receiver_recv(rx, buf, sizeof buf, &len, 0), SHMKIT_EPIPE);
    shmkit_receiver_close(rx);

    /* Broadcast: two subscribers, a lag with its count. */
    shmkit_publisher *pub = NULL;
    shmkit_subscriber *s1 = NULL, *s2 = NULL;
    snprintf(name, sizeof name, "%s.bcast", base);
    MUST(shmkit_publisher_create(name, 4, 64, 4, SHMKIT_OVERWRITE, 0600, &pub));
    MUST(shmkit_subscriber_open(name, 0, &s1));
    MUST(shmkit_subscriber_open(name, 0, &s2));
    for (int i = 0; i < 10; i++) OK(shmkit_publisher_send(pub, &i, sizeof i, 0));
    if (shmkit_subscriber_lag(s1) != 10) failures++;
    CHECK(shmkit_subscriber_recv(s1, buf, sizeof buf, &len, 0), SHMKIT_ELAGGED);
    if (shmkit_last_count() != 6) failures++;
    OK(shmkit_subscriber_recv(s1, buf, sizeof buf, &len, 0));
    if (len != sizeof(int) || *(int *)buf != 6) failures++;
    CHECK(shmkit_subscriber_recv_ref(s2, &data, &len, 0), SHMKIT_ELAGGED);
    OK(shmkit_subscriber_recv_ref(s2, &data, &len, 0));
    OK(shmkit_subscriber_release(s2));
    shmkit_subscriber_close(s1);
    shmkit_subscriber_close(s2);
    shmkit_publisher_close(pub);
    CHECK(shmkit_publisher_create(name, 3, 64, 4, SHMKIT_OVERWRITE, 0600, &pub), SHMKIT_EINVAL);
    CHECK(shmkit_publisher_create(name, 4, 64, 4, 7, 0600, &pub), SHMKIT_EINVAL);

    /* MPSC: two senders, each in order. */
    shmkit_mpsc_receiver *mrx = NULL;
    shmkit_mpsc_sender *a = NULL, *b = NULL;
    snprintf(name, sizeof name, "%s.mpsc", base);
    MUST(shmkit_mpsc_receiver_create(name, 2, 4096, 0, 0600, &mrx));
    MUST(shmkit_mpsc_sender_open(name, 0, &a));
    MUST(shmkit_mpsc_sender_open(name, 0, &b));
    shmkit_mpsc_sender *c = NULL;
    CHECK(shmkit_mpsc_sender_open(name, 0, &c), SHMKIT_EBUSY);
    OK(shmkit_mpsc_sender_send(a, "a1", 2, 0));
    MUST(shmkit_mpsc_sender_loan(b, 2, 0, &room));
    memcpy(room, "b1", 2);
    OK(shmkit_mpsc_sender_commit(b, 2));
    OK(shmkit_mpsc_sender_send(a, "a2", 2, 0));
    int got_a = 0, got_b = 0;
    for (int i = 0; i < 3; i++) {
        OK(shmkit_mpsc_receiver_recv(mrx, buf, sizeof buf, &len, SECONDS(1)));
        if (buf[0] == 'a') {
            if (buf[1] != '1' + got_a++) failures++;
        } else {
            got_b++;
        }
    }
    if (got_a != 2 || got_b != 1) failures++;
    shmkit_mpsc_sender_close(a);
    shmkit_mpsc_sender_close(b);
    CHECK(shmkit_mpsc_receiver_recv(mrx, buf, sizeof buf, &len, 0), SHMKIT_EPIPE);
    shmkit_mpsc_receiver_close(mrx);

    /* rpc without blocking, as an event loop does: start, serve by polling, poll(2)
     * the client's fd, take the reply. */
    shmkit_server *srv = NULL;
    shmkit_client *cli = NULL;
    snprintf(name, sizeof name, "%s.rpc", base);
    MUST(shmkit_server_create(name, 2, 0, 0600, &srv));
    MUST(shmkit_client_connect(name, 0, &cli));
    int cfd = -1, sfd = -1;
    OK(shmkit_client_fd(cli, &cfd));
    OK(shmkit_server_fd(srv, &sfd));
    if (cfd < 0 || sfd < 0) failures++;
    CHECK(shmkit_client_try_reply(cli, buf, sizeof buf, &len), SHMKIT_EAGAIN);
    OK(shmkit_client_start_call(cli, "21", 2));
    CHECK(shmkit_client_try_reply(cli, buf, sizeof buf, &len), SHMKIT_EAGAIN); /* arms */
    long served = 0;
    size_t answered = 0;
    for (int tries = 0; answered == 0 && tries < 1000; tries++) {
        struct pollfd p = {sfd, POLLIN, 0};
        poll(&p, 1, 1000);
        OK(shmkit_server_poll(srv, double_it, &served, &answered));
    }
    struct pollfd cp = {cfd, POLLIN, 0};
    if (poll(&cp, 1, 5000) != 1) failures++; /* the reply rang the client's fd */
    OK(shmkit_client_try_reply(cli, buf, sizeof buf, &len));
    if (len != 2 || memcmp(buf, "42", 2)) failures++;
    shmkit_client_close(cli);
    shmkit_server_close(srv);

    /* Segments. */
    shmkit_segment *seg = NULL, *seg2 = NULL;
    snprintf(name, sizeof name, "%s.seg", base);
    MUST(shmkit_segment_create(name, 8192, 0600, &seg));
    if (shmkit_segment_size(seg) != 8192) failures++;
    strcpy(shmkit_segment_data(seg), "shared");
    MUST(shmkit_segment_open(name, 1, &seg2));
    if (strcmp(shmkit_segment_data(seg2), "shared")) failures++;
    shmkit_segment_close(seg2);
    shmkit_segment_close(seg);
    CHECK(shmkit_segment_open(name, 0, &seg), SHMKIT_ENOENT); /* the creator removed it */

    if (strcmp(shmkit_version(), "") == 0) failures++;
    return failures != 0;
}

/* gc: a dry-run scan of the machine's segments (other tests' among them) succeeds. */
static int gc(void) {
    size_t removed = 99;
    OK(shmkit_gc(1, 0, &removed));
    OK(shmkit_gc(1, 0, NULL));
    return failures != 0;
}

/* bad-args: NULL and invalid arguments give SHMKIT_EINVAL, never a crash. */
static int bad_args(void) {
    shmkit_sender *tx = NULL;
    shmkit_receiver *rx = NULL;
    size_t len;
    const void *data;
    void *room;
    char buf[8];
    int fd;
    CHECK(shmkit_sender_create(NULL, 4096, 0, 0600, &tx), SHMKIT_EINVAL);
    CHECK(shmkit_sender_create("nonsense", 4096, 0, 0600, &tx), SHMKIT_EINVAL);
    CHECK(shmkit_sender_create("posix:/shmkit.ctest.bad", 1000, 0, 0600, &tx), SHMKIT_EINVAL);
    CHECK(shmkit_sender_create("posix:/shmkit.ctest.bad", 4096, 0, 0600, NULL), SHMKIT_EINVAL);
    CHECK(shmkit_sender_open("posix:/shmkit.ctest.none", 0, &tx), SHMKIT_ENOENT);
    CHECK(shmkit_sender_send(NULL, "x", 1, 0), SHMKIT_EINVAL);
    CHECK(shmkit_sender_loan(NULL, 1, 0, &room), SHMKIT_EINVAL);
    CHECK(shmkit_sender_commit(NULL, 1), SHMKIT_EINVAL);
    CHECK(shmkit_sender_abandon(NULL), SHMKIT_EINVAL);
    CHECK(shmkit_sender_fd(NULL, &fd), SHMKIT_EINVAL);
    CHECK(shmkit_sender_set_wait(NULL, SHMKIT_WAIT_SPIN), SHMKIT_EINVAL);
    CHECK(shmkit_receiver_recv(NULL, buf, sizeof buf, &len, 0), SHMKIT_EINVAL);
    CHECK(shmkit_receiver_recv_ref(NULL, &data, &len, 0), SHMKIT_EINVAL);
    CHECK(shmkit_receiver_release(NULL), SHMKIT_EINVAL);
    CHECK(shmkit_receiver_fd(NULL, &fd), SHMKIT_EINVAL);
    CHECK(shmkit_publisher_send(NULL, "x", 1, 0), SHMKIT_EINVAL);
    CHECK(shmkit_subscriber_recv(NULL, buf, sizeof buf, &len, 0), SHMKIT_EINVAL);
    CHECK(shmkit_mpsc_sender_send(NULL, "x", 1, 0), SHMKIT_EINVAL);
    CHECK(shmkit_mpsc_receiver_recv(NULL, buf, sizeof buf, &len, 0), SHMKIT_EINVAL);
    CHECK(shmkit_client_call(NULL, "x", 1, buf, sizeof buf, &len, 0), SHMKIT_EINVAL);
    CHECK(shmkit_server_serve(NULL, double_it, NULL, 0, NULL), SHMKIT_EINVAL);
    CHECK(shmkit_segment_persist(NULL), SHMKIT_EINVAL);
    if (shmkit_segment_data(NULL) != NULL || shmkit_segment_size(NULL) != 0) failures++;

    MUST(shmkit_sender_create("posix:/shmkit.ctest.bad", 4096, 0, 0600, &tx));
    MUST(shmkit_receiver_open("posix:/shmkit.ctest.bad", 0, &rx));
    CHECK(shmkit_sender_send(tx, NULL, 5, 0), SHMKIT_EINVAL);
    OK(shmkit_sender_send(tx, NULL, 0, 0)); /* an empty message needs no pointer */
    CHECK(shmkit_receiver_recv(rx, NULL, 8, &len, 0), SHMKIT_EINVAL);
    CHECK(shmkit_receiver_recv(rx, buf, sizeof buf, NULL, 0), SHMKIT_EINVAL);
    CHECK(shmkit_receiver_recv_ref(rx, NULL, &len, 0), SHMKIT_EINVAL);
    CHECK(shmkit_sender_loan(tx, 8, 0, NULL), SHMKIT_EINVAL);
    CHECK(shmkit_receiver_fd(rx, NULL), SHMKIT_EINVAL);
    if (strlen(shmkit_last_error()) == 0) failures++;
    if (strcmp(shmkit_strerror(SHMKIT_EINVAL), shmkit_strerror(12345)) == 0) failures++;
    shmkit_receiver_close(rx);
    shmkit_sender_close(tx);
    shmkit_sender_close(NULL); /* closing NULL is fine */
    shmkit_receiver_close(NULL);
    return failures != 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *mode = argv[1];
    if (!strcmp(mode, "echo") && argc == 5) return echo(argv[2], argv[3], atol(argv[4]));
    if (!strcmp(mode, "origin") && argc == 5) return origin(argv[2], argv[3], atol(argv[4]));
    if (!strcmp(mode, "recv-all") && argc == 3) return recv_all(argv[2]);
    if (!strcmp(mode, "send-lines") && argc == 3) return send_lines(argv[2]);
    if (!strcmp(mode, "hold") && argc == 3) return hold(argv[2]);
    if (!strcmp(mode, "outlive") && argc == 4) return outlive(argv[2], atol(argv[3]));
    if (!strcmp(mode, "serve") && argc == 3) return serve(argv[2]);
    if (!strcmp(mode, "call") && argc == 4) return call(argv[2], atol(argv[3]));
    if (!strcmp(mode, "api") && argc == 3) return api(argv[2]);
    if (!strcmp(mode, "bad-args") && argc == 2) return bad_args();
    if (!strcmp(mode, "gc") && argc == 2) return gc();
    fprintf(stderr, "unknown mode or arguments: %s\n", mode);
    return 2;
}
