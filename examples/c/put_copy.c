/* PUT via copy: the bytes travel inline. A request with metadata (content type, a
 * custom pair, expiry), GETs in copy mode (whole and a range), a range in fd mode,
 * conditional writes (IF_VERSION, IF_ABSENT), and the convenience calls objm_put(),
 * objm_get_copy() (caller's buffer, too small a buffer, library-allocated) and
 * objm_head().
 *
 * Run: put_copy SOCKET */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define KEY "/copy/object"

int main(int argc, char **argv) {
    const char *path = socket_path(argc, argv);
    int fds_before = count_fds();

    objm_connection_t *conn = objm_client_open(path, OBJM_PROTO_V1);
    CHECK(conn != NULL);

    const char *data = "0123456789abcdefghij";
    objm_meta_pair_t pairs[] = {{.name = "origin", .value = "c-example", .value_len = 9}};
    objm_request_t put = {
        .id = 7,
        .op = OBJM_OP_PUT,
        .mode = OBJM_MODE_COPY,
        .uri = KEY,
        .uri_len = strlen(KEY),
        .data = data,
        .data_len = strlen(data),
        .content_type = "application/octet-stream",
        .expires_at = (uint64_t)time(NULL) + 3600,
        .custom = pairs,
        .custom_count = 1,
    };
    CHECK(objm_client_send_request(conn, &put) == 0);
    objm_response_t *resp;
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->id == 7);
    CHECK(resp->op == OBJM_OP_PUT);
    CHECK(resp->status == OBJM_STATUS_OK);
    CHECK(resp->fd == -1);
    uint64_t version = resp->meta.version;
    CHECK(version > 0);
    objm_response_free(resp);

    // GET in copy mode: the bytes and the metadata in the response.
    objm_request_t get = {.mode = OBJM_MODE_COPY, .uri = KEY, .uri_len = strlen(KEY)};
    CHECK(objm_client_send_request(conn, &get) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    CHECK(resp->mode == OBJM_MODE_COPY);
    CHECK(resp->fd == -1);
    CHECK(resp->data_len == strlen(data));
    CHECK(memcmp(resp->data, data, resp->data_len) == 0);
    CHECK(strcmp(resp->meta.content_type, "application/octet-stream") == 0);
    CHECK(resp->meta.expires_at == put.expires_at);
    CHECK(resp->meta.version == version);
    CHECK(resp->custom_count == 1);
    CHECK(strcmp(resp->custom[0].name, "origin") == 0);
    CHECK(resp->custom[0].value_len == 9);
    CHECK(memcmp(resp->custom[0].value, "c-example", 9) == 0);
    CHECK(strcmp(resp->message, "") == 0);
    objm_response_free(resp);

    // A range, inline: 5 bytes from offset 10.
    get.offset = 10;
    get.length = 5;
    CHECK(objm_client_send_request(conn, &get) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    CHECK(resp->data_len == 5);
    CHECK(memcmp(resp->data, "abcde", 5) == 0);
    CHECK(resp->meta.size == strlen(data));
    objm_response_free(resp);

    // The same range in fd mode: the fd holds the object, offset/length say where.
    get.mode = OBJM_MODE_FDPASS;
    CHECK(objm_client_send_request(conn, &get) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    CHECK(resp->fd >= 0);
    CHECK(resp->length == 5);
    char five[5];
    CHECK(pread(resp->fd, five, 5, (off_t)resp->offset) == 5);
    CHECK(memcmp(five, "abcde", 5) == 0);
    objm_response_free(resp);  // closes the fd

    // A range past the end.
    get.offset = 100;
    CHECK(objm_client_send_request(conn, &get) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_RANGE_NOT_SATISFIABLE);
    CHECK(resp->fd == -1);
    objm_response_free(resp);

    // Conditional write: the wrong version is refused, the right one wins.
    put.flags = OBJM_FLAG_IF_VERSION;
    put.if_version = version + 1000;
    put.data = "new";
    put.data_len = 3;
    CHECK(objm_client_send_request(conn, &put) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_PRECONDITION_FAILED);
    CHECK(strlen(resp->message) > 0);
    objm_response_free(resp);
    put.if_version = version;
    CHECK(objm_client_send_request(conn, &put) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    CHECK(resp->meta.version > version);
    objm_response_free(resp);

    // Convenience: objm_put, IF_ABSENT on an existing key.
    const char *text = "stored with objm_put";
    CHECK(objm_put(conn, "/conv", 5, text, strlen(text), 0) == 0);
    CHECK(objm_put(conn, "/conv", 5, "x", 1, OBJM_FLAG_IF_ABSENT) == -1);
    CHECK(objm_last_status() == OBJM_STATUS_PRECONDITION_FAILED);
    CHECK(strstr(objm_last_error(), "PRECONDITION_FAILED") != NULL);

    // objm_get_copy into the caller's buffer.
    char buf[64];
    void *p = buf;
    size_t len = sizeof buf;
    CHECK(objm_get_copy(conn, "/conv", 5, &p, &len) == 0);
    CHECK(p == buf);
    CHECK(len == strlen(text));
    CHECK(memcmp(buf, text, len) == 0);

    // Too small a buffer: -1, and len says what is needed.
    char small[4];
    p = small;
    len = sizeof small;
    CHECK(objm_get_copy(conn, "/conv", 5, &p, &len) == -1);
    CHECK(len == strlen(text));
    CHECK(p == small);

    // A library-allocated buffer.
    p = NULL;
    len = 0;
    CHECK(objm_get_copy(conn, "/conv", 5, &p, &len) == 0);
    CHECK(p != NULL);
    CHECK(len == strlen(text));
    CHECK(memcmp(p, text, len) == 0);
    objm_buffer_free(p);

    // An empty object.
    CHECK(objm_put(conn, "/empty", 6, NULL, 0, 0) == 0);
    p = NULL;
    len = 99;
    CHECK(objm_get_copy(conn, "/empty", 6, &p, &len) == 0);
    CHECK(len == 0);
    objm_buffer_free(p);

    objm_meta_t meta;
    CHECK(objm_head(conn, "/conv", 5, &meta) == 0);
    CHECK(meta.size == strlen(text));
    CHECK(meta.version > 0);
    CHECK(meta.tier != OBJM_TIER_UNKNOWN);

    // Splice mode: inline both ways, the server moving bytes inside its kernel.
    objm_request_t sput = {.op = OBJM_OP_PUT, .mode = OBJM_MODE_SPLICE, .uri = "/splice",
                           .uri_len = 7, .data = data, .data_len = strlen(data)};
    CHECK(objm_client_send_request(conn, &sput) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    objm_response_free(resp);
    objm_request_t sget = {.mode = OBJM_MODE_SPLICE, .uri = "/splice", .uri_len = 7};
    CHECK(objm_client_send_request(conn, &sget) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    CHECK(resp->data_len == strlen(data) && memcmp(resp->data, data, resp->data_len) == 0);
    objm_response_free(resp);

    // Auto mode: the server picks; the response says which, and the bytes match.
    sget.mode = OBJM_MODE_AUTO;
    CHECK(objm_client_send_request(conn, &sget) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    if (resp->mode == OBJM_MODE_FDPASS) {
        char b[64];
        CHECK(pread(resp->fd, b, sizeof b, (off_t)resp->offset) == (ssize_t)strlen(data));
        CHECK(memcmp(b, data, strlen(data)) == 0);
    } else {
        CHECK(resp->mode == OBJM_MODE_COPY);
        CHECK(memcmp(resp->data, data, strlen(data)) == 0);
    }
    objm_response_free(resp);

    // PIN and UNPIN: OK for an object, NOT_FOUND for a missing key.
    objm_request_t pin = {.op = OBJM_OP_PIN, .uri = "/conv", .uri_len = 5};
    CHECK(objm_client_send_request(conn, &pin) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    objm_response_free(resp);
    CHECK(objm_head(conn, "/conv", 5, &meta) == 0);
    CHECK(meta.state & OBJM_STATE_PINNED);
    pin.op = OBJM_OP_UNPIN;
    CHECK(objm_client_send_request(conn, &pin) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    objm_response_free(resp);
    CHECK(objm_head(conn, "/conv", 5, &meta) == 0);
    CHECK(!(meta.state & OBJM_STATE_PINNED));
    pin.uri = "/nope";
    CHECK(objm_client_send_request(conn, &pin) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_NOT_FOUND);
    objm_response_free(resp);

    // A PING request.
    objm_request_t ping = {.id = 11, .op = OBJM_OP_PING};
    CHECK(objm_client_send_request(conn, &ping) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK && resp->id == 11 && resp->op == OBJM_OP_PING);
    objm_response_free(resp);

    CHECK(objm_ping(conn) == 0);
    objm_client_destroy(conn);
    CHECK(count_fds() == fds_before);
    printf("put_copy: ok\n");
    return 0;
}
