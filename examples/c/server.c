/* The article's C server, on shmkit: instead of a 20-byte System V segment polled
 * with sleeps, a request/reply service that answers "ping" with "pong" the moment
 * a request arrives, until a client says "end".
 *
 *   ./server            (then ./client in another terminal)
 */
#include <stdio.h>
#include <string.h>

#include <shmkit.h>

#define SERVICE "posix:/shmkit.example.c-pingpong"

static ptrdiff_t answer(void *ctx, const void *request, size_t len, void *reply, size_t cap) {
    long *rounds = ctx;
    if (len == 3 && memcmp(request, "end", 3) == 0) return -1; /* stop serving */
    if (len != 4 || memcmp(request, "ping", 4) != 0 || cap < 4) return 0;
    memcpy(reply, "pong", 4);
    (*rounds)++;
    return 4;
}

int main(void) {
    shmkit_server *server;
    if (shmkit_server_create(SERVICE, 4, 0, 0600, &server) != SHMKIT_OK) {
        fprintf(stderr, "server: %s\n", shmkit_last_error());
        return 1;
    }
    printf("serving ping -> pong at %s\n", SERVICE);
    fflush(stdout);
    long rounds = 0;
    int rc = shmkit_server_serve(server, answer, &rounds, -1, NULL);
    shmkit_server_close(server);
    if (rc != SHMKIT_ECANCELED) {
        fprintf(stderr, "server: %s\n", shmkit_last_error());
        return 1;
    }
    printf("answered %ld pings; the client said end\n", rounds);
    return 0;
}
