/* The seed's GET example, nearly verbatim: connect, create a V1 connection, send a
 * request in fd mode, receive the response, take its fd, free the response, read,
 * close. (The object is stored first with objm_put.) Then the same with
 * objm_response_take_fd(), which replaces the seed's "resp->fd = -1" idiom.
 *
 * Run: get_seed SOCKET */
#include <string.h>
#include <unistd.h>

#include "check.h"

static const char body[] = "hello from the seed's GET example\n";

int main(int argc, char **argv) {
    const char *path = socket_path(argc, argv);
    int fds_before = count_fds();

    // Connect to server
    int sock = objm_client_connect(path);
    CHECK(sock >= 0);
    objm_connection_t *conn = objm_client_create(sock, OBJM_PROTO_V1);
    CHECK(conn != NULL);

    CHECK(objm_put(conn, "/my/object", strlen("/my/object"), body, strlen(body), 0) == 0);

    // GET: Download object
    objm_request_t req = {
        .id = 0,
        .flags = 0,
        .mode = OBJM_MODE_FDPASS,
        .uri = "/my/object",
        .uri_len = strlen("/my/object")
    };
    CHECK(objm_client_send_request(conn, &req) == 0);

    objm_response_t *resp;
    CHECK(objm_client_recv_response(conn, &resp) == 0);

    CHECK(resp->status == OBJM_STATUS_OK);
    if (resp->status == OBJM_STATUS_OK) {
        int fd = resp->fd;
        uint64_t size = resp->length;
        resp->fd = -1;  // Prevent premature closure
        objm_response_free(resp);

        // Use fd...
        char buf[128];
        CHECK(size == strlen(body));
        CHECK(pread(fd, buf, sizeof buf, 0) == (ssize_t)size);
        CHECK(memcmp(buf, body, size) == 0);
        close(fd);
    }

    // The same, with objm_response_take_fd(): the fd is handed over, -1 is left behind.
    CHECK(objm_client_send_request(conn, &req) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    CHECK(resp->mode == OBJM_MODE_FDPASS);
    int fd = objm_response_take_fd(resp);
    CHECK(fd >= 0);
    CHECK(resp->fd == -1);
    CHECK(objm_response_take_fd(resp) == -1);  // nothing left to take
    char buf[128];
    CHECK(pread(fd, buf, sizeof buf, (off_t)resp->offset) == (ssize_t)resp->length);
    CHECK(memcmp(buf, body, resp->length) == 0);
    CHECK(resp->meta.size == strlen(body));
    CHECK(resp->meta.version > 0);
    objm_response_free(resp);  // does not close fd: it was taken
    CHECK(close(fd) == 0);

    // A response that still holds its fd: objm_response_free closes it.
    CHECK(objm_client_send_request(conn, &req) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->fd >= 0);
    objm_response_free(resp);

    objm_client_destroy(conn);  // closes sock
    CHECK(count_fds() == fds_before);
    printf("get_seed: ok\n");
    return 0;
}
