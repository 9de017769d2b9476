/* Error handling: a missing key (in a response, and from the convenience calls), and
 * every kind of bad argument: NULL pointers, impossible lengths, unknown ops, modes and
 * flags, misuse of the connection. None may crash; each returns -1 (or NULL) with a
 * reason in objm_last_error(), and the connection stays usable.
 *
 * Run: errors SOCKET */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define FAILS_WITH(call, text)                                   \
    do {                                                         \
        CHECK((call) == -1);                                     \
        CHECK(strstr(objm_last_error(), (text)) != NULL);        \
    } while (0)

int main(int argc, char **argv) {
    const char *path = socket_path(argc, argv);
    int fds_before = count_fds();

    CHECK(strcmp(objm_last_error(), "no error") == 0);

    // Connecting.
    FAILS_WITH(objm_client_connect(NULL), "path is NULL");
    FAILS_WITH(objm_client_connect("/nonexistent/objmapper.sock"), "cannot connect");
    CHECK(objm_client_create(-1, OBJM_PROTO_V1) == NULL);
    int s = objm_client_connect(path);
    CHECK(s >= 0);
    CHECK(objm_client_create(s, 3) == NULL);  // bad version: the fd was taken and closed
    CHECK(strstr(objm_last_error(), "unknown protocol version 3") != NULL);
    CHECK(fcntl(s, F_GETFD) == -1);
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    CHECK(objm_client_create(pipefd[0], OBJM_PROTO_V1) == NULL);  // not a socket
    CHECK(strstr(objm_last_error(), "not a socket") != NULL);
    close(pipefd[1]);

    objm_connection_t *conn = objm_client_open(path, OBJM_PROTO_V1);
    CHECK(conn != NULL);

    // A missing key, in a response: an answer, not a failure.
    objm_request_t get = {.id = 42, .mode = OBJM_MODE_FDPASS, .uri = "/missing", .uri_len = 8};
    CHECK(objm_client_send_request(conn, &get) == 0);
    objm_response_t *resp = NULL;
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->id == 42);
    CHECK(resp->status == OBJM_STATUS_NOT_FOUND);
    CHECK(resp->fd == -1);
    CHECK(resp->data == NULL);
    CHECK(strlen(resp->message) > 0);
    CHECK(strcmp(objm_status_name(resp->status), "NOT_FOUND") == 0);
    FAILS_WITH(objm_response_take_fd(resp), "no fd");
    objm_response_free(resp);

    // A missing key, from the convenience calls: -1 and NOT_FOUND.
    uint64_t size = 123;
    FAILS_WITH(objm_get_fd(conn, "/missing", 8, &size), "NOT_FOUND");
    CHECK(objm_last_status() == OBJM_STATUS_NOT_FOUND);
    CHECK(size == 123);
    void *buf = NULL;
    size_t len = 0;
    FAILS_WITH(objm_get_copy(conn, "/missing", 8, &buf, &len), "NOT_FOUND");
    CHECK(buf == NULL);
    objm_meta_t meta;
    FAILS_WITH(objm_head(conn, "/missing", 8, &meta), "NOT_FOUND");

    // NULL pointers.
    FAILS_WITH(objm_client_send_request(NULL, &get), "conn is NULL");
    FAILS_WITH(objm_client_send_request(conn, NULL), "req is NULL");
    FAILS_WITH(objm_client_recv_response(conn, NULL), "resp is NULL");
    FAILS_WITH(objm_client_recv_response(NULL, &resp), "conn is NULL");
    CHECK(resp == NULL);
    FAILS_WITH(objm_get_fd(NULL, "/k", 2, NULL), "conn is NULL");
    FAILS_WITH(objm_get_copy(conn, "/k", 2, NULL, &len), "must not be NULL");
    FAILS_WITH(objm_head(conn, "/k", 2, NULL), "meta is NULL");
    FAILS_WITH(objm_put_fd_begin(conn, "/k", 2, 0, 0, NULL), "handle is NULL");
    FAILS_WITH(objm_response_take_fd(NULL), "resp is NULL");
    FAILS_WITH(objm_client_close(NULL), "conn is NULL");
    FAILS_WITH(objm_client_hello(NULL, 4, 0, NULL), "conn is NULL");
    objm_response_free(NULL);
    objm_client_destroy(NULL);
    objm_buffer_free(NULL);

    // Bad lengths and values, refused before anything is read or sent.
    objm_request_t bad = {.uri = NULL, .uri_len = 5};
    FAILS_WITH(objm_client_send_request(conn, &bad), "uri is NULL");
    bad.uri = "/k";
    bad.uri_len = (size_t)1 << 40;
    FAILS_WITH(objm_client_send_request(conn, &bad), "exceeds OBJM_MAX_KEY_LEN");
    FAILS_WITH(objm_put(conn, "/k", 2, NULL, 10, 0), "data is NULL");
    bad.uri_len = 0;
    FAILS_WITH(objm_client_send_request(conn, &bad), "empty");
    bad.uri_len = 2;
    bad.op = 99;
    FAILS_WITH(objm_client_send_request(conn, &bad), "unknown op 99");
    bad.op = OBJM_OP_GET;
    bad.mode = 9;
    FAILS_WITH(objm_client_send_request(conn, &bad), "unknown mode 9");
    bad.mode = OBJM_MODE_DEFAULT;
    bad.flags = OBJM_FLAG_DURABLE;
    FAILS_WITH(objm_client_send_request(conn, &bad), "do not apply to GET");
    objm_request_t contra = {.op = OBJM_OP_PUT, .uri = "/k", .uri_len = 2,
                             .flags = OBJM_FLAG_DURABLE | OBJM_FLAG_EPHEMERAL};
    FAILS_WITH(objm_client_send_request(conn, &contra), "contradict");
    objm_request_t auto_put = {.op = OBJM_OP_PUT, .mode = OBJM_MODE_AUTO, .uri = "/k", .uri_len = 2};
    FAILS_WITH(objm_client_send_request(conn, &auto_put), "PUT takes");
    char long_type[300];
    memset(long_type, 'x', sizeof long_type);  // no NUL within 256 bytes
    objm_request_t ct = {.op = OBJM_OP_PUT, .uri = "/k", .uri_len = 2, .content_type = long_type};
    FAILS_WITH(objm_client_send_request(conn, &ct), "longer than 255");
    objm_request_t cust = {.op = OBJM_OP_PUT, .uri = "/k", .uri_len = 2, .custom_count = 3};
    FAILS_WITH(objm_client_send_request(conn, &cust), "custom is NULL");
    objm_request_t commit0 = {.op = OBJM_OP_COMMIT, .handle = 0};
    FAILS_WITH(objm_client_send_request(conn, &commit0), "handle 0");
    FAILS_WITH(objm_put(conn, "/k", 2, "x", 1, OBJM_FLAG_IF_VERSION), ".if_version");
    CHECK(objm_last_status() == OBJM_STATUS_LOCAL);
    CHECK(strcmp(objm_status_name(objm_last_status()), "LOCAL") == 0);
    CHECK(strcmp(objm_status_name(999), "UNKNOWN") == 0);
    CHECK(strcmp(objm_status_name(OBJM_STATUS_PRECONDITION_FAILED), "PRECONDITION_FAILED") == 0);

    // Misuse of the connection.
    FAILS_WITH(objm_client_recv_response(conn, &resp), "no request is outstanding");
    CHECK(objm_client_send_request(conn, &get) == 0);
    FAILS_WITH(objm_get_fd(conn, "/k", 2, NULL), "still await");
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    objm_response_free(resp);
    FAILS_WITH(objm_client_hello(conn, 4, 0, NULL), "first request");

    // After all that, the connection still works.
    CHECK(objm_ping(conn) == 0);
    CHECK(objm_put(conn, "/k", 2, "ok", 2, 0) == 0);
    int fd = objm_get_fd(conn, "/k", 2, &size);
    CHECK(fd >= 0 && size == 2);
    CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(write(fd, "no", 2) == -1);  // read-only
    close(fd);

    objm_client_destroy(conn);
    CHECK(count_fds() == fds_before);
    printf("errors: ok\n");
    return 0;
}
