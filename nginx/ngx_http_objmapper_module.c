/*
 * ngx_http_objmapper_module: objmapper as nginx's object store.
 *
 * One C file over libobjmapper (crates/capi), built against Debian's nginx by
 * scripts/build-nginx. The parts:
 *
 *   - the lookup (a PRECONTENT phase handler): a GET or HEAD is looked up in
 *     objmapper under the key (a complex value). A hit is answered here: status and
 *     headers from the object's metadata, the body as a file buffer on the fd
 *     objmapper passed, so nginx's sendfile, range, HEAD and conditional handling work
 *     on it as on a static file. A miss goes on to the content handler (proxy_pass) or
 *     to a named location. A GET miss also starts an fd-mode PUT at once, so that
 *     the response can be written into objmapper as it passes. A Vary marker found
 *     under the key sends the lookup on to the request's variant;
 *   - the store (a header and a body filter): a cacheable response is written into
 *     the PUT's staging fd while nginx sends it; COMMIT (with status, headers and TTL
 *     as metadata) when the body ended whole, ABORT otherwise;
 *   - PURGE: deletes the key.
 *
 * Never blocking the worker: objmapper's sockets are in nginx's event loop. A
 * connection is opened with a non-blocking connect(2) and handed to libobjmapper;
 * each request is sent at once (it fits the idle connection's empty socket buffer),
 * and its reply is read with objm_client_try_recv_response() when epoll says the
 * socket is readable, a timer of objmapper_timeout on the read event. A new
 * connection opens a V2 session with objm_client_send_hello(), which does not wait:
 * the first request follows the HELLO at once, and libobjmapper reads the HELLO's
 * answer before that request's reply (a refusal, such as FORBIDDEN from objmapper's
 * allowlist, fails that request like any other error).
 *
 * Shared descriptions: the HELLO promises POSITIONAL_READS (docs/PROTOCOL.md, "Shared
 * descriptions"), so objmapper may answer a GET with its cached open file description
 * of the version, shared with other clients that promised the same, instead of
 * opening a private one per GET. The promise holds because a hit's fd is only ever
 * read positionally: it becomes a file buffer (b->file, file_pos..file_last, directio
 * off), which nginx sends with sendfile(2) at an explicit offset or reads with pread(2)
 * (ngx_read_file, aio threads), and the fd is closed by the request pool's cleanup;
 * no code here or in nginx reads it with read(2), moves it with lseek(2) or changes
 * its status flags. A server that does not grant the promise hands out private
 * descriptions, which the same code reads the same way. (The writable staging fd of a
 * PUT is the module's own memfd, never shared; it is written with write(2) and
 * sendfile(2).) When the timer
 * fires (objmapper stopped) or the connection fails (objmapper gone, refusing), the
 * request goes to the origin and objmapper is skipped for objmapper_down_time, so a
 * stalled daemon costs each worker one bounded wait and other requests nothing.
 * Writing the body into the staging fd happens in the worker: objmapper stages fd-mode
 * PUTs in a memfd, so that is a memory copy, never disk I/O.
 *
 * Metadata follows the Varnish VMOD's conventions (vmod/vmod_objmapper.c): "status",
 * "reason", "t_origin", "ttl", "grace", "keep", "url", "host", and one "h:<Name>" pair
 * per response header.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <sys/sendfile.h>
#include <sys/un.h>

#include "objmapper.h"


/* Idle objmapper connections kept per socket per worker. */
#define OM_IDLE_MAX 64
/* At most one error line per socket per this many seconds. */
#define OM_ERRLOG_INTERVAL 1

#define OM_M_STATUS "status"
#define OM_M_REASON "reason"
#define OM_M_HDR "h:"
#define OM_M_T_ORIGIN "t_origin"
#define OM_M_TTL "ttl"
#define OM_M_GRACE "grace"
#define OM_M_KEEP "keep"
#define OM_M_URL "url"
#define OM_M_HOST "host"
#define OM_M_VARY "vary"


typedef struct om_conn_s om_conn_t;
typedef struct om_op_s om_op_t;


typedef struct {
    ngx_str_t                   path;       /* NUL-terminated */
    om_conn_t                  *idle[OM_IDLE_MAX];
    ngx_uint_t                  nidle;
    ngx_msec_t                  down_until; /* 0: up */
    time_t                      errlog_next;
    ngx_uint_t                  suppressed;
    time_t                      warnlog_next;   /* refused PUTs and COMMITs */
    ngx_uint_t                  warn_suppressed;
    unsigned                    private_logged:1;   /* the promise was not granted */
} om_backend_t;


/* A libobjmapper connection and its socket's place in the event loop. */
struct om_conn_s {
    objm_connection_t          *c;
    ngx_connection_t           *nc;
    om_backend_t               *be;
    om_op_t                    *op;         /* waiting for a reply; NULL: none */
    ngx_msec_t                  timeout;    /* what the socket timeout is set to */
    unsigned                    reused:1;   /* came from the idle list */
    unsigned                    held:1;     /* a request keeps its staged PUT here */
    unsigned                    granted:1;  /* the HELLO's answer has been looked at */
};


typedef struct {
    ngx_array_t                 backends;   /* om_backend_t * */
} om_main_conf_t;


typedef struct {
    ngx_uint_t                  status;     /* 0: any */
    time_t                      valid;
} om_valid_t;


typedef struct {
    om_backend_t               *backend;
    ngx_http_complex_value_t   *key;
    ngx_flag_t                  cache;
    ngx_flag_t                  store;
    ngx_flag_t                  purge;
    ngx_str_t                   miss;
    ngx_msec_t                  timeout;
    ngx_msec_t                  commit_timeout;
    ngx_msec_t                  down_time;
    off_t                       max_size;
    ngx_array_t                *valid;      /* om_valid_t */
} om_loc_conf_t;


/* Metadata pairs for a COMMIT, in malloc'd memory (they outlive the request). */
typedef struct {
    objm_meta_pair_t           *p;
    size_t                      n;
    size_t                      cap;
    char                       *ctype;
    uint64_t                    expires_at;
} om_meta_t;


typedef enum {
    OM_LOOKUP = 0,
    OM_COMMIT,
    OM_ABORT,
    OM_DELETE,
} om_kind_e;


typedef enum {
    OM_NONE = 0,
    OM_WAIT,        /* a lookup or purge in flight */
    OM_HIT,
    OM_MISS,
    OM_DOWN,        /* objmapper failed or was skipped: straight to the origin */
    OM_PURGED,
    OM_PURGE_MISS,
    OM_PURGE_ERROR,
} om_state_e;


typedef struct om_ctx_s om_ctx_t;


struct om_op_s {
    om_kind_e                   kind;
    om_backend_t               *be;
    om_ctx_t                   *ctx;        /* NULL: nobody waits for it */
    om_conn_t                  *conn;
    char                       *key;
    size_t                      key_len;
    ngx_msec_t                  timeout;
    ngx_msec_t                  deadline;   /* ngx_current_msec + timeout at start */
    ngx_msec_t                  down_time;
    unsigned                    want_put:1;
    unsigned                    step_put:1; /* the lookup's PUT is on the wire */
    unsigned                    step_variant:1; /* a marker named the variant */
    char                       *vary;       /* the marker's list (NUL-terminated) */
    unsigned                    retried:1;
    unsigned                    staged:1;   /* conn holds a staged PUT */
    uint64_t                    handle;
    uint64_t                    length;
    om_meta_t                  *meta;

    /* results */
    unsigned                    broken:1;   /* the connection failed */
    int                         status;     /* the server's, or OBJM_STATUS_LOCAL */
    objm_response_t            *resp;
    int                         put_fd;
    uint64_t                    put_handle;
    char                        err[512];
    char                        put_err[512];
};


struct om_ctx_s {
    ngx_http_request_t         *r;
    om_loc_conf_t              *conf;       /* the lookup location's */
    om_state_e                  state;
    ngx_str_t                   key;
    om_op_t                    *op;
    objm_response_t            *hit;

    om_conn_t                  *put_conn;   /* a staged PUT */
    uint64_t                    put_handle;
    int                         put_fd;
    off_t                       written;
    off_t                       expect;
    om_meta_t                  *meta;
    ngx_str_t                   vary;       /* the marker's list, when varied */
    unsigned                    varied:1;   /* the PUT is under a variant's key */
    unsigned                    storing:1;
    unsigned                    blocked:1;
};


static ngx_int_t om_init(ngx_conf_t *cf);
static void *om_create_main_conf(ngx_conf_t *cf);
static void *om_create_loc_conf(ngx_conf_t *cf);
static char *om_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child);
static char *om_socket(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *om_valid_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *om_miss_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static void om_exit_process(ngx_cycle_t *cycle);
static void om_meta_free(om_meta_t *m);
static void om_op_result(om_ctx_t *ctx, om_op_t *op);
static ngx_int_t om_variant_key(om_op_t *op, objm_response_t *marker);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;

static ngx_str_t  om_default_key = ngx_string("$scheme$host$request_uri");


static ngx_command_t  om_commands[] = {

    { ngx_string("objmapper_socket"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      om_socket,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("objmapper_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(om_loc_conf_t, key),
      NULL },

    { ngx_string("objmapper_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(om_loc_conf_t, cache),
      NULL },

    { ngx_string("objmapper_store"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(om_loc_conf_t, store),
      NULL },

    { ngx_string("objmapper_purge"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(om_loc_conf_t, purge),
      NULL },

    { ngx_string("objmapper_miss"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      om_miss_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(om_loc_conf_t, miss),
      NULL },

    { ngx_string("objmapper_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(om_loc_conf_t, timeout),
      NULL },

    { ngx_string("objmapper_commit_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(om_loc_conf_t, commit_timeout),
      NULL },

    { ngx_string("objmapper_down_time"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(om_loc_conf_t, down_time),
      NULL },

    { ngx_string("objmapper_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_off_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(om_loc_conf_t, max_size),
      NULL },

    { ngx_string("objmapper_valid"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      om_valid_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(om_loc_conf_t, valid),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  om_module_ctx = {
    NULL,                                  /* preconfiguration */
    om_init,                               /* postconfiguration */
    om_create_main_conf,                   /* create main configuration */
    NULL,                                  /* init main configuration */
    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */
    om_create_loc_conf,                    /* create location configuration */
    om_merge_loc_conf                      /* merge location configuration */
};


ngx_module_t  ngx_http_objmapper_module = {
    NGX_MODULE_V1,
    &om_module_ctx,                        /* module context */
    om_commands,                           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    om_exit_process,                       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* ---------------------------------------------------------------------------------
 * Configuration
 */

static void *
om_create_main_conf(ngx_conf_t *cf)
{
    om_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(om_main_conf_t));
    if (mcf == NULL
        || ngx_array_init(&mcf->backends, cf->pool, 2, sizeof(om_backend_t *))
           != NGX_OK)
    {
        return NULL;
    }
    return mcf;
}


static void *
om_create_loc_conf(ngx_conf_t *cf)
{
    om_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(om_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }
    /* ngx_pcalloc: backend, key and miss are NULL/empty. */
    conf->cache = NGX_CONF_UNSET;
    conf->store = NGX_CONF_UNSET;
    conf->purge = NGX_CONF_UNSET;
    conf->timeout = NGX_CONF_UNSET_MSEC;
    conf->commit_timeout = NGX_CONF_UNSET_MSEC;
    conf->down_time = NGX_CONF_UNSET_MSEC;
    conf->max_size = NGX_CONF_UNSET;
    conf->valid = NGX_CONF_UNSET_PTR;
    return conf;
}


static char *
om_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    om_loc_conf_t  *prev = parent;
    om_loc_conf_t  *conf = child;

    ngx_http_compile_complex_value_t   ccv;
    om_valid_t                        *v;

    if (conf->backend == NULL) {
        conf->backend = prev->backend;
    }
    if (conf->key == NULL) {
        if (prev->key == NULL) {
            prev->key = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
            if (prev->key == NULL) {
                return NGX_CONF_ERROR;
            }
            ngx_memzero(&ccv, sizeof(ccv));
            ccv.cf = cf;
            ccv.value = &om_default_key;
            ccv.complex_value = prev->key;
            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }
        }
        conf->key = prev->key;
    }
    ngx_conf_merge_value(conf->cache, prev->cache, 0);
    ngx_conf_merge_value(conf->store, prev->store, 1);
    ngx_conf_merge_value(conf->purge, prev->purge, 0);
    ngx_conf_merge_str_value(conf->miss, prev->miss, "");
    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 500);
    ngx_conf_merge_msec_value(conf->commit_timeout, prev->commit_timeout, 60000);
    ngx_conf_merge_msec_value(conf->down_time, prev->down_time, 5000);
    ngx_conf_merge_off_value(conf->max_size, prev->max_size,
                             (off_t) 1024 * 1024 * 1024);
    ngx_conf_merge_ptr_value(conf->valid, prev->valid, NULL);
    if (conf->valid == NULL) {
        /* As proxy_cache_valid with a time only: 200, 301 and 302, here 10m. */
        conf->valid = ngx_array_create(cf->pool, 3, sizeof(om_valid_t));
        if (conf->valid == NULL) {
            return NGX_CONF_ERROR;
        }
        v = ngx_array_push_n(conf->valid, 3);
        if (v == NULL) {
            return NGX_CONF_ERROR;
        }
        v[0].status = 200; v[0].valid = 600;
        v[1].status = 301; v[1].valid = 600;
        v[2].status = 302; v[2].valid = 600;
        prev->valid = conf->valid;
    }

    if ((conf->cache || conf->purge) && conf->backend == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "objmapper_cache and objmapper_purge need "
                           "objmapper_socket (the daemon's Unix socket path)");
        return NGX_CONF_ERROR;
    }
    if (conf->timeout == 0 || conf->commit_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "objmapper_%s must be above 0",
                           conf->timeout == 0 ? "timeout" : "commit_timeout");
        return NGX_CONF_ERROR;
    }
    return NGX_CONF_OK;
}


static char *
om_socket(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    om_loc_conf_t  *lcf = conf;

    ngx_str_t        *value;
    ngx_uint_t        i;
    om_main_conf_t   *mcf;
    om_backend_t    **bp, *be;

    if (lcf->backend != NULL) {
        return "is duplicate";
    }
    value = cf->args->elts;
    if (value[1].len == 0 || value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "objmapper_socket \"%V\": not an absolute path to "
                           "objmapper's Unix socket", &value[1]);
        return NGX_CONF_ERROR;
    }
    if (value[1].len >= 108) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "objmapper_socket \"%V\": longer than a Unix socket "
                           "path may be (107 bytes)", &value[1]);
        return NGX_CONF_ERROR;
    }
    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_objmapper_module);
    bp = mcf->backends.elts;
    for (i = 0; i < mcf->backends.nelts; i++) {
        if (bp[i]->path.len == value[1].len
            && ngx_strncmp(bp[i]->path.data, value[1].data, value[1].len) == 0)
        {
            lcf->backend = bp[i];
            return NGX_CONF_OK;
        }
    }
    be = ngx_pcalloc(cf->pool, sizeof(om_backend_t));
    if (be == NULL) {
        return NGX_CONF_ERROR;
    }
    be->path.data = ngx_pnalloc(cf->pool, value[1].len + 1);
    if (be->path.data == NULL) {
        return NGX_CONF_ERROR;
    }
    ngx_memcpy(be->path.data, value[1].data, value[1].len);
    be->path.data[value[1].len] = '\0';
    be->path.len = value[1].len;
    bp = ngx_array_push(&mcf->backends);
    if (bp == NULL) {
        return NGX_CONF_ERROR;
    }
    *bp = be;
    lcf->backend = be;
    return NGX_CONF_OK;
}


static char *
om_miss_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t  *value = cf->args->elts;

    if (value[1].len < 2 || value[1].data[0] != '@') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "objmapper_miss \"%V\": must name a named location "
                           "(\"@origin\")", &value[1]);
        return NGX_CONF_ERROR;
    }
    return ngx_conf_set_str_slot(cf, cmd, conf);
}


/* objmapper_valid [code ...|any] time; as proxy_cache_valid. */
static char *
om_valid_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    om_loc_conf_t  *lcf = conf;

    ngx_str_t    *value;
    ngx_uint_t    i, n;
    ngx_int_t     status;
    time_t        valid;
    om_valid_t   *v;
    static ngx_uint_t  defaults[] = { 200, 301, 302 };

    if (lcf->valid == NGX_CONF_UNSET_PTR) {
        lcf->valid = ngx_array_create(cf->pool, 4, sizeof(om_valid_t));
        if (lcf->valid == NULL) {
            return NGX_CONF_ERROR;
        }
    }
    value = cf->args->elts;
    n = cf->args->nelts - 1;
    valid = ngx_parse_time(&value[n], 1);
    if (valid == (time_t) NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "objmapper_valid: invalid time \"%V\"", &value[n]);
        return NGX_CONF_ERROR;
    }
    if (n == 1) {
        for (i = 0; i < 3; i++) {
            v = ngx_array_push(lcf->valid);
            if (v == NULL) {
                return NGX_CONF_ERROR;
            }
            v->status = defaults[i];
            v->valid = valid;
        }
        return NGX_CONF_OK;
    }
    for (i = 1; i < n; i++) {
        if (ngx_strcmp(value[i].data, "any") == 0) {
            status = 0;
        } else {
            status = ngx_atoi(value[i].data, value[i].len);
            if (status < 100 || status > 599) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "objmapper_valid: invalid status \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }
        }
        v = ngx_array_push(lcf->valid);
        if (v == NULL) {
            return NGX_CONF_ERROR;
        }
        v->status = status;
        v->valid = valid;
    }
    return NGX_CONF_OK;
}


/* ---------------------------------------------------------------------------------
 * Connections: libobjmapper's, with their socket in nginx's event loop
 */

static void om_conn_read(ngx_event_t *ev);
static void om_op_finish(om_op_t *op);
static void om_op_step(om_op_t *op, objm_response_t *resp);
static ngx_int_t om_op_send(om_op_t *op);


static void
om_conn_noop(ngx_event_t *ev)
{
}


static void
om_conn_close(om_conn_t *conn)
{
    ngx_connection_t  *nc = conn->nc;

    if (nc != NULL) {
        if (nc->read->timer_set) {
            ngx_del_timer(nc->read);
        }
        if (nc->read->posted) {
            ngx_delete_posted_event(nc->read);
        }
        if (nc->write->posted) {
            ngx_delete_posted_event(nc->write);
        }
        if (ngx_del_conn) {
            (void) ngx_del_conn(nc, 0);
        } else if (nc->read->active) {
            (void) ngx_del_event(nc->read, NGX_READ_EVENT, 0);
        }
        /* The socket is libobjmapper's: objm_client_destroy() closes it. */
        nc->fd = (ngx_socket_t) -1;
        ngx_free_connection(nc);
    }
    objm_client_destroy(conn->c);
    ngx_free(conn);
}


/* Connects without waiting: a listen backlog that is full (objmapper stopped or
 * swamped) is a failure here, not a wait. */
static om_conn_t *
om_conn_open(om_backend_t *be, ngx_msec_t timeout, char *err, size_t errlen)
{
    int                  fd;
    struct sockaddr_un   sun;
    om_conn_t           *conn;
    ngx_connection_t    *nc;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "connect: socket(): %s", strerror(errno));
        return NULL;
    }
    ngx_memzero(&sun, sizeof(sun));
    sun.sun_family = AF_UNIX;
    ngx_memcpy(sun.sun_path, be->path.data, be->path.len);
    if (connect(fd, (struct sockaddr *) &sun, sizeof(sun)) != 0) {
        snprintf(err, errlen, "connect: cannot connect to %s: %s%s",
                 (char *) be->path.data, strerror(errno),
                 errno == EAGAIN ? " (its listen backlog is full: objmapper is "
                                   "stopped or swamped)" : "");
        close(fd);
        return NULL;
    }
    conn = ngx_calloc(sizeof(om_conn_t), ngx_cycle->log);
    if (conn == NULL) {
        close(fd);
        snprintf(err, errlen, "connect: out of memory");
        return NULL;
    }
    conn->be = be;
    conn->c = objm_client_create(fd, OBJM_PROTO_V1);
    if (conn->c == NULL) {
        snprintf(err, errlen, "connect: %s", objm_last_error());
        ngx_free(conn);
        return NULL;
    }
    /* Bounds the only call that could wait: a send into a full socket buffer. */
    (void) objm_client_set_timeout(conn->c, (uint32_t) timeout);
    conn->timeout = timeout;
    /* A V2 session, without waiting for the answer: one request in flight at a time,
     * fd passing, and the promise that earns shared descriptions (see the top). */
    if (objm_client_send_hello(conn->c, 1,
                               OBJM_CAP_FD_PASSING | OBJM_CAP_POSITIONAL_READS)
        != 0)
    {
        snprintf(err, errlen, "connect: HELLO: %s", objm_last_error());
        objm_client_destroy(conn->c);
        ngx_free(conn);
        return NULL;
    }

    nc = ngx_get_connection(fd, ngx_cycle->log);
    if (nc == NULL) {
        snprintf(err, errlen, "connect: no free worker_connections for objmapper");
        objm_client_destroy(conn->c);
        ngx_free(conn);
        return NULL;
    }
    conn->nc = nc;
    nc->data = conn;
    nc->read->handler = om_conn_read;
    nc->write->handler = om_conn_noop;
    nc->read->log = ngx_cycle->log;
    nc->write->log = ngx_cycle->log;
    if (ngx_handle_read_event(nc->read, 0) != NGX_OK) {
        snprintf(err, errlen, "connect: cannot add the socket to the event loop");
        om_conn_close(conn);
        return NULL;
    }
    return conn;
}


static om_conn_t *
om_conn_get(om_backend_t *be)
{
    om_conn_t  *conn;

    if (be->nidle == 0) {
        return NULL;
    }
    conn = be->idle[--be->nidle];
    conn->nc->idle = 0;
    conn->reused = 1;
    return conn;
}


static void
om_conn_put(om_backend_t *be, om_conn_t *conn)
{
    if (conn == NULL) {
        return;
    }
    conn->op = NULL;
    conn->held = 0;
    if (be->nidle < OM_IDLE_MAX && !ngx_exiting && !ngx_terminate) {
        be->idle[be->nidle++] = conn;
        /* ngx_close_idle_connections() closes it at a graceful shutdown. */
        conn->nc->idle = 1;
        return;
    }
    om_conn_close(conn);
}


static void
om_conn_unidle(om_conn_t *conn)
{
    om_backend_t  *be = conn->be;
    ngx_uint_t     i;

    for (i = 0; i < be->nidle; i++) {
        if (be->idle[i] == conn) {
            be->idle[i] = be->idle[--be->nidle];
            return;
        }
    }
}


static ngx_int_t
om_is_down(om_backend_t *be)
{
    if (be->down_until == 0) {
        return 0;
    }
    if ((ngx_msec_int_t) (be->down_until - ngx_current_msec) > 0) {
        return 1;
    }
    be->down_until = 0;
    return 0;
}


/* Logs why objmapper failed (at most once a second per socket) and skips it. */
static void
om_backend_fail(om_backend_t *be, ngx_msec_t down_time, int status,
    const char *err, ngx_log_t *log)
{
    ngx_uint_t  suppressed;

    while (be->nidle > 0) {
        om_conn_close(be->idle[--be->nidle]);
    }
    if (down_time > 0) {
        be->down_until = ngx_current_msec + down_time;
        if (be->down_until == 0) {
            be->down_until = 1;
        }
    }
    if (ngx_time() < be->errlog_next) {
        be->suppressed++;
        return;
    }
    be->errlog_next = ngx_time() + OM_ERRLOG_INTERVAL;
    suppressed = be->suppressed;
    be->suppressed = 0;

    if (status == OBJM_STATUS_FORBIDDEN) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "objmapper at \"%V\" refused this worker (uid %d, gid %d): "
                      "%s; grant it in objmapper's allowlist, e.g. "
                      "`objmapper serve --allow-uid %d=read,write` or "
                      "allow_uid = [\"%d=read,write\"] in [access] "
                      "(objmapper SECURITY.md); requests go to the origin, "
                      "objmapper skipped for %M ms (%ui more errors suppressed)",
                      &be->path, (int) geteuid(), (int) getegid(), err,
                      (int) geteuid(), (int) geteuid(), down_time, suppressed);
    } else if (ngx_strstr(err, "ermission denied") != NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "objmapper at \"%V\": %s: this worker (uid %d, gid %d) may "
                      "not connect to the socket: start objmapper with "
                      "--socket-mode 660 --socket-group <the worker's group> "
                      "and grant --allow-uid %d=read,write (objmapper "
                      "SECURITY.md); requests go to the origin, objmapper "
                      "skipped for %M ms (%ui more errors suppressed)",
                      &be->path, err, (int) geteuid(), (int) getegid(),
                      (int) geteuid(), down_time, suppressed);
    } else {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "objmapper at \"%V\" unavailable: %s; requests go to the "
                      "origin, objmapper skipped for %M ms (%ui more errors "
                      "suppressed)", &be->path, err, down_time, suppressed);
    }
}


/* ---------------------------------------------------------------------------------
 * Operations: one request (two for a lookup that starts a PUT) on one connection,
 * sent at once (a request of at most a few KiB goes into the idle connection's empty
 * socket buffer without waiting) and answered when the socket is readable
 */

static om_op_t *
om_op_new(om_kind_e kind, om_backend_t *be, om_loc_conf_t *conf)
{
    om_op_t  *op;

    op = ngx_calloc(sizeof(om_op_t), ngx_cycle->log);
    if (op == NULL) {
        return NULL;
    }
    op->kind = kind;
    op->be = be;
    /* A COMMIT publishes (and may write to disk) the whole body: it gets longer.
     * Nobody waits for it, and its failure does not mark objmapper down: the next
     * lookups find out for themselves. */
    op->timeout = kind == OM_COMMIT || kind == OM_ABORT ? conf->commit_timeout
                                                       : conf->timeout;
    op->down_time = kind == OM_COMMIT || kind == OM_ABORT ? 0 : conf->down_time;
    op->put_fd = -1;
    return op;
}


static void
om_op_free(om_op_t *op)
{
    if (op->resp != NULL) {
        objm_response_free(op->resp);
    }
    if (op->put_fd >= 0) {
        close(op->put_fd);
    }
    if (op->conn != NULL) {
        op->conn->op = NULL;
        if (op->broken || op->staged) {
            /* Closing drops whatever the server staged for it. */
            om_conn_close(op->conn);
        } else {
            om_conn_put(op->be, op->conn);
        }
    }
    om_meta_free(op->meta);
    ngx_free(op->vary);
    ngx_free(op->key);
    ngx_free(op);
}


static void
om_op_broken(om_op_t *op, const char *what)
{
    snprintf(op->err, sizeof(op->err), "%s: %s", what, objm_last_error());
    op->status = objm_last_status();
    op->broken = 1;
}


/* Opens a new connection for `op`; NGX_ERROR (op->err says why) makes the op broken
 * with a local status. */
static ngx_int_t
om_op_connect(om_op_t *op)
{
    op->conn = om_conn_open(op->be, op->timeout, op->err, sizeof(op->err));
    if (op->conn == NULL) {
        op->status = OBJM_STATUS_LOCAL;
        op->broken = 1;
        return NGX_ERROR;
    }
    return NGX_OK;
}


/* A fresh connection in place of a reused one that failed (it may have died with a
 * daemon that restarted): once per operation, and only for its first request. */
static ngx_int_t
om_op_reconnect(om_op_t *op)
{
    if (!op->conn->reused || op->retried || op->step_put || op->kind == OM_COMMIT
        || op->kind == OM_ABORT)
    {
        return NGX_DECLINED;
    }
    op->retried = 1;
    op->conn->op = NULL;
    om_conn_close(op->conn);
    if (om_op_connect(op) != NGX_OK) {
        return NGX_ERROR;
    }
    op->conn->op = op;
    op->broken = 0;
    return om_op_send(op);
}


static ngx_int_t
om_op_send(om_op_t *op)
{
    objm_request_t   req;
    const char      *what;
    ngx_msec_int_t   left;

    ngx_memzero(&req, sizeof(req));
    switch (op->kind) {
    case OM_LOOKUP:
        req.op = op->step_put ? OBJM_OP_PUT : OBJM_OP_GET;
        req.mode = OBJM_MODE_FDPASS;
        req.uri = op->key;
        req.uri_len = op->key_len;
        what = op->step_put ? "PUT" : "GET";
        break;
    case OM_COMMIT:
        req.op = OBJM_OP_COMMIT;
        req.handle = op->handle;
        req.length = op->length;
        req.expires_at = op->meta->expires_at;
        req.content_type = op->meta->ctype;
        req.custom = op->meta->p;
        req.custom_count = op->meta->n;
        what = "COMMIT";
        break;
    case OM_ABORT:
        req.op = OBJM_OP_ABORT;
        req.handle = op->handle;
        what = "ABORT";
        break;
    default: /* OM_DELETE */
        req.op = OBJM_OP_DELETE;
        req.uri = op->key;
        req.uri_len = op->key_len;
        what = "DELETE";
        break;
    }
    if (objm_client_send_request(op->conn->c, &req) != 0) {
        om_op_broken(op, what);
        return om_op_reconnect(op) == NGX_OK ? NGX_OK : NGX_ERROR;
    }
    /* The whole operation (a lookup's GET and PUT, a retry) within one timeout. */
    left = (ngx_msec_int_t) (op->deadline - ngx_current_msec);
    ngx_add_timer(op->conn->nc->read, left > 0 ? (ngx_msec_t) left : 1);
    return NGX_OK;
}


/* Starts an operation; NGX_ERROR: it failed at once (op->err says why), and nothing
 * will call om_op_finish() for it. */
static ngx_int_t
om_op_start(om_op_t *op)
{
    op->deadline = ngx_current_msec + op->timeout;
    if (op->conn == NULL) {
        op->conn = om_conn_get(op->be);
    }
    if (op->conn == NULL && om_op_connect(op) != NGX_OK) {
        return NGX_ERROR;
    }
    op->conn->op = op;
    if (op->conn->timeout != op->timeout) {
        (void) objm_client_set_timeout(op->conn->c, (uint32_t) op->timeout);
        op->conn->timeout = op->timeout;
    }
    return om_op_send(op);
}


/* Once per connection, after its first reply (the HELLO's answer has been read by
 * then): says once per worker if objmapper did not take the POSITIONAL_READS promise.
 * Nothing else changes: hits then get private descriptions, read the same way. */
static void
om_conn_granted(om_conn_t *conn)
{
    objm_hello_t  g;

    conn->granted = 1;
    if (objm_client_session(conn->c, &g) != 0
        || (g.capabilities & OBJM_CAP_POSITIONAL_READS)
        || conn->be->private_logged)
    {
        return;
    }
    conn->be->private_logged = 1;
    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "objmapper at \"%V\" did not take the POSITIONAL_READS promise "
                  "(granted capabilities 0x%xD): hits get a private file description "
                  "each, which costs objmapper an open and a close per hit",
                  &conn->be->path, (uint32_t) g.capabilities);
}


static void
om_conn_read(ngx_event_t *ev)
{
    ngx_connection_t  *nc = ev->data;
    om_conn_t         *conn = nc->data;
    om_op_t           *op = conn->op;
    objm_response_t   *resp;
    int                rc;

    if (op == NULL) {
        /* Idle: objmapper closed it (a restart), or a graceful shutdown closes it. */
        if (!conn->held) {
            om_conn_unidle(conn);
            om_conn_close(conn);
        }
        return;
    }
    if (ev->timedout) {
        ev->timedout = 0;
        snprintf(op->err, sizeof(op->err), "%s: no answer within "
                 "objmapper_%stimeout (%ums)",
                 op->kind == OM_COMMIT ? "COMMIT" : op->kind == OM_ABORT ? "ABORT"
                 : op->kind == OM_DELETE ? "DELETE" : op->step_put ? "PUT" : "GET",
                 op->kind == OM_COMMIT || op->kind == OM_ABORT ? "commit_" : "",
                 (unsigned) op->timeout);
        op->status = OBJM_STATUS_LOCAL;
        op->broken = 1;
        om_op_finish(op);
        return;
    }
    rc = objm_client_try_recv_response(conn->c, &resp);
    if (rc == 1) {
        return;     /* the rest comes with the next edge */
    }
    if (ev->timer_set) {
        ngx_del_timer(ev);
    }
    if (rc != 0) {
        om_op_broken(op, op->kind == OM_LOOKUP ? (op->step_put ? "PUT" : "GET")
                         : op->kind == OM_COMMIT ? "COMMIT"
                         : op->kind == OM_ABORT ? "ABORT" : "DELETE");
        if (om_op_reconnect(op) != NGX_OK) {
            om_op_finish(op);
        }
        return;
    }
    if (!conn->granted) {
        om_conn_granted(conn);
    }
    om_op_step(op, resp);
}


/*
 * Vary. A response with Vary is stored as two objects: a marker under the key (no
 * body; metadata "vary" = the header names, lowercased, comma-separated, as the
 * Varnish VMOD writes them) and the variant under
 *     key "\n" "vary " <the marker's objmapper version> "\n" (name ":" values "\n")...
 * with the request's values of those headers. A lookup that finds a marker asks for
 * the variant. A new marker (after a PURGE, or a changed Vary) has a new version, so
 * variants stored under an older one are never found again (they expire).
 */

/* A walk over the headers of an ngx_list_t of ngx_table_elt_t (headers_in or
 * headers_out), skipping deleted ones (hash 0):
 *
 *     om_headers_t  it = om_headers(&r->headers_out.headers);
 *
 *     while ((h = om_header_next(&it)) != NULL) { ... }
 */
typedef struct {
    ngx_list_part_t  *part;
    ngx_uint_t        i;
} om_headers_t;


static om_headers_t
om_headers(ngx_list_t *list)
{
    om_headers_t  it;

    it.part = &list->part;
    it.i = 0;
    return it;
}


static ngx_table_elt_t *
om_header_next(om_headers_t *it)
{
    ngx_table_elt_t  *h;

    for ( ;; ) {
        if (it->i >= it->part->nelts) {
            if (it->part->next == NULL) {
                return NULL;
            }
            it->part = it->part->next;
            it->i = 0;
            continue;
        }
        h = (ngx_table_elt_t *) it->part->elts + it->i++;
        if (h->hash != 0) {
            return h;
        }
    }
}


/* Whether header `h` is named `name` (`len` bytes), in any case. */
static ngx_int_t
om_header_is(ngx_table_elt_t *h, u_char *name, size_t len)
{
    return h->key.len == len && ngx_strncasecmp(h->key.data, name, len) == 0;
}


/* NGX_OK: `marker` is a marker and op->key is now its variant's key; NGX_DECLINED:
 * not a marker; NGX_ERROR: a marker whose variant key is too long or out of memory. */
static ngx_int_t
om_variant_key(om_op_t *op, objm_response_t *marker)
{
    ngx_http_request_t      *r = op->ctx->r;
    const objm_meta_pair_t  *p = NULL;
    om_headers_t             it;
    ngx_table_elt_t         *h;
    u_char                  *key, *k, *end, *n, *ne, *vend;
    size_t                   i, nl;
    ngx_uint_t               first;

    for (i = 0; i < marker->custom_count; i++) {
        if (strcmp(marker->custom[i].name, OM_M_VARY) == 0) {
            p = &marker->custom[i];
            break;
        }
    }
    if (p == NULL) {
        return NGX_DECLINED;
    }
    key = ngx_alloc(OBJM_MAX_KEY_LEN, ngx_cycle->log);
    op->vary = ngx_alloc(p->value_len + 1, ngx_cycle->log);
    if (key == NULL || op->vary == NULL) {
        ngx_free(key);
        return NGX_ERROR;
    }
    ngx_memcpy(op->vary, p->value, p->value_len);
    op->vary[p->value_len] = '\0';

    end = key + OBJM_MAX_KEY_LEN;
    if (op->key_len + 64 > OBJM_MAX_KEY_LEN) {
        goto too_long;
    }
    k = ngx_cpymem(key, op->key, op->key_len);
    k = ngx_sprintf(k, "\nvary %uL\n", (uint64_t) marker->meta.version);

    vend = (u_char *) op->vary + p->value_len;
    for (n = (u_char *) op->vary; n < vend; n = ne + 1) {
        ne = ngx_strlchr(n, vend, ',');
        if (ne == NULL) {
            ne = vend;
        }
        nl = ne - n;
        if (nl == 0) {
            continue;
        }
        if ((size_t) (end - k) < nl + 2) {
            goto too_long;
        }
        k = ngx_cpymem(k, n, nl);
        *k++ = ':';
        first = 1;
        it = om_headers(&r->headers_in.headers);
        while ((h = om_header_next(&it)) != NULL) {
            if (!om_header_is(h, n, nl)) {
                continue;
            }
            if ((size_t) (end - k) < h->value.len + 3) {
                goto too_long;
            }
            if (!first) {
                *k++ = ',';
                *k++ = ' ';
            }
            k = ngx_cpymem(k, h->value.data, h->value.len);
            first = 0;
        }
        if (k == end) {
            goto too_long;
        }
        *k++ = '\n';
    }
    ngx_free(op->key);
    op->key = (char *) key;
    op->key_len = k - key;
    return NGX_OK;

too_long:
    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "objmapper: the variant's key (Vary: %s) is over %d bytes; "
                  "going to the origin, not storing", op->vary, OBJM_MAX_KEY_LEN);
    ngx_free(key);
    return NGX_ERROR;
}


/* The response's Vary header names, lowercased and comma-joined ("*" if any is). */
static ngx_int_t
om_vary_list(ngx_http_request_t *r, ngx_str_t *out)
{
    om_headers_t      it;
    ngx_table_elt_t  *h;
    ngx_uint_t        i;
    size_t            total = 0;
    u_char           *p, *s, *e, *t;

    out->len = 0;
    out->data = NULL;
    for (i = 0; i < 2; i++) {
        it = om_headers(&r->headers_out.headers);
        while ((h = om_header_next(&it)) != NULL) {
            if (!om_header_is(h, (u_char *) "Vary", 4)) {
                continue;
            }
            if (i == 0) {
                total += h->value.len + 1;
                continue;
            }
            for (s = h->value.data, e = s + h->value.len; s < e; s = t + 1) {
                while (s < e && (*s == ' ' || *s == '\t')) {
                    s++;
                }
                t = ngx_strlchr(s, e, ',');
                if (t == NULL) {
                    t = e;
                }
                p = t;
                while (p > s && (p[-1] == ' ' || p[-1] == '\t')) {
                    p--;
                }
                if (p == s) {
                    continue;
                }
                if (p - s == 1 && *s == '*') {
                    ngx_str_set(out, "*");
                    return NGX_OK;
                }
                if (out->len) {
                    out->data[out->len++] = ',';
                }
                while (s < p) {
                    out->data[out->len++] = ngx_tolower(*s);
                    s++;
                }
            }
        }
        if (i == 0) {
            if (total == 0) {
                return NGX_OK;
            }
            out->data = ngx_pnalloc(r->pool, total);
            if (out->data == NULL) {
                return NGX_ERROR;
            }
        }
    }
    return NGX_OK;
}


/* One reply: the operation's next request, or its end. */
static void
om_op_step(om_op_t *op, objm_response_t *resp)
{
    op->status = resp->status;
    switch (op->kind) {

    case OM_LOOKUP:
        if (!op->step_put) {
            if (resp->status == OBJM_STATUS_OK && resp->fd >= 0
                && !op->step_variant && op->ctx != NULL)
            {
                /* A Vary marker names the headers; the variant is a second GET. */
                switch (om_variant_key(op, resp)) {
                case NGX_OK:
                    objm_response_free(resp);
                    op->step_variant = 1;
                    if (om_op_send(op) != NGX_OK) {
                        break;
                    }
                    return;
                case NGX_DECLINED:      /* not a marker: a hit */
                    op->resp = resp;
                    break;
                default:                /* a variant we cannot name: a miss */
                    objm_response_free(resp);
                    op->want_put = 0;
                    break;
                }
                break;
            }
            if (resp->status == OBJM_STATUS_OK && resp->fd >= 0) {
                op->resp = resp;
                break;
            }
            if (resp->status != OBJM_STATUS_NOT_FOUND) {
                snprintf(op->err, sizeof(op->err), "GET: %s: %s",
                         objm_status_name(resp->status), resp->message);
                /* FORBIDDEN without any grant closes the connection. */
                op->broken = 1;
                objm_response_free(resp);
                break;
            }
            objm_response_free(resp);
            if (!op->want_put) {
                break;
            }
            op->step_put = 1;
            if (om_op_send(op) != NGX_OK) {
                break;
            }
            return;
        }
        if (resp->status == OBJM_STATUS_OK && resp->fd >= 0) {
            op->put_fd = objm_response_take_fd(resp);
            op->put_handle = resp->handle;
            op->staged = 1;
        } else {
            snprintf(op->put_err, sizeof(op->put_err), "PUT: %s: %s",
                     objm_status_name(resp->status), resp->message);
        }
        objm_response_free(resp);
        break;

    case OM_COMMIT:
    case OM_ABORT:
        op->staged = 0;
        if (resp->status != OBJM_STATUS_OK) {
            snprintf(op->err, sizeof(op->err), "%s: %s: %s",
                     op->kind == OM_COMMIT ? "COMMIT" : "ABORT",
                     objm_status_name(resp->status), resp->message);
        }
        objm_response_free(resp);
        break;

    case OM_DELETE:
        if (resp->status != OBJM_STATUS_OK && resp->status != OBJM_STATUS_NOT_FOUND) {
            snprintf(op->err, sizeof(op->err), "DELETE: %s: %s",
                     objm_status_name(resp->status), resp->message);
        }
        objm_response_free(resp);
        break;
    }
    om_op_finish(op);
}


/* Sends a COMMIT or an ABORT nobody waits for; on failure drops the connection. */
static void
om_finish_put(om_ctx_t *ctx, om_kind_e kind)
{
    om_op_t  *op;

    if (ctx->put_fd >= 0) {
        close(ctx->put_fd);
        ctx->put_fd = -1;
    }
    ctx->storing = 0;
    if (ctx->put_conn == NULL) {
        return;
    }
    op = om_op_new(kind, ctx->conf->backend, ctx->conf);
    if (op == NULL) {
        om_conn_close(ctx->put_conn);
        ctx->put_conn = NULL;
        return;
    }
    op->conn = ctx->put_conn;
    op->conn->held = 0;
    ctx->put_conn = NULL;
    op->staged = 1;
    op->handle = ctx->put_handle;
    op->length = (uint64_t) ctx->written;
    if (kind == OM_COMMIT) {
        op->meta = ctx->meta;
        ctx->meta = NULL;
    }
    if (om_op_start(op) != NGX_OK) {
        om_backend_fail(op->be, op->down_time, op->status, op->err, ngx_cycle->log);
        om_op_free(op);
    }
}


/* ---------------------------------------------------------------------------------
 * The request's context
 */

static void
om_ctx_cleanup(void *data)
{
    om_ctx_t  *ctx = data;

    if (ctx->op != NULL) {
        ctx->op->ctx = NULL;
        ctx->op = NULL;
    }
    if (ctx->hit != NULL) {
        objm_response_free(ctx->hit);
        ctx->hit = NULL;
    }
    /* A response that did not end whole: nothing of it is published. */
    om_finish_put(ctx, OM_ABORT);
    om_meta_free(ctx->meta);
    ctx->meta = NULL;
}


/* The context survives internal redirects to a named location (they clear r->ctx):
 * it is found again through its pool cleanup, as the realip module does. */
static om_ctx_t *
om_get_ctx(ngx_http_request_t *r)
{
    om_ctx_t            *ctx;
    ngx_pool_cleanup_t  *cln;

    ctx = ngx_http_get_module_ctx(r, ngx_http_objmapper_module);
    if (ctx != NULL || !(r->internal)) {
        return ctx;
    }
    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == om_ctx_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_objmapper_module);
            return ctx;
        }
    }
    return NULL;
}


static om_ctx_t *
om_create_ctx(ngx_http_request_t *r, om_loc_conf_t *conf)
{
    om_ctx_t            *ctx;
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(om_ctx_t));
    if (cln == NULL) {
        return NULL;
    }
    ctx = cln->data;
    ngx_memzero(ctx, sizeof(om_ctx_t));
    ctx->r = r;
    ctx->conf = conf;
    ctx->put_fd = -1;
    ctx->expect = -1;
    cln->handler = om_ctx_cleanup;
    ngx_http_set_ctx(r, ctx, ngx_http_objmapper_module);
    return ctx;
}


static void
om_resume(om_ctx_t *ctx)
{
    ngx_http_request_t  *r = ctx->r;
    ngx_connection_t    *c = r->connection;

    if (ctx->blocked) {
        ctx->blocked = 0;
        r->main->blocked--;
        r->aio = 0;
    }
    r->write_event_handler(r);
    ngx_http_run_posted_requests(c);
}


/* The operation ended (answered, failed or timed out): log, hand over, free. */
static void
om_op_finish(om_op_t *op)
{
    om_ctx_t   *ctx = op->ctx;
    ngx_log_t  *log;

    log = ctx != NULL ? ctx->r->connection->log : ngx_cycle->log;

    if (op->broken) {
        om_backend_fail(op->be, op->down_time, op->status, op->err, log);
    } else if ((op->kind == OM_COMMIT && op->status != OBJM_STATUS_OK)
               || op->put_err[0] != '\0')
    {
        /* The server refused to store (no write grant, BUSY, NO_SPACE, ...): at
         * most one line a second per socket, as for failures. */
        if (ngx_time() < op->be->warnlog_next) {
            op->be->warn_suppressed++;
        } else {
            op->be->warnlog_next = ngx_time() + OM_ERRLOG_INTERVAL;
            ngx_log_error(NGX_LOG_WARN, log, 0, "objmapper at \"%V\": %s: %s "
                          "(%ui more suppressed)", &op->be->path,
                          op->put_err[0] ? "not storing" : "not stored",
                          op->put_err[0] ? op->put_err : op->err,
                          op->be->warn_suppressed);
            op->be->warn_suppressed = 0;
        }
    }

    if (ctx == NULL) {
        om_op_free(op);
        return;
    }
    ctx->op = NULL;
    om_op_result(ctx, op);
    om_op_free(op);
    om_resume(ctx);
}


/* What a finished lookup or purge means for its request. */
static void
om_op_result(om_ctx_t *ctx, om_op_t *op)
{
    if (op->kind == OM_DELETE) {
        ctx->state = op->broken ? OM_PURGE_ERROR
                     : op->status == OBJM_STATUS_OK ? OM_PURGED
                     : op->status == OBJM_STATUS_NOT_FOUND ? OM_PURGE_MISS
                     : OM_PURGE_ERROR;
        if (ctx->state == OM_PURGE_ERROR && !op->broken) {
            ngx_log_error(NGX_LOG_ERR, ctx->r->connection->log, 0,
                          "objmapper at \"%V\": purge: %s", &op->be->path, op->err);
        }
    } else if (op->broken) {
        ctx->state = OM_DOWN;
    } else if (op->resp != NULL) {
        ctx->state = OM_HIT;
        ctx->hit = op->resp;
        op->resp = NULL;
    } else {
        ctx->state = OM_MISS;
        if (op->step_variant && op->vary != NULL) {
            ctx->varied = 1;
            ctx->vary.len = ngx_strlen(op->vary);
            ctx->vary.data = ngx_pnalloc(ctx->r->pool, ctx->vary.len);
            if (ctx->vary.data == NULL) {
                /* The response's Vary then differs: the PUT is aborted. */
                ctx->vary.len = 0;
            } else {
                ngx_memcpy(ctx->vary.data, op->vary, ctx->vary.len);
            }
        }
        if (op->staged) {
            ctx->put_conn = op->conn;
            ctx->put_conn->op = NULL;
            ctx->put_conn->held = 1;
            ctx->put_fd = op->put_fd;
            ctx->put_handle = op->put_handle;
            op->conn = NULL;
            op->put_fd = -1;
            op->staged = 0;
        }
    }
}


/* Starts a lookup or a delete the request waits for. NGX_OK: it waits; otherwise
 * ctx->state already says what happened. */
static ngx_int_t
om_start(ngx_http_request_t *r, om_ctx_t *ctx, om_kind_e kind, ngx_uint_t want_put)
{
    om_loc_conf_t  *conf = ctx->conf;
    om_op_t        *op;

    op = om_op_new(kind, conf->backend, conf);
    if (op == NULL) {
        return NGX_ERROR;
    }
    op->key = ngx_alloc(ctx->key.len, r->connection->log);
    if (op->key == NULL) {
        ngx_free(op);
        return NGX_ERROR;
    }
    ngx_memcpy(op->key, ctx->key.data, ctx->key.len);
    op->key_len = ctx->key.len;
    op->want_put = want_put;
    if (om_op_start(op) != NGX_OK) {
        om_backend_fail(op->be, op->down_time, op->status, op->err,
                        r->connection->log);
        om_op_result(ctx, op);
        om_op_free(op);
        return NGX_DECLINED;
    }
    op->ctx = ctx;
    ctx->op = op;
    ctx->state = OM_WAIT;
    ctx->blocked = 1;
    r->main->blocked++;
    r->aio = 1;
    return NGX_OK;
}


/* ---------------------------------------------------------------------------------
 * Serving a hit
 */

static const objm_meta_pair_t *
om_pair_get(const objm_response_t *resp, const char *name)
{
    size_t  i;

    for (i = 0; i < resp->custom_count; i++) {
        if (strcmp(resp->custom[i].name, name) == 0) {
            return &resp->custom[i];
        }
    }
    return NULL;
}


static ngx_int_t
om_valid_value(const u_char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0') {
            return 0;
        }
    }
    return 1;
}


static ngx_table_elt_t *
om_push_header(ngx_http_request_t *r, const char *name, size_t nlen,
    const u_char *value, size_t vlen)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }
    h->hash = 1;
    h->key.data = ngx_pnalloc(r->pool, nlen + vlen);
    if (h->key.data == NULL) {
        return NULL;
    }
    ngx_memcpy(h->key.data, name, nlen);
    h->key.len = nlen;
    h->value.data = h->key.data + nlen;
    ngx_memcpy(h->value.data, value, vlen);
    h->value.len = vlen;
    h->lowcase_key = NULL;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    return h;
}


/* Sends the response header. 1: the body follows; 0: there is none to send (an error,
 * a special response or a HEAD request), and the handler returns *rc. */
static ngx_uint_t
om_send_header(ngx_http_request_t *r, ngx_int_t *rc)
{
    *rc = ngx_http_send_header(r);
    return !(*rc == NGX_ERROR || *rc > NGX_OK || r->header_only);
}


/* Sends `b` as the whole body, after om_send_header(). */
static ngx_int_t
om_send_body(ngx_http_request_t *r, ngx_buf_t *b)
{
    ngx_chain_t  out;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    out.buf = b;
    out.next = NULL;
    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
om_send_hit(ngx_http_request_t *r, om_ctx_t *ctx)
{
    objm_response_t           *resp = ctx->hit;
    const objm_meta_pair_t    *p;
    ngx_table_elt_t           *h;
    ngx_pool_cleanup_t        *cln;
    ngx_pool_cleanup_file_t   *clnf;
    ngx_buf_t                 *b;
    ngx_int_t                  rc;
    ngx_uint_t                 status;
    size_t                     i, nlen;
    const char                *name;
    double                     t_origin;
    time_t                     age, lm;
    u_char                     buf[NGX_INT_T_LEN + 1], *e;
    int                        fd;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    fd = objm_response_take_fd(resp);
    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_pool_cleanup_file_t));
    if (cln == NULL) {
        close(fd);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    cln->handler = ngx_pool_cleanup_file;
    clnf = cln->data;
    clnf->fd = fd;
    clnf->name = ctx->key.data;
    clnf->log = r->pool->log;

    status = 200;
    p = om_pair_get(resp, OM_M_STATUS);
    if (p != NULL && p->value_len == 3) {
        rc = ngx_atoi((u_char *) p->value, 3);
        if (rc >= 100 && rc <= 599) {
            status = (ngx_uint_t) rc;
        }
    }
    r->headers_out.status = status;
    r->headers_out.content_length_n = (off_t) resp->length;
    r->headers_out.last_modified_time = -1;

    for (i = 0; i < resp->custom_count; i++) {
        p = &resp->custom[i];
        name = p->name;
        if (ngx_strncmp(name, OM_M_HDR, 2) != 0 || name[2] == '\0'
            || !om_valid_value(p->value, p->value_len))
        {
            continue;
        }
        name += 2;
        nlen = ngx_strlen(name);
        if (ngx_strcasecmp((u_char *) name, (u_char *) "Content-Type") == 0) {
            r->headers_out.content_type.data = ngx_pnalloc(r->pool, p->value_len);
            if (r->headers_out.content_type.data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
            ngx_memcpy(r->headers_out.content_type.data, p->value, p->value_len);
            r->headers_out.content_type.len = p->value_len;
            r->headers_out.content_type_len = p->value_len;
            continue;
        }
        if (ngx_strcasecmp((u_char *) name, (u_char *) "Last-Modified") == 0) {
            lm = ngx_parse_http_time((u_char *) p->value, p->value_len);
            if (lm != NGX_ERROR) {
                /* As for a static file: nginx writes it and compares it. */
                r->headers_out.last_modified_time = lm;
                continue;
            }
        }
        if (ngx_strcasecmp((u_char *) name, (u_char *) "Content-Length") == 0
            || ngx_strcasecmp((u_char *) name, (u_char *) "Accept-Ranges") == 0
            || ngx_strcasecmp((u_char *) name, (u_char *) "Age") == 0
            || ngx_strcasecmp((u_char *) name, (u_char *) "X-Objmapper") == 0)
        {
            continue;
        }
        h = om_push_header(r, name, nlen, p->value, p->value_len);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        if (ngx_strcasecmp((u_char *) name, (u_char *) "ETag") == 0) {
            r->headers_out.etag = h;
        } else if (ngx_strcasecmp((u_char *) name, (u_char *) "Location") == 0) {
            r->headers_out.location = h;
        } else if (ngx_strcasecmp((u_char *) name, (u_char *) "Content-Encoding")
                   == 0)
        {
            r->headers_out.content_encoding = h;
        } else if (ngx_strcasecmp((u_char *) name, (u_char *) "Expires") == 0) {
            r->headers_out.expires = h;
        }
    }
    if (r->headers_out.content_type.len == 0 && resp->meta.content_type[0]) {
        r->headers_out.content_type.len = ngx_strlen(resp->meta.content_type);
        r->headers_out.content_type.data = ngx_pnalloc(r->pool,
                                            r->headers_out.content_type.len);
        if (r->headers_out.content_type.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        ngx_memcpy(r->headers_out.content_type.data, resp->meta.content_type,
                   r->headers_out.content_type.len);
        r->headers_out.content_type_len = r->headers_out.content_type.len;
    }

    /* Age, from when the origin answered. */
    p = om_pair_get(resp, OM_M_T_ORIGIN);
    t_origin = (double) resp->meta.mtime_ns / 1e9;
    if (p != NULL && p->value_len < 40) {
        ngx_memcpy(buf, p->value, ngx_min(p->value_len, sizeof(buf) - 1));
        buf[ngx_min(p->value_len, sizeof(buf) - 1)] = '\0';
        t_origin = strtod((char *) buf, NULL);
    }
    age = ngx_time() - (time_t) t_origin;
    e = ngx_sprintf(buf, "%T", age > 0 ? age : 0);
    if (om_push_header(r, "Age", 3, buf, e - buf) == NULL
        || om_push_header(r, "X-Objmapper", 11, (u_char *) "hit", 3) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->allow_ranges = status == NGX_HTTP_OK;

    if (!om_send_header(r, &rc)) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    b->file = ngx_pcalloc(r->pool, sizeof(ngx_file_t));
    if (b->file == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    b->file_pos = (off_t) resp->offset;
    b->file_last = (off_t) (resp->offset + resp->length);
    b->in_file = resp->length ? 1 : 0;
    b->sync = (r == r->main || b->in_file) ? 0 : 1;
    b->file->fd = fd;
    b->file->name = ctx->key;
    b->file->log = r->connection->log;
    return om_send_body(r, b);
}


static ngx_int_t
om_send_text(ngx_http_request_t *r, ngx_uint_t status, const char *text)
{
    ngx_buf_t    *b;
    ngx_int_t     rc;
    size_t        len = ngx_strlen(text);

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }
    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "text/plain");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    if (!om_send_header(r, &rc)) {
        return rc;
    }
    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }
    b->pos = (u_char *) text;
    b->last = b->pos + len;
    b->memory = 1;
    return om_send_body(r, b);
}


/* ---------------------------------------------------------------------------------
 * The PRECONTENT phase handler: lookups and purges
 */

static ngx_int_t
om_precontent(ngx_http_request_t *r)
{
    om_loc_conf_t  *conf;
    om_ctx_t       *ctx;
    ngx_uint_t      purge;
    ngx_int_t       rc;

    if (r != r->main) {
        return NGX_DECLINED;
    }
    conf = ngx_http_get_module_loc_conf(r, ngx_http_objmapper_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_objmapper_module);

    if (ctx == NULL) {
        purge = conf->purge && r->method_name.len == 5
                && ngx_strncmp(r->method_name.data, "PURGE", 5) == 0;
        if (!purge && (!conf->cache || !(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))))
        {
            return NGX_DECLINED;
        }
        if (om_get_ctx(r) != NULL) {
            /* Back from objmapper_miss's named location: it was looked up. */
            return NGX_DECLINED;
        }
        ctx = om_create_ctx(r, conf);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        if (ngx_http_complex_value(r, conf->key, &ctx->key) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        if (ctx->key.len == 0 || ctx->key.len > OBJM_MAX_KEY_LEN) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "objmapper: the key is %uz bytes (1 to %d allowed); "
                          "going to the origin", ctx->key.len, OBJM_MAX_KEY_LEN);
            ctx->state = purge ? OM_PURGE_ERROR : OM_DOWN;

        } else if (om_is_down(conf->backend)) {
            ctx->state = purge ? OM_PURGE_ERROR : OM_DOWN;

        } else {
            rc = om_start(r, ctx, purge ? OM_DELETE : OM_LOOKUP,
                          !purge && conf->store && r->method == NGX_HTTP_GET
                          && r->headers_in.range == NULL);
            if (rc == NGX_OK) {
                return NGX_DONE;
            }
            if (rc == NGX_ERROR) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
            /* NGX_DECLINED: failed at once; ctx->state says how. */
        }
    }

    switch (ctx->state) {

    case OM_WAIT:
        return NGX_DONE;

    case OM_HIT:
        ctx->state = OM_NONE;
        r->write_event_handler = ngx_http_request_empty_handler;
        rc = om_send_hit(r, ctx);
        objm_response_free(ctx->hit);
        ctx->hit = NULL;
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;

    case OM_PURGED:
    case OM_PURGE_MISS:
    case OM_PURGE_ERROR:
        r->write_event_handler = ngx_http_request_empty_handler;
        rc = ctx->state == OM_PURGED
             ? om_send_text(r, NGX_HTTP_OK, "purged\n")
             : ctx->state == OM_PURGE_MISS
             ? om_send_text(r, NGX_HTTP_NOT_FOUND, "not in objmapper\n")
             : om_send_text(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                            "objmapper unavailable: not purged\n");
        ctx->state = OM_NONE;
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;

    case OM_MISS:
    case OM_DOWN:
        if (conf->miss.len) {
            (void) ngx_http_named_location(r, &conf->miss);
            ngx_http_finalize_request(r, NGX_DONE);
            return NGX_DONE;
        }
        return NGX_DECLINED;

    default:
        return NGX_DECLINED;
    }
}


/* ---------------------------------------------------------------------------------
 * Storing what the origin sends
 */

static void
om_meta_free(om_meta_t *m)
{
    size_t  i;

    if (m == NULL) {
        return;
    }
    for (i = 0; i < m->n; i++) {
        ngx_free((void *) m->p[i].name);
    }
    ngx_free(m->p);
    ngx_free(m->ctype);
    ngx_free(m);
}


/* Adds a pair; the name is prefix + name, both copied. */
static ngx_int_t
om_meta_add(om_meta_t *m, const char *prefix, const u_char *name, size_t nlen,
    const u_char *value, size_t vlen)
{
    objm_meta_pair_t  *np;
    size_t             plen = ngx_strlen(prefix);
    char              *s;

    if (plen + nlen == 0 || plen + nlen > 255 || m->n >= OBJM_MAX_CUSTOM_PAIRS) {
        return NGX_ERROR;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        np = realloc(m->p, m->cap * sizeof(objm_meta_pair_t));
        if (np == NULL) {
            return NGX_ERROR;
        }
        m->p = np;
    }
    s = ngx_alloc(plen + nlen + 1 + vlen + 1, ngx_cycle->log);
    if (s == NULL) {
        return NGX_ERROR;
    }
    ngx_memcpy(s, prefix, plen);
    ngx_memcpy(s + plen, name, nlen);
    s[plen + nlen] = '\0';
    ngx_memcpy(s + plen + nlen + 1, value, vlen);
    s[plen + nlen + 1 + vlen] = '\0';
    m->p[m->n].name = s;
    m->p[m->n].value = s + plen + nlen + 1;
    m->p[m->n].value_len = vlen;
    m->n++;
    return NGX_OK;
}


static ngx_int_t
om_hop_header(ngx_str_t *k)
{
    static const char  *hop[] = {
        "Connection", "Keep-Alive", "Transfer-Encoding", "TE", "Trailer",
        "Upgrade", "Proxy-Authenticate", "Proxy-Authorization", "Content-Length",
        "Date", "Age", "X-Objmapper", "Accept-Ranges", "Content-Range", NULL
    };
    ngx_uint_t  i;

    for (i = 0; hop[i]; i++) {
        if (k->len == ngx_strlen(hop[i])
            && ngx_strncasecmp(k->data, (u_char *) hop[i], k->len) == 0)
        {
            return 1;
        }
    }
    return 0;
}


/* Finds "token" or "token=N" in a Cache-Control value; returns 1 and the number. */
static ngx_int_t
om_cc_directive(ngx_str_t *v, const char *token, ngx_int_t *num)
{
    u_char  *p, *end, *s;
    size_t   tl = ngx_strlen(token);

    p = v->data;
    end = v->data + v->len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }
        s = p;
        while (p < end && *p != ',' && *p != '=' && *p != ' ') {
            p++;
        }
        if ((size_t) (p - s) == tl && ngx_strncasecmp(s, (u_char *) token, tl) == 0) {
            if (num != NULL) {
                *num = -1;
                if (p < end && *p == '=') {
                    s = ++p;
                    if (p < end && *p == '"') {
                        s = ++p;
                    }
                    while (p < end && *p >= '0' && *p <= '9') {
                        p++;
                    }
                    *num = ngx_atoi(s, p - s);
                }
            }
            return 1;
        }
        while (p < end && *p != ',') {
            p++;
        }
    }
    return 0;
}


/* Why this response is not stored (NULL: it is), and its TTL. */
static const char *
om_refusal(ngx_http_request_t *r, om_loc_conf_t *conf, time_t *ttl)
{
    om_headers_t      it;
    ngx_table_elt_t  *h;
    ngx_uint_t        i, listed = 0;
    ngx_int_t         n, maxage = -1, smaxage = -1;
    ngx_uint_t        public = 0, must_revalidate = 0;
    time_t            expires = -1, now = ngx_time();
    om_valid_t       *v;

    if (r->method != NGX_HTTP_GET || r->header_only) {
        return "not a GET";
    }
    if (r->headers_in.range != NULL) {
        return "a Range request";
    }
    v = conf->valid->elts;
    for (i = 0; i < conf->valid->nelts; i++) {
        if (v[i].status == r->headers_out.status || v[i].status == 0) {
            *ttl = v[i].valid;
            listed = 1;
            break;
        }
    }
    if (!listed) {
        return "status not in objmapper_valid";
    }
    if (r->headers_out.content_length_n > conf->max_size) {
        return "larger than objmapper_max_size";
    }

    it = om_headers(&r->headers_out.headers);
    while ((h = om_header_next(&it)) != NULL) {
        if (om_header_is(h, (u_char *) "Set-Cookie", 10)) {
            return "Set-Cookie";
        }
        if (om_header_is(h, (u_char *) "Cache-Control", 13)) {
            if (om_cc_directive(&h->value, "no-store", NULL)
                || om_cc_directive(&h->value, "private", NULL)
                || om_cc_directive(&h->value, "no-cache", NULL))
            {
                return "Cache-Control: no-store, private or no-cache";
            }
            if (om_cc_directive(&h->value, "s-maxage", &n)) {
                smaxage = n;
            }
            public |= om_cc_directive(&h->value, "public", NULL);
            must_revalidate |= om_cc_directive(&h->value, "must-revalidate", NULL);
            if (om_cc_directive(&h->value, "max-age", &n)) {
                maxage = n;
            }
        }
        if (om_header_is(h, (u_char *) "Expires", 7)) {
            expires = ngx_parse_http_time(h->value.data, h->value.len);
            if (expires == NGX_ERROR) {
                expires = 0;    /* invalid: already expired (RFC 9111) */
            }
        }
    }
    if (r->headers_in.authorization != NULL && !public && !must_revalidate
        && smaxage < 0)
    {
        /* RFC 9111 3.5: a shared cache stores an answer to an authorized request
         * only when the response says it may. */
        return "a request with Authorization, and no Cache-Control: public, "
               "s-maxage or must-revalidate";
    }
    if (smaxage >= 0) {
        *ttl = smaxage;
    } else if (maxage >= 0) {
        *ttl = maxage;
    } else if (expires >= 0) {
        *ttl = expires > now ? expires - now : 0;
    }
    if (*ttl <= 0) {
        return "already expired";
    }
    return NULL;
}


static ngx_int_t
om_build_meta(ngx_http_request_t *r, om_ctx_t *ctx, time_t ttl)
{
    om_meta_t        *m;
    om_headers_t      it;
    ngx_table_elt_t  *h;
    ngx_time_t       *tp;
    u_char            buf[64], *e;
    ngx_int_t         rc = NGX_OK;

    m = ngx_calloc(sizeof(om_meta_t), r->connection->log);
    if (m == NULL) {
        return NGX_ERROR;
    }
    ctx->meta = m;
    tp = ngx_timeofday();
    /* Rounded up: an object never expires before its TTL is over. */
    m->expires_at = (uint64_t) (tp->sec + ttl + (tp->msec ? 1 : 0));

    e = ngx_sprintf(buf, "%03ui", r->headers_out.status % 1000);
    rc |= om_meta_add(m, OM_M_STATUS, (u_char *) "", 0, buf, e - buf);
    if (r->headers_out.status_line.len > 4) {
        rc |= om_meta_add(m, OM_M_REASON, (u_char *) "", 0,
                          r->headers_out.status_line.data + 4,
                          r->headers_out.status_line.len - 4);
    }
    e = ngx_sprintf(buf, "%T.%03M000", tp->sec, tp->msec);
    rc |= om_meta_add(m, OM_M_T_ORIGIN, (u_char *) "", 0, buf, e - buf);
    e = ngx_sprintf(buf, "%T.000", ttl);
    rc |= om_meta_add(m, OM_M_TTL, (u_char *) "", 0, buf, e - buf);
    rc |= om_meta_add(m, OM_M_GRACE, (u_char *) "", 0, (u_char *) "0.000", 5);
    rc |= om_meta_add(m, OM_M_KEEP, (u_char *) "", 0, (u_char *) "0.000", 5);
    rc |= om_meta_add(m, OM_M_URL, (u_char *) "", 0, r->unparsed_uri.data,
                      r->unparsed_uri.len);
    if (r->headers_in.host != NULL) {
        rc |= om_meta_add(m, OM_M_HOST, (u_char *) "", 0, r->headers_in.host->value.data,
                          r->headers_in.host->value.len);
    }
    if (r->headers_out.content_type.len) {
        rc |= om_meta_add(m, OM_M_HDR, (u_char *) "Content-Type", 12,
                          r->headers_out.content_type.data,
                          r->headers_out.content_type.len);
        if (r->headers_out.content_type.len <= OBJM_MAX_CONTENT_TYPE_LEN) {
            m->ctype = ngx_alloc(r->headers_out.content_type.len + 1,
                                 r->connection->log);
            if (m->ctype == NULL) {
                return NGX_ERROR;
            }
            ngx_memcpy(m->ctype, r->headers_out.content_type.data,
                       r->headers_out.content_type.len);
            m->ctype[r->headers_out.content_type.len] = '\0';
        }
    }
    if (r->headers_out.last_modified == NULL
        && r->headers_out.last_modified_time != -1)
    {
        e = ngx_http_time(buf, r->headers_out.last_modified_time);
        rc |= om_meta_add(m, OM_M_HDR, (u_char *) "Last-Modified", 13, buf, e - buf);
    }

    it = om_headers(&r->headers_out.headers);
    while ((h = om_header_next(&it)) != NULL) {
        if (h->key.len == 0 || om_hop_header(&h->key)
            || !om_valid_value(h->value.data, h->value.len))
        {
            continue;
        }
        rc |= om_meta_add(m, OM_M_HDR, h->key.data, h->key.len, h->value.data,
                          h->value.len);
    }
    return rc == NGX_OK ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
om_header_filter(ngx_http_request_t *r)
{
    om_ctx_t        *ctx;
    const char      *why, *verdict;
    time_t           ttl = 0;
    ngx_str_t        vary = ngx_null_string;
    ngx_uint_t       marker = 0;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }
    ctx = om_get_ctx(r);
    if (ctx == NULL || ctx->state == OM_NONE || ctx->state == OM_PURGED
        || ctx->state == OM_PURGE_MISS || ctx->state == OM_PURGE_ERROR)
    {
        /* Not looked up, or our own answer (a hit carries its X-Objmapper). */
        return ngx_http_next_header_filter(r);
    }
    verdict = ctx->state == OM_MISS ? "miss" : "unavailable";
    if (om_push_header(r, "X-Objmapper", 11, (u_char *) verdict, ngx_strlen(verdict))
        == NULL)
    {
        return NGX_ERROR;
    }
    ctx->state = OM_NONE;   /* an error page later is not this response */
    if (ctx->put_conn == NULL) {
        return ngx_http_next_header_filter(r);
    }
    why = om_refusal(r, ctx->conf, &ttl);
    if (why == NULL) {
        if (om_vary_list(r, &vary) != NGX_OK) {
            why = "out of memory";
        } else if (vary.len == 1 && vary.data[0] == '*') {
            why = "Vary: *";
        } else if (ctx->varied
                   && (vary.len != ctx->vary.len
                       || ngx_strncmp(vary.data, ctx->vary.data, vary.len) != 0))
        {
            why = "its Vary differs from the stored marker's";
        } else if (!ctx->varied && vary.len > 0) {
            marker = 1;
        }
    }
    if (why == NULL && om_build_meta(r, ctx, ttl) != NGX_OK) {
        why = "too many or too long headers for objmapper's metadata";
    }
    if (why == NULL && marker
        && om_meta_add(ctx->meta, OM_M_VARY, (u_char *) "", 0, vary.data, vary.len)
           != NGX_OK)
    {
        why = "too long a Vary for objmapper's metadata";
    }
    if (why != NULL) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "objmapper: not storing: %s", why);
        om_finish_put(ctx, OM_ABORT);
        return ngx_http_next_header_filter(r);
    }
    if (marker) {
        /* The key becomes the marker (no body); the next request for this key
         * looks up and stores its variant. */
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "objmapper: storing a Vary marker (%V)", &vary);
        ctx->written = 0;
        om_finish_put(ctx, OM_COMMIT);
        return ngx_http_next_header_filter(r);
    }
    ctx->storing = 1;
    ctx->expect = r->headers_out.content_length_n;
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "objmapper: storing, ttl %T", ttl);
    return ngx_http_next_header_filter(r);
}


static ngx_int_t
om_write_all(int fd, const u_char *p, size_t n)
{
    ssize_t  w;

    while (n > 0) {
        w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return NGX_ERROR;
        }
        p += w;
        n -= (size_t) w;
    }
    return NGX_OK;
}


static ngx_int_t
om_copy_file(int out, int in, off_t from, off_t to)
{
    ssize_t  w;
    off_t    off = from;

    while (off < to) {
        w = sendfile(out, in, &off, (size_t) ngx_min(to - off, 0x7ffff000));
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return NGX_ERROR;
        }
        if (w == 0) {
            return NGX_ERROR;
        }
    }
    return NGX_OK;
}


static ngx_int_t
om_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    om_ctx_t     *ctx;
    ngx_chain_t  *cl;
    ngx_buf_t    *b;
    ngx_uint_t    last = 0;
    const char   *why = NULL;
    size_t        n;

    if (r != r->main || in == NULL) {
        return ngx_http_next_body_filter(r, in);
    }
    ctx = om_get_ctx(r);
    if (ctx == NULL || !ctx->storing) {
        return ngx_http_next_body_filter(r, in);
    }
    for (cl = in; cl && why == NULL; cl = cl->next) {
        b = cl->buf;
        if (ngx_buf_in_memory(b)) {
            n = b->last - b->pos;
            if (n && om_write_all(ctx->put_fd, b->pos, n) != NGX_OK) {
                why = "cannot write to the staging fd";
            }
            ctx->written += n;
        } else if (b->in_file) {
            if (om_copy_file(ctx->put_fd, b->file->fd, b->file_pos, b->file_last)
                != NGX_OK)
            {
                why = "cannot copy into the staging fd";
            }
            ctx->written += b->file_last - b->file_pos;
        }
        if (ctx->written > ctx->conf->max_size) {
            why = "larger than objmapper_max_size";
        }
        if (b->last_buf) {
            last = 1;
        }
    }
    if (why == NULL && last && ctx->expect >= 0 && ctx->written != ctx->expect) {
        why = "the body's length differs from Content-Length";
    }
    if (why != NULL) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, ngx_errno,
                      "objmapper: not storing: %s", why);
        om_finish_put(ctx, OM_ABORT);
    } else if (last) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "objmapper: committing %O bytes", ctx->written);
        om_finish_put(ctx, OM_COMMIT);
    }
    return ngx_http_next_body_filter(r, in);
}


/* ---------------------------------------------------------------------------------
 * Set-up and tear-down
 */

static ngx_int_t
om_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }
    *h = om_precontent;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = om_header_filter;
    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = om_body_filter;
    return NGX_OK;
}


static void
om_exit_process(ngx_cycle_t *cycle)
{
    om_main_conf_t   *mcf;
    om_backend_t    **bp;
    ngx_uint_t        i;

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_objmapper_module);
    if (mcf == NULL) {
        return;
    }
    bp = mcf->backends.elts;
    for (i = 0; i < mcf->backends.nelts; i++) {
        while (bp[i]->nidle > 0) {
            om_conn_close(bp[i]->idle[--bp[i]->nidle]);
        }
    }
}
