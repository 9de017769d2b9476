/* PUT via fd: the seed's PUT (a request in fd mode, then write into the fd it returns),
 * with the explicit op and the COMMIT that publishes it; then the same through the
 * convenience calls objm_put_fd_begin() / objm_put_commit(), a commit with the wrong
 * length (LENGTH_MISMATCH, nothing published) and an abort.
 *
 * Run: put_fd SOCKET */
#include <string.h>
#include <unistd.h>

#include "check.h"

static void expect_object(objm_connection_t *conn, const char *key, const char *want) {
    uint64_t size = 0;
    int fd = objm_get_fd(conn, key, strlen(key), &size);
    CHECK(fd >= 0);
    CHECK(size == strlen(want));
    char buf[256];
    CHECK(pread(fd, buf, sizeof buf, 0) == (ssize_t)size);
    CHECK(memcmp(buf, want, size) == 0);
    CHECK(close(fd) == 0);
}

/* Begins an fd-mode PUT of `key`, writes `data` into its staging fd and closes the fd;
 * returns the handle for the commit or abort. */
static uint64_t stage(objm_connection_t *conn, const char *key, const char *data) {
    uint64_t handle = 0;
    int fd = objm_put_fd_begin(conn, key, strlen(key), 0, 0, &handle);
    CHECK(fd >= 0);
    CHECK(write(fd, data, strlen(data)) == (ssize_t)strlen(data));
    CHECK(close(fd) == 0);
    return handle;
}

int main(int argc, char **argv) {
    const char *path = socket_path(argc, argv);
    int fds_before = count_fds();

    objm_connection_t *conn = objm_client_open(path, OBJM_PROTO_V1);
    CHECK(conn != NULL);

    // PUT: Upload object (fd mode: the response carries a writable fd and a handle)
    const char *data = "written through a staging fd\n";
    size_t size = strlen(data);
    objm_request_t req = {
        .id = 0,
        .flags = 0,
        .op = OBJM_OP_PUT,
        .mode = OBJM_MODE_FDPASS,
        .uri = "/my/object",
        .uri_len = strlen("/my/object"),
        .length = size,  // size hint
    };
    CHECK(objm_client_send_request(conn, &req) == 0);
    objm_response_t *resp;
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    CHECK(resp->handle != 0);
    uint64_t handle = resp->handle;
    int fd = objm_response_take_fd(resp);
    CHECK(fd >= 0);
    objm_response_free(resp);
    CHECK(write(fd, data, size) == (ssize_t)size);
    close(fd);

    // COMMIT publishes exactly the bytes written.
    objm_request_t commit = {
        .op = OBJM_OP_COMMIT,
        .handle = handle,
        .length = size,
        .content_type = "text/plain",
    };
    CHECK(objm_client_send_request(conn, &commit) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    CHECK(resp->meta.size == size);
    CHECK(resp->meta.version > 0);
    objm_response_free(resp);
    expect_object(conn, "/my/object", data);

    objm_meta_t meta;
    CHECK(objm_head(conn, "/my/object", strlen("/my/object"), &meta) == 0);
    CHECK(strcmp(meta.content_type, "text/plain") == 0);

    // The convenience calls.
    const char *second = "second version, via objm_put_fd_begin\n";
    uint64_t h2 = 0;
    int wfd = objm_put_fd_begin(conn, "/my/object", strlen("/my/object"), 0,
                                OBJM_FLAG_DURABLE, &h2);
    CHECK(wfd >= 0);
    CHECK(h2 != 0);
    CHECK(write(wfd, second, strlen(second)) == (ssize_t)strlen(second));
    CHECK(objm_put_commit(conn, h2, strlen(second), 0) == 0);
    expect_object(conn, "/my/object", second);
    // The staging fd, still open, cannot change the published object.
    (void)!pwrite(wfd, "XXXX", 4, 0);
    (void)!write(wfd, "more", 4);
    CHECK(close(wfd) == 0);
    expect_object(conn, "/my/object", second);

    // A commit with the wrong length: LENGTH_MISMATCH, and nothing is published.
    uint64_t h3 = stage(conn, "/my/object", "abc");
    CHECK(objm_put_commit(conn, h3, 4, 0) == -1);
    CHECK(objm_last_status() == OBJM_STATUS_LENGTH_MISMATCH);
    expect_object(conn, "/my/object", second);

    // An abort: nothing is published, and the handle is gone.
    uint64_t h4 = stage(conn, "/other", "never");
    CHECK(objm_put_abort(conn, h4) == 0);
    CHECK(objm_head(conn, "/other", strlen("/other"), &meta) == -1);
    CHECK(objm_last_status() == OBJM_STATUS_NOT_FOUND);
    CHECK(objm_put_commit(conn, h4, 5, 0) == -1);
    CHECK(objm_last_status() == OBJM_STATUS_UNKNOWN_HANDLE);

    // An ABORT request, through the request API.
    req.length = 0;
    CHECK(objm_client_send_request(conn, &req) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    objm_request_t abort_req = {.op = OBJM_OP_ABORT, .handle = resp->handle};
    objm_response_free(resp);  // closes the staging fd
    CHECK(objm_client_send_request(conn, &abort_req) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    objm_response_free(resp);
    expect_object(conn, "/my/object", second);

    objm_client_destroy(conn);
    CHECK(count_fds() == fds_before);
    printf("put_fd: ok\n");
    return 0;
}
