/* BAN: objm_ban() with the shapes the Varnish VMOD sends (a key prefix with a newline
 * written as \n, an exact key, a metadata regex), a bad expression (BAD_REQUEST with a
 * message that names the position), and the request API with OBJM_OP_BAN.
 *
 * Run: ban SOCKET */
#include <string.h>

#include "check.h"

#define S(x) x, (sizeof(x) - 1)

int main(int argc, char **argv) {
    const char *path = socket_path(argc, argv);
    int fds_before = count_fds();

    objm_connection_t *conn = objm_client_open(path, OBJM_PROTO_V1);
    CHECK(conn != NULL);

    /* A key with a newline in it, as the VMOD builds them (host, newline, method). */
    CHECK(objm_put(conn, S("varnish:example.com/a\nGET"), "one", 3, 0) == 0);
    CHECK(objm_put(conn, S("varnish:example.com/ab\nGET"), "two", 3, 0) == 0);
    CHECK(objm_ban(conn, S("key ^ \"varnish:example.com/a\\n\"")) == 0);
    objm_meta_t meta;
    CHECK(objm_head(conn, S("varnish:example.com/a\nGET"), &meta) == -1);
    CHECK(objm_last_status() == OBJM_STATUS_NOT_FOUND);
    CHECK(objm_head(conn, S("varnish:example.com/ab\nGET"), &meta) == 0);

    /* An exact key. */
    CHECK(objm_ban(conn, S("key == \"varnish:example.com/ab\\nGET\"")) == 0);
    CHECK(objm_head(conn, S("varnish:example.com/ab\nGET"), &meta) == -1);
    CHECK(objm_last_status() == OBJM_STATUS_NOT_FOUND);

    /* Committed after the ban: served. */
    CHECK(objm_put(conn, S("varnish:example.com/a\nGET"), "new", 3, 0) == 0);
    CHECK(objm_head(conn, S("varnish:example.com/a\nGET"), &meta) == 0);

    /* A bad expression: -1, BAD_REQUEST, and a message naming the position. */
    CHECK(objm_ban(conn, S("meta.url ~ \"(\"")) == -1);
    CHECK(objm_last_status() == OBJM_STATUS_BAD_REQUEST);
    CHECK(strstr(objm_last_error(), "at byte 11") != NULL);
    CHECK(strstr(objm_last_error(), "regex") != NULL);
    CHECK(objm_ban(conn, "", 0) == -1);
    CHECK(objm_last_status() == OBJM_STATUS_LOCAL);

    /* The request API: OBJM_OP_BAN, the stamp in meta.version. */
    objm_request_t ban = {.id = 5, .op = OBJM_OP_BAN, .uri = "meta.url ~ \"^/b/\"", .uri_len = 17};
    objm_response_t *resp = call(conn, &ban);
    CHECK(resp->status == OBJM_STATUS_OK);
    CHECK(resp->meta.version > 0);
    objm_response_free(resp);

    objm_client_destroy(conn);
    CHECK(count_fds() == fds_before);
    printf("ban: ok\n");
    return 0;
}
