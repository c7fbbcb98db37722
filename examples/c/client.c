/* The article's C client, on shmkit: sends "ping" ROUNDS times (default 10000),
 * checks each "pong", says "end", and reports the round-trip time.
 *
 *   ./client [ROUNDS]
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <shmkit.h>

#define SERVICE "posix:/shmkit.example.c-pingpong"
#define SECOND 1000000000LL

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 10000;
    shmkit_client *client;
    if (shmkit_client_connect(SERVICE, 10 * SECOND, &client) != SHMKIT_OK) {
        fprintf(stderr, "client: %s\n", shmkit_last_error());
        return 1;
    }
    char reply[16];
    size_t len;
    double start = now();
    for (long i = 0; i < rounds; i++) {
        int rc = shmkit_client_call(client, "ping", 4, reply, sizeof reply, &len, 5 * SECOND);
        if (rc != SHMKIT_OK || len != 4 || memcmp(reply, "pong", 4) != 0) {
            fprintf(stderr, "client: round %ld: %s\n", i, rc ? shmkit_last_error() : "not pong");
            return 1;
        }
    }
    double took = now() - start;
    /* "end" stops the server; it sends no reply, so do not wait long for one. */
    shmkit_client_call(client, "end", 3, reply, sizeof reply, &len, SECOND / 10);
    shmkit_client_close(client);
    printf("%ld ping/pong round trips in %.1f ms (%.2f us each)\n", rounds, took * 1e3, took / rounds * 1e6);
    return 0;
}
