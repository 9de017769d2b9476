/*
 * idle-conns: open N connections to a Unix stream socket and hold them, idle, until
 * SIGTERM or SIGINT. Used by scripts/bench-compare (target T8).
 *
 *   cc -O2 -o /tmp/idle-conns scripts/idle-conns.c
 *   /tmp/idle-conns SOCKET N
 *
 * Prints "open N" on stdout once all N connects returned, and on exit
 * "closed K" where K is how many of them the server had hung up meanwhile.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t done;
static void on_signal(int sig) { (void)sig; done = 1; }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SOCKET N\n", argv[0]);
        return 2;
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(argv[1]) >= sizeof addr.sun_path) {
        fprintf(stderr, "socket path too long\n");
        return 2;
    }
    strcpy(addr.sun_path, argv[1]);
    long n = strtol(argv[2], NULL, 10);
    if (n <= 0) return 2;
    struct pollfd *fds = calloc((size_t)n, sizeof *fds);
    if (!fds) return 1;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (long i = 0; i < n; i++) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0) { fprintf(stderr, "socket #%ld: %s\n", i, strerror(errno)); return 1; }
        if (connect(s, (struct sockaddr *)&addr, sizeof addr) < 0) {
            fprintf(stderr, "connect #%ld: %s\n", i, strerror(errno));
            return 1;
        }
        fds[i].fd = s;
        fds[i].events = POLLIN;
    }
    printf("open %ld\n", n);
    fflush(stdout);
    while (!done) pause();
    long closed = 0;
    if (poll(fds, (nfds_t)n, 0) > 0)
        for (long i = 0; i < n; i++)
            if (fds[i].revents & (POLLHUP | POLLIN | POLLERR)) closed++;
    printf("closed %ld\n", closed);
    return 0;
}
