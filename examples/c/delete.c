/* DELETE: through the convenience call and through requests, a missing key
 * (NOT_FOUND), a conditional delete (IF_VERSION), and a durable one.
 *
 * Run: delete SOCKET */
#include <string.h>

#include "check.h"

int main(int argc, char **argv) {
    const char *path = socket_path(argc, argv);
    int fds_before = count_fds();

    objm_connection_t *conn = objm_client_open(path, OBJM_PROTO_V1);
    CHECK(conn != NULL);

    CHECK(objm_put(conn, "/doomed", 7, "bye", 3, 0) == 0);
    CHECK(objm_delete(conn, "/doomed", 7, 0) == 0);
    objm_meta_t meta;
    CHECK(objm_head(conn, "/doomed", 7, &meta) == -1);
    CHECK(objm_last_status() == OBJM_STATUS_NOT_FOUND);

    // Deleting what is not there: -1 and NOT_FOUND.
    CHECK(objm_delete(conn, "/doomed", 7, 0) == -1);
    CHECK(objm_last_status() == OBJM_STATUS_NOT_FOUND);

    // The request API: a missing key answers NOT_FOUND in resp->status.
    objm_request_t del = {.id = 3, .op = OBJM_OP_DELETE, .uri = "/doomed", .uri_len = 7};
    objm_response_t *resp = call(conn, &del);
    CHECK(resp->status == OBJM_STATUS_NOT_FOUND);
    CHECK(strcmp(objm_status_name(resp->status), "NOT_FOUND") == 0);
    objm_response_free(resp);

    // Conditional delete: the wrong version keeps the object, the right one removes it.
    CHECK(objm_put(conn, "/cas", 4, "v", 1, 0) == 0);
    CHECK(objm_head(conn, "/cas", 4, &meta) == 0);
    del.uri = "/cas";
    del.uri_len = 4;
    del.flags = OBJM_FLAG_IF_VERSION | OBJM_FLAG_DURABLE;
    del.if_version = meta.version + 1;
    CHECK(objm_client_send_request(conn, &del) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_PRECONDITION_FAILED);
    objm_response_free(resp);
    CHECK(objm_head(conn, "/cas", 4, &meta) == 0);
    del.if_version = meta.version;
    CHECK(objm_client_send_request(conn, &del) == 0);
    CHECK(objm_client_recv_response(conn, &resp) == 0);
    CHECK(resp->status == OBJM_STATUS_OK);
    objm_response_free(resp);
    CHECK(objm_head(conn, "/cas", 4, &meta) == -1);

    // Durable delete through the convenience call.
    CHECK(objm_put(conn, "/durable", 8, "d", 1, OBJM_FLAG_DURABLE) == 0);
    CHECK(objm_delete(conn, "/durable", 8, OBJM_FLAG_DURABLE) == 0);
    // objm_delete has no version argument: IF_VERSION is refused locally.
    CHECK(objm_delete(conn, "/durable", 8, OBJM_FLAG_IF_VERSION) == -1);
    CHECK(objm_last_status() == OBJM_STATUS_LOCAL);

    objm_client_destroy(conn);
    CHECK(count_fds() == fds_before);
    printf("delete: ok\n");
    return 0;
}
