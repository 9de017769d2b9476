/* A V2 pipelined loop: many requests in flight on one connection, replies taken as
 * they come (out of order) and matched by id; objm_client_recv_response_for() to wait
 * for one id while others are kept; an explicit handshake with objm_client_hello().
 *
 * Run: v2_pipeline SOCKET */
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define N 48

static void key_of(int i, char *out, size_t cap) {
    snprintf(out, cap, "/pipe/%d", i);
}

int main(int argc, char **argv) {
    const char *path = socket_path(argc, argv);
    int fds_before = count_fds();

    objm_connection_t *conn = objm_client_open(path, OBJM_PROTO_V2);
    CHECK(conn != NULL);

    char keys[N][32];
    char bodies[N][64];
    for (int i = 0; i < N; i++) {
        key_of(i, keys[i], sizeof keys[i]);
        snprintf(bodies[i], sizeof bodies[i], "body of object %d", i);
    }

    // Pipelined PUTs: send them all, then take the replies.
    for (int i = 0; i < N; i++) {
        objm_request_t req = {
            .id = (uint32_t)(1000 + i),
            .op = OBJM_OP_PUT,
            .mode = OBJM_MODE_COPY,
            .uri = keys[i],
            .uri_len = strlen(keys[i]),
            .data = bodies[i],
            .data_len = strlen(bodies[i]),
        };
        CHECK(objm_client_send_request(conn, &req) == 0);
    }
    CHECK(objm_client_outstanding(conn) == N);
    bool seen[N] = {false};
    for (int i = 0; i < N; i++) {
        objm_response_t *resp;
        CHECK(objm_client_recv_response(conn, &resp) == 0);
        CHECK(resp->status == OBJM_STATUS_OK);
        CHECK(resp->id >= 1000 && resp->id < 1000 + N);
        CHECK(!seen[resp->id - 1000]);
        seen[resp->id - 1000] = true;
        objm_response_free(resp);
    }
    CHECK(objm_client_outstanding(conn) == 0);

    // Pipelined GETs, alternating fd and copy mode, replies matched by id.
    for (int i = 0; i < N; i++) {
        objm_request_t req = {
            .id = (uint32_t)i,
            .mode = (i % 2) ? OBJM_MODE_COPY : OBJM_MODE_FDPASS,
            .uri = keys[i],
            .uri_len = strlen(keys[i]),
        };
        CHECK(objm_client_send_request(conn, &req) == 0);
    }
    memset(seen, 0, sizeof seen);
    for (int n = 0; n < N; n++) {
        objm_response_t *resp;
        CHECK(objm_client_recv_response(conn, &resp) == 0);
        CHECK(resp->status == OBJM_STATUS_OK);
        uint32_t i = resp->id;
        CHECK(i < N && !seen[i]);
        seen[i] = true;
        char buf[64];
        size_t want = strlen(bodies[i]);
        CHECK(resp->length == want);
        if (i % 2) {
            CHECK(resp->mode == OBJM_MODE_COPY);
            CHECK(resp->data_len == want);
            CHECK(memcmp(resp->data, bodies[i], want) == 0);
        } else {
            CHECK(resp->mode == OBJM_MODE_FDPASS);
            int fd = objm_response_take_fd(resp);
            CHECK(pread(fd, buf, sizeof buf, (off_t)resp->offset) == (ssize_t)want);
            CHECK(memcmp(buf, bodies[i], want) == 0);
            CHECK(close(fd) == 0);
        }
        objm_response_free(resp);
    }

    // recv_response_for: wait for a given id; the others are kept for later.
    const uint32_t ids[3] = {500, 501, 502};
    for (int j = 0; j < 3; j++) {
        objm_request_t req = {
            .id = ids[j], .mode = OBJM_MODE_COPY, .uri = keys[j], .uri_len = strlen(keys[j])};
        CHECK(objm_client_send_request(conn, &req) == 0);
    }
    objm_request_t missing = {.id = 503, .uri = "/pipe/none", .uri_len = 10};
    CHECK(objm_client_send_request(conn, &missing) == 0);
    objm_response_t *resp;
    CHECK(objm_client_recv_response_for(conn, 502, &resp) == 0);
    CHECK(resp->id == 502);
    CHECK(memcmp(resp->data, bodies[2], strlen(bodies[2])) == 0);
    objm_response_free(resp);
    CHECK(objm_client_recv_response_for(conn, 503, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_NOT_FOUND);
    objm_response_free(resp);
    CHECK(objm_client_recv_response_for(conn, 777, &resp) == -1);  // never sent
    CHECK(resp == NULL);
    CHECK(objm_client_recv_response_for(conn, 500, &resp) == 0);
    CHECK(resp->id == 500);
    objm_response_free(resp);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->id == 501);
    objm_response_free(resp);

    // ORDERED: its reply comes after every earlier request's and before any later one's.
    for (int i = 0; i < 8; i++) {
        objm_request_t r = {.id = (uint32_t)(200 + i), .mode = OBJM_MODE_COPY,
                            .uri = keys[i], .uri_len = strlen(keys[i]),
                            .flags = (i == 4) ? OBJM_FLAG_ORDERED : 0};
        CHECK(objm_client_send_request(conn, &r) == 0);
    }
    int earlier = 0;
    bool ordered_seen = false;
    for (int n = 0; n < 8; n++) {
        CHECK(objm_client_recv_response(conn, &resp) == 0);
        CHECK(resp->status == OBJM_STATUS_OK);
        if (resp->id < 204) {
            CHECK(!ordered_seen);
            earlier++;
        } else if (resp->id == 204) {
            CHECK(earlier == 4);
            ordered_seen = true;
        } else {
            CHECK(ordered_seen);
        }
        objm_response_free(resp);
    }

    // Replies never received are discarded (and their fds closed) by destroy.
    objm_request_t req = {.id = 9, .mode = OBJM_MODE_FDPASS, .uri = keys[0], .uri_len = strlen(keys[0])};
    CHECK(objm_client_send_request(conn, &req) == 0);
    CHECK(objm_client_send_request(conn, &req) == 0);
    objm_client_destroy(conn);

    // An explicit handshake: a V1 connection upgraded before its first request.
    objm_connection_t *c2 = objm_client_open(path, OBJM_PROTO_V1);
    CHECK(c2 != NULL);
    objm_hello_t granted;
    CHECK(objm_client_hello(c2, 8, OBJM_CAP_OUT_OF_ORDER | OBJM_CAP_FD_PASSING, &granted) == 0);
    CHECK(granted.version == 2);
    CHECK(granted.depth >= 1 && granted.depth <= 8);
    CHECK(granted.capabilities & OBJM_CAP_FD_PASSING);
    CHECK(objm_client_hello(c2, 8, 0, NULL) == -1);  // only once, and first
    for (int i = 0; i < 16; i++) {
        objm_request_t r = {.id = (uint32_t)i, .op = OBJM_OP_HEAD, .uri = keys[i], .uri_len = strlen(keys[i])};
        CHECK(objm_client_send_request(c2, &r) == 0);
    }
    for (int i = 0; i < 16; i++) {
        CHECK(objm_client_recv_response(c2, &resp) == 0);
        CHECK(resp->status == OBJM_STATUS_OK);
        CHECK(resp->meta.size == strlen(bodies[resp->id]));
        objm_response_free(resp);
    }
    CHECK(objm_client_close(c2) == 0);
    CHECK(objm_ping(c2) == -1);  // closed: every call fails until destroy
    objm_client_destroy(c2);

    CHECK(count_fds() == fds_before);
    printf("v2_pipeline: ok\n");
    return 0;
}
