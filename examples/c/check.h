/* Helpers shared by the C examples: the socket path, a CHECK macro that reports the
 * library's last error, and an fd count (every example checks that it ends with as many
 * open fds as it started with). */
#ifndef OBJM_EXAMPLE_CHECK_H
#define OBJM_EXAMPLE_CHECK_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "objmapper.h"

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s (last error: %s, status %s)\n", \
                    __FILE__, __LINE__, #cond, objm_last_error(),                    \
                    objm_status_name(objm_last_status()));                           \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

/* The server's socket: argv[1], else $OBJMAPPER_SOCKET. */
static const char *socket_path(int argc, char **argv) {
    if (argc > 1)
        return argv[1];
    const char *p = getenv("OBJMAPPER_SOCKET");
    if (p == NULL || *p == '\0') {
        fprintf(stderr, "usage: %s SOCKET (or set OBJMAPPER_SOCKET)\n", argv[0]);
        exit(2);
    }
    return p;
}

/* Sends `req` and receives its response, which must answer it (same id). */
static inline objm_response_t *call(objm_connection_t *conn, const objm_request_t *req) {
    CHECK(objm_client_send_request(conn, req) == 0);
    objm_response_t *resp;
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->id == req->id);
    return resp;
}

/* How many fds this process has open (entries of /proc/self/fd, less the one
 * opendir uses to read it). */
static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        perror("opendir /proc/self/fd");
        exit(1);
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n - 1;
}

#endif
