/*
 * vmod_objmapper: objmapper as Varnish's persistent, shared second-level store.
 *
 * One C file over libobjmapper (crates/capi), built against Varnish 7.1 and 7.7 by
 * scripts/build-vmod. The parts:
 *
 *   - the object (om_backend): socket, prefix, timeout, a pool of idle connections,
 *     a health prober thread, varnishstat counters;
 *   - the director: gethdrs looks the fetch up in objmapper and answers hit, stale,
 *     miss or error; a hit's body is read from the passed fd by om_body_vfp;
 *   - the store filter (a VFP named like the object): writes what the origin sends
 *     into objmapper (PUT in fd mode, COMMIT at the end, ABORT otherwise);
 *   - invalidation: purge (the request's object and its variants), bans by URL and
 *     by tag, delete, all sent to objmapper's ban list.
 *
 * Beyond vrt.h this uses the fetch internals every backend must touch (busyobj's htc,
 * vfc, digest, fetch_objcore; http_conn), which have the same shape in 7.1 and 7.7.
 */

#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache_varnishd.h"
#include "cache/cache_filter.h"

#include "vcl.h"
#include "vrt_obj.h"
#include "vsb.h"
#include "vtim.h"

#include "vcc_objmapper_if.h"
#include "VSC_objmapper.h"

#include "objmapper.h"


/* Idle connections kept per object. */
#define OM_POOL_MAX 64
/* The longest objmapper key (OBJM_MAX_KEY_LEN). */
#define OM_KEY_MAX OBJM_MAX_KEY_LEN
/* At most one error record per object per this many seconds reaches the log. */
#define OM_ERRLOG_INTERVAL 1.0

/* Custom metadata names (objmapper's per-object key/value pairs). */
#define M_STATUS "status"
#define M_REASON "reason"
#define M_HDR "h:"
#define M_T_ORIGIN "t_origin"
#define M_TTL "ttl"
#define M_GRACE "grace"
#define M_KEEP "keep"
#define M_URL "url"
#define M_HOST "host"
#define M_TAGS "tags"
#define M_VARY "vary"

enum om_verdict {
	OM_NONE = 0,
	OM_HIT,
	OM_STALE,
	OM_MISS,
	OM_BYPASS,
	OM_ERROR,
};

static const char * const om_verdict_name[] = {
	[OM_NONE] = "none",
	[OM_HIT] = "hit",
	[OM_STALE] = "stale",
	[OM_MISS] = "miss",
	[OM_BYPASS] = "miss",
	[OM_ERROR] = "error",
};

struct om_backend {
	unsigned		magic;
#define OM_BACKEND_MAGIC	0x6f6d6265
	char			*vcl_name;
	char			*socket;
	char			*prefix;
	char			*tag_header;	/* a header name */
	double			timeout;
	double			probe_interval;

	VCL_BACKEND		dir;
	struct vfp		vfp;

	pthread_mutex_t		mtx;		/* pool, errlog */
	objm_connection_t	*pool[OM_POOL_MAX];
	int			npool;
	double			errlog_next;
	unsigned		errlog_suppressed;
	char			last_err[256];	/* why it last failed */

	int			healthy;	/* atomic */
	double			changed;	/* atomic (as int64 bits) */

	pthread_mutex_t		probe_mtx;
	pthread_cond_t		probe_cond;
	pthread_t		prober;
	int			probing;	/* the thread runs */
	int			probe_stop;

	struct vsc_seg		*vsc_seg;
	struct VSC_objmapper	*vsc;
};

/* What a fetch of this object learnt, for .restore(): per task (busyobj). */
struct om_task {
	unsigned		magic;
#define OM_TASK_MAGIC		0x6f6d7461
	enum om_verdict		verdict;
	int			has_times;
	double			t_origin, ttl, grace, keep;
};

/* The body of a hit, read from the fd objmapper passed. */
struct om_body {
	unsigned		magic;
#define OM_BODY_MAGIC		0x6f6d626f
	struct om_backend	*be;
	int			fd;
	uint64_t		off, len, done;
};

/* A response on its way into objmapper. */
struct om_store {
	unsigned		magic;
#define OM_STORE_MAGIC		0x6f6d7374
	struct om_backend	*be;
	objm_connection_t	*conn;
	int			fd;
	uint64_t		handle;
	uint64_t		written;
	int			failed;
	struct vsl_log		*vsl;
};

#define CTR_ADD(be, f, n) \
	((void)__atomic_fetch_add(&(be)->vsc->f, (uint64_t)(n), __ATOMIC_RELAXED))
#define CTR_INC(be, f) CTR_ADD(be, f, 1)

/* pthread calls that cannot fail unless the program is broken (7.7's vas.h has it). */
#ifndef PTOK
#define PTOK(e) AZ(e)
#endif

/*--------------------------------------------------------------------
 * Health and rate-limited error logging
 */

static void
om_set_health(struct om_backend *be, int ok)
{
	int was = __atomic_exchange_n(&be->healthy, ok, __ATOMIC_ACQ_REL);
	if (was != ok) {
		double now = VTIM_real();
		__atomic_store(&be->changed, &now, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&be->vsc->healthy, (uint64_t)ok, __ATOMIC_RELAXED);
}

static int
om_is_healthy(const struct om_backend *be)
{
	return (__atomic_load_n(&be->healthy, __ATOMIC_ACQUIRE));
}

/* Remembers why objmapper last failed, for the records of fetches that skip it. */
static void
om_note_error(struct om_backend *be, const char *why)
{
	PTOK(pthread_mutex_lock(&be->mtx));
	snprintf(be->last_err, sizeof be->last_err, "%s", why);
	PTOK(pthread_mutex_unlock(&be->mtx));
}

/*
 * Logs an error to `vsl` (a fetch's or a request's log) unless one was logged for
 * this object less than OM_ERRLOG_INTERVAL ago; then it is counted and the next
 * record says how many were left out. A daemon that is down makes one record a
 * second, not one per fetch.
 */
static void v_printflike_(4, 5)
om_errlog(struct om_backend *be, struct vsl_log *vsl, enum VSL_tag_e tag,
    const char *fmt, ...)
{
	va_list ap;
	char buf[1024];
	unsigned skipped;
	double now = VTIM_mono();

	PTOK(pthread_mutex_lock(&be->mtx));
	if (now < be->errlog_next) {
		be->errlog_suppressed++;
		PTOK(pthread_mutex_unlock(&be->mtx));
		return;
	}
	be->errlog_next = now + OM_ERRLOG_INTERVAL;
	skipped = be->errlog_suppressed;
	be->errlog_suppressed = 0;
	PTOK(pthread_mutex_unlock(&be->mtx));

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (vsl == NULL)
		return;
	if (skipped > 0)
		VSLb(vsl, tag, "objmapper %s: %s (%u similar records left out)",
		    be->vcl_name, buf, skipped);
	else
		VSLb(vsl, tag, "objmapper %s: %s", be->vcl_name, buf);
}

/*--------------------------------------------------------------------
 * Connections
 */

static uint32_t
om_ms_left(double deadline)
{
	double left = deadline - VTIM_mono();
	if (left <= 0.001)
		return (1);
	return ((uint32_t)(left * 1e3));
}

/*
 * A new connection, made within `deadline`: a non-blocking connect (a daemon whose
 * listen queue is full would block a plain one), then the V1 protocol (no handshake
 * round trip) with every later call bounded by the connection's timeout.
 */
static objm_connection_t *
om_connect(struct om_backend *be, double deadline, struct vsb *err)
{
	struct sockaddr_un sun;
	objm_connection_t *c;
	int fd, e;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(be->socket) >= sizeof sun.sun_path) {
		VSB_printf(err, "socket path %s is too long", be->socket);
		return (NULL);
	}
	strcpy(sun.sun_path, be->socket);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		VSB_printf(err, "socket(): %s", strerror(errno));
		return (NULL);
	}
	if (connect(fd, (void *)&sun, sizeof sun) != 0) {
		e = errno;
		if (e == EAGAIN)
			VSB_printf(err, "cannot connect to %s: its listen queue is "
			    "full (is the daemon stopped?)", be->socket);
		else
			VSB_printf(err, "cannot connect to %s: %s", be->socket,
			    strerror(e));
		closefd(&fd);
		return (NULL);
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
		VSB_printf(err, "fcntl(): %s", strerror(errno));
		closefd(&fd);
		return (NULL);
	}
	c = objm_client_create(fd, OBJM_PROTO_V1);	/* takes fd */
	if (c == NULL) {
		VSB_printf(err, "%s", objm_last_error());
		return (NULL);
	}
	if (objm_client_set_timeout(c, om_ms_left(deadline)) != 0) {
		VSB_printf(err, "%s", objm_last_error());
		objm_client_destroy(c);
		return (NULL);
	}
	/*
	 * A V2 session, one request at a time as before (om_call sends and then
	 * receives), that promises POSITIONAL_READS: a hit's fd is only ever read
	 * with pread() at its own offset (om_body_pull) and closed, never read(),
	 * lseek()ed or fcntl()ed, so the server may hand out one shared
	 * description per version instead of opening one per GET.
	 */
	if (objm_client_hello(c, 1,
	    OBJM_CAP_FD_PASSING | OBJM_CAP_POSITIONAL_READS, NULL) != 0) {
		VSB_printf(err, "HELLO: %s", objm_last_error());
		objm_client_destroy(c);
		return (NULL);
	}
	CTR_INC(be, conn_open);
	return (c);
}

static objm_connection_t *
om_conn_get(struct om_backend *be, double deadline, int *reused, struct vsb *err)
{
	objm_connection_t *c = NULL;

	PTOK(pthread_mutex_lock(&be->mtx));
	if (be->npool > 0)
		c = be->pool[--be->npool];
	PTOK(pthread_mutex_unlock(&be->mtx));
	*reused = c != NULL;
	if (c == NULL)
		return (om_connect(be, deadline, err));
	if (objm_client_set_timeout(c, om_ms_left(deadline)) != 0) {
		objm_client_destroy(c);
		return (om_connect(be, deadline, err));
	}
	return (c);
}

static void
om_conn_put(struct om_backend *be, objm_connection_t *c)
{
	if (c == NULL)
		return;
	PTOK(pthread_mutex_lock(&be->mtx));
	if (be->npool < OM_POOL_MAX) {
		be->pool[be->npool++] = c;
		c = NULL;
	}
	PTOK(pthread_mutex_unlock(&be->mtx));
	if (c != NULL)
		objm_client_destroy(c);
}

/*
 * Sends `req` and takes its reply. 0 with *resp set (any status), or -1 when the
 * connection failed or timed out: then it is destroyed (*cp = NULL), the backend is
 * marked sick, and `err` says why.
 *
 * A connection that fails at once (not a timeout) is most often a pooled one the
 * daemon closed when it restarted: the request is sent once more on a new connection
 * before objmapper is called sick. Not COMMIT and ABORT, whose handle belongs to the
 * connection that is gone.
 */
static int
om_call(struct om_backend *be, objm_connection_t **cp, const objm_request_t *req,
    double deadline, objm_response_t **resp, struct vsb *err)
{
	int timed_out, again = req->op != OBJM_OP_COMMIT && req->op != OBJM_OP_ABORT;

	for (;;) {
		*resp = NULL;
		if (objm_client_set_timeout(*cp, om_ms_left(deadline)) == 0 &&
		    objm_client_send_request(*cp, req) == 0 &&
		    objm_client_recv_response(*cp, resp) == 0)
			return (0);
		timed_out = strstr(objm_last_error(), "timed out") != NULL ||
		    VTIM_mono() >= deadline;
		if (!timed_out && again) {
			again = 0;
			objm_client_destroy(*cp);
			*cp = om_connect(be, deadline, err);
			if (*cp != NULL)
				continue;
			break;
		}
		VSB_printf(err, "%s", objm_last_error());
		if (timed_out)
			CTR_INC(be, timeout);
		objm_client_destroy(*cp);
		*cp = NULL;
		break;
	}
	om_set_health(be, 0);
	return (-1);
}

/* A one-shot request on a pooled connection; 0 if objmapper answered OK. */
static int
om_simple(struct om_backend *be, const objm_request_t *req, struct vsb *err,
    int *status)
{
	objm_connection_t *c;
	objm_response_t *resp;
	double deadline = VTIM_mono() + be->timeout;
	int reused, r = -1;

	*status = OBJM_STATUS_LOCAL;
	c = om_conn_get(be, deadline, &reused, err);
	if (c == NULL) {
		om_set_health(be, 0);
		return (-1);
	}
	if (om_call(be, &c, req, deadline, &resp, err) != 0)
		return (-1);
	*status = resp->status;
	if (resp->status == OBJM_STATUS_OK)
		r = 0;
	else
		VSB_printf(err, "%s: %s", objm_status_name(resp->status),
		    resp->message);
	objm_response_free(resp);
	om_conn_put(be, c);
	return (r);
}

/*--------------------------------------------------------------------
 * The prober: PINGs the daemon every probe_interval on a connection of its own, so
 * that the health a fetch reads is never waited for.
 */

static int
om_probe_once(struct om_backend *be, objm_connection_t **cp)
{
	struct vsb *err = VSB_new_auto();
	double deadline = VTIM_mono() + be->timeout;
	objm_request_t req;
	objm_response_t *resp;
	int ok = 0;

	AN(err);
	if (*cp == NULL)
		*cp = om_connect(be, deadline, err);
	if (*cp != NULL) {
		memset(&req, 0, sizeof req);
		req.op = OBJM_OP_PING;
		if (om_call(be, cp, &req, deadline, &resp, err) == 0) {
			ok = resp->status == OBJM_STATUS_OK;
			objm_response_free(resp);
		}
	}
	if (!ok) {
		AZ(VSB_finish(err));
		om_note_error(be, VSB_len(err) > 0 ? VSB_data(err) : "PING refused");
	}
	VSB_destroy(&err);
	om_set_health(be, ok);
	return (ok);
}

static void *
om_prober(void *arg)
{
	struct om_backend *be;
	objm_connection_t *c = NULL;
	struct timespec ts;
	double until;

	CAST_OBJ_NOTNULL(be, arg, OM_BACKEND_MAGIC);
	PTOK(pthread_mutex_lock(&be->probe_mtx));
	while (!be->probe_stop) {
		PTOK(pthread_mutex_unlock(&be->probe_mtx));
		(void)om_probe_once(be, &c);
		PTOK(pthread_mutex_lock(&be->probe_mtx));
		until = VTIM_real() + be->probe_interval;
		ts.tv_sec = (time_t)until;
		ts.tv_nsec = (long)((until - floor(until)) * 1e9);
		while (!be->probe_stop &&
		    pthread_cond_timedwait(&be->probe_cond, &be->probe_mtx, &ts) == 0)
			continue;
	}
	PTOK(pthread_mutex_unlock(&be->probe_mtx));
	if (c != NULL)
		objm_client_destroy(c);
	return (NULL);
}

static void
om_probe_start(struct om_backend *be)
{
	PTOK(pthread_mutex_lock(&be->probe_mtx));
	if (!be->probing) {
		be->probe_stop = 0;
		PTOK(pthread_create(&be->prober, NULL, om_prober, be));
		be->probing = 1;
	}
	PTOK(pthread_mutex_unlock(&be->probe_mtx));
}

static void
om_probe_stop(struct om_backend *be)
{
	int join;

	PTOK(pthread_mutex_lock(&be->probe_mtx));
	join = be->probing;
	be->probe_stop = 1;
	be->probing = 0;
	PTOK(pthread_cond_broadcast(&be->probe_cond));
	PTOK(pthread_mutex_unlock(&be->probe_mtx));
	if (join)
		PTOK(pthread_join(be->prober, NULL));
}

/*--------------------------------------------------------------------
 * Headers and keys
 */

/* The value of header `name` (len bytes, no colon) in slot i of hp, or NULL. */
static const char *
om_hdr_value(const struct http *hp, unsigned i, const char *name, size_t len,
    const char **end)
{
	const txt *t = &hp->hd[i];
	const char *v;

	if (t->b == NULL || (size_t)(t->e - t->b) <= len || t->b[len] != ':' ||
	    strncasecmp(t->b, name, len) != 0)
		return (NULL);
	v = t->b + len + 1;
	while (v < t->e && (*v == ' ' || *v == '\t'))
		v++;
	*end = t->e;
	while (*end > v && ((*end)[-1] == ' ' || (*end)[-1] == '\t'))
		(*end)--;
	return (v);
}

/*
 * All values of header `name` in hp joined with ", " into vsb; returns how many
 * header lines there were.
 */
static int
om_hdr_join(const struct http *hp, const char *name, struct vsb *vsb)
{
	unsigned i;
	size_t len = strlen(name);
	const char *v, *e;
	int n = 0;

	for (i = HTTP_HDR_FIRST; i < hp->nhd; i++) {
		v = om_hdr_value(hp, i, name, len, &e);
		if (v == NULL)
			continue;
		if (n++ > 0)
			VSB_cat(vsb, ", ");
		VSB_bcat(vsb, v, e - v);
	}
	return (n);
}

static int
om_hdr_has(const struct http *hp, const char *name)
{
	unsigned i;
	size_t len = strlen(name);
	const char *e;

	for (i = HTTP_HDR_FIRST; i < hp->nhd; i++)
		if (om_hdr_value(hp, i, name, len, &e) != NULL)
			return (1);
	return (0);
}

/* Whether the comma-separated directives of header `name` include one of `tok`. */
static int
om_hdr_directive(const struct http *hp, const char *name, const char * const *tok)
{
	struct vsb *v = VSB_new_auto();
	const char *p, *q;
	size_t l;
	int found = 0, i;

	AN(v);
	(void)om_hdr_join(hp, name, v);
	AZ(VSB_finish(v));
	for (p = VSB_data(v); *p != '\0' && !found; p = q) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		for (q = p; *q != '\0' && *q != ',' && *q != '=' && *q != ' '; q++)
			continue;
		l = q - p;
		for (i = 0; tok[i] != NULL; i++)
			if (l == strlen(tok[i]) && strncasecmp(p, tok[i], l) == 0)
				found = 1;
		while (*q != '\0' && *q != ',')
			q++;
	}
	VSB_destroy(&v);
	return (found);
}

/* The key of a request: prefix + the hex SHA-256 Varnish hashed it to. */
static void
om_base_key(const struct om_backend *be, const uint8_t *digest, struct vsb *key)
{
	int i;

	VSB_cat(key, be->prefix);
	for (i = 0; i < DIGEST_LEN; i++)
		VSB_printf(key, "%02x", digest[i]);
}

/*
 * Accept-Encoding as the set of codings it accepts (q > 0), lowercased, sorted and
 * joined with ",": two requests that accept the same codings share a variant, and a
 * request never gets a coding it did not accept. With http_gzip_support on, Varnish
 * has already made the backend request's value "gzip".
 */
static int
om_cmp_str(const void *a, const void *b)
{
	return (strcmp(*(char * const *)a, *(char * const *)b));
}

static void
om_norm_accept_encoding(const char *v, struct vsb *out)
{
	char *copy = strdup(v), *tok[64], *p, *save = NULL, *semi, *q;
	int n = 0, i, j;

	AN(copy);
	for (p = strtok_r(copy, ",", &save); p != NULL && n < 64;
	    p = strtok_r(NULL, ",", &save)) {
		while (*p == ' ' || *p == '\t')
			p++;
		semi = strchr(p, ';');
		if (semi != NULL) {
			*semi = '\0';
			q = strstr(semi + 1, "q=");
			if (q != NULL && strtod(q + 2, NULL) <= 0.0)
				continue;
		}
		for (j = (int)strlen(p); j > 0 && (p[j - 1] == ' ' || p[j - 1] == '\t'); j--)
			p[j - 1] = '\0';
		if (*p == '\0')
			continue;
		for (q = p; *q != '\0'; q++)
			*q = (char)tolower((unsigned char)*q);
		tok[n++] = p;
	}
	qsort(tok, n, sizeof tok[0], om_cmp_str);
	for (i = 0; i < n; i++) {
		if (i > 0 && strcmp(tok[i], tok[i - 1]) == 0)
			continue;
		if (i > 0)
			VSB_cat(out, ",");
		VSB_cat(out, tok[i]);
	}
	free(copy);
}

/*
 * The variant suffix for `vary` (a normalised list of lowercase header names,
 * comma-separated) and the request `hp`: a newline, then "name=value" per header
 * joined by newlines. Header values cannot hold a newline, so the key is
 * unambiguous. Returns -1 if a value is unusable (Vary: *).
 */
static int
om_variant(const struct http *hp, const char *vary, struct vsb *key)
{
	char *copy = strdup(vary), *name, *save = NULL;
	struct vsb *val;
	int r = 0;

	AN(copy);
	val = VSB_new_auto();
	AN(val);
	for (name = strtok_r(copy, ",", &save); name != NULL;
	    name = strtok_r(NULL, ",", &save)) {
		if (strcmp(name, "*") == 0) {
			r = -1;
			break;
		}
		VSB_clear(val);
		(void)om_hdr_join(hp, name, val);
		AZ(VSB_finish(val));
		VSB_printf(key, "\n%s=", name);
		if (strcmp(name, "accept-encoding") == 0)
			om_norm_accept_encoding(VSB_data(val), key);
		else
			VSB_cat(key, VSB_data(val));
	}
	VSB_destroy(&val);
	free(copy);
	return (r);
}

/*
 * A response's Vary header as a list of lowercase names, sorted, without
 * duplicates. Empty if there is none; "*" if it varies on everything.
 */
static void
om_vary_list(const struct http *hp, struct vsb *out)
{
	struct vsb *v = VSB_new_auto();
	char *copy, *tok[64], *p, *save = NULL, *q;
	int n = 0, i;

	AN(v);
	(void)om_hdr_join(hp, "Vary", v);
	AZ(VSB_finish(v));
	copy = strdup(VSB_data(v));
	AN(copy);
	for (p = strtok_r(copy, ",", &save); p != NULL && n < 64;
	    p = strtok_r(NULL, ",", &save)) {
		while (*p == ' ' || *p == '\t')
			p++;
		for (q = p; *q != '\0' && *q != ' ' && *q != '\t'; q++)
			*q = (char)tolower((unsigned char)*q);
		*q = '\0';
		if (*p != '\0')
			tok[n++] = p;
	}
	qsort(tok, n, sizeof tok[0], om_cmp_str);
	for (i = 0; i < n; i++) {
		if (i > 0 && strcmp(tok[i], tok[i - 1]) == 0)
			continue;
		if (VSB_len(out) > 0)
			VSB_cat(out, ",");
		VSB_cat(out, tok[i]);
	}
	free(copy);
	VSB_destroy(&v);
}

/* A value for a ban expression: quoted, with \\, \" and every other byte that is
 * not printable ASCII escaped. */
static void
om_ban_quote(struct vsb *vsb, const char *s, size_t len)
{
	size_t i;
	unsigned char c;

	VSB_putc(vsb, '"');
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			VSB_printf(vsb, "\\%c", c);
		else if (c == '\n')
			VSB_cat(vsb, "\\n");
		else if (c < 0x20 || c >= 0x7f)
			VSB_printf(vsb, "\\x%02x", c);
		else
			VSB_putc(vsb, c);
	}
	VSB_putc(vsb, '"');
}

/*--------------------------------------------------------------------
 * Metadata of a looked-up object
 */

static const objm_meta_pair_t *
om_meta(const objm_response_t *resp, const char *name)
{
	size_t i;

	for (i = 0; i < resp->custom_count; i++)
		if (strcmp(resp->custom[i].name, name) == 0)
			return (&resp->custom[i]);
	return (NULL);
}

/* A numeric metadata value; 0 if absent or not a number. */
static int
om_meta_double(const objm_response_t *resp, const char *name, double *d)
{
	const objm_meta_pair_t *p = om_meta(resp, name);
	char buf[64], *end;

	if (p == NULL || p->value_len == 0 || p->value_len >= sizeof buf)
		return (0);
	memcpy(buf, p->value, p->value_len);
	buf[p->value_len] = '\0';
	*d = strtod(buf, &end);
	return (*end == '\0' && isfinite(*d));
}

/*--------------------------------------------------------------------
 * The director
 */

static const struct vfp om_body_vfp;

static struct om_task *
om_task(VRT_CTX, struct om_backend *be)
{
	struct vmod_priv *p = VRT_priv_task(ctx, be);
	struct om_task *t;

	if (p == NULL)
		return (NULL);
	if (p->priv == NULL) {
		t = WS_Alloc(ctx->ws, sizeof *t);
		if (t == NULL)
			return (NULL);
		INIT_OBJ(t, OM_TASK_MAGIC);
		p->priv = t;
	}
	CAST_OBJ_NOTNULL(t, p->priv, OM_TASK_MAGIC);
	return (t);
}

static VCL_BOOL v_matchproto_(vdi_healthy_f)
om_healthy(VRT_CTX, VCL_BACKEND dir, VCL_TIME *changed)
{
	struct om_backend *be;
	double c;

	(void)ctx;
	CAST_OBJ_NOTNULL(be, dir->priv, OM_BACKEND_MAGIC);
	if (changed != NULL) {
		__atomic_load(&be->changed, &c, __ATOMIC_ACQUIRE);
		*changed = c;
	}
	return (om_is_healthy(be));
}

/* Whether Varnish would cache this fetch at all: only then may objmapper answer. */
static int
om_fetch_cacheable(VRT_CTX)
{
	const struct http *hp = ctx->http_bereq;
	const txt *m = &hp->hd[HTTP_HDR_METHOD];
	size_t l = m->e - m->b;

	if (VRT_r_bereq_uncacheable(ctx))
		return (0);
	return ((l == 3 && memcmp(m->b, "GET", 3) == 0) ||
	    (l == 4 && memcmp(m->b, "HEAD", 4) == 0));
}

/*
 * Looks the fetch up: the key, then (for a Vary marker) the variant's key.
 * Returns the verdict; on HIT/STALE *resp holds the object (fd included).
 */
static enum om_verdict
om_lookup(VRT_CTX, struct om_backend *be, struct om_task *t,
    objm_response_t **respp, struct vsb *err)
{
	struct busyobj *bo = ctx->bo;
	struct vsb *key = VSB_new_auto();
	objm_connection_t *c;
	objm_response_t *resp = NULL;
	objm_request_t req;
	const objm_meta_pair_t *vary;
	char *list;
	double deadline = VTIM_mono() + be->timeout, age;
	double t_origin = 0, ttl = 0, grace = 0, keep = 0;
	enum om_verdict v = OM_MISS;
	int reused, has_times;

	AN(key);
	om_base_key(be, bo->digest, key);
	AZ(VSB_finish(key));
	c = om_conn_get(be, deadline, &reused, err);
	if (c == NULL) {
		om_set_health(be, 0);
		VSB_destroy(&key);
		return (OM_ERROR);
	}
	VSLb(bo->vsl, SLT_BackendOpen, "%d %s %s 0 0.0.0.0 0 %s",
	    -1, be->vcl_name, be->socket, reused ? "reuse" : "connect");

	memset(&req, 0, sizeof req);
	req.op = OBJM_OP_GET;
	req.mode = OBJM_MODE_FDPASS;
	req.uri = VSB_data(key);
	req.uri_len = VSB_len(key);
	if (om_call(be, &c, &req, deadline, &resp, err) != 0) {
		VSB_destroy(&key);
		return (OM_ERROR);
	}
	vary = resp->status == OBJM_STATUS_OK ? om_meta(resp, M_VARY) : NULL;
	if (vary != NULL) {
		/* A marker: the object varies; look the request's variant up. */
		list = strndup(vary->value, vary->value_len);
		AN(list);
		objm_response_free(resp);
		resp = NULL;
		VSB_clear(key);
		om_base_key(be, bo->digest, key);
		if (om_variant(ctx->http_bereq, list, key) != 0 ||
		    VSB_finish(key) != 0 || VSB_len(key) > OM_KEY_MAX) {
			free(list);
			VSB_destroy(&key);
			om_conn_put(be, c);
			return (OM_MISS);
		}
		free(list);
		req.uri = VSB_data(key);
		req.uri_len = VSB_len(key);
		if (om_call(be, &c, &req, deadline, &resp, err) != 0) {
			VSB_destroy(&key);
			return (OM_ERROR);
		}
	}
	VSB_destroy(&key);
	om_conn_put(be, c);

	if (resp->status == OBJM_STATUS_NOT_FOUND) {
		objm_response_free(resp);
		return (OM_MISS);
	}
	if (resp->status != OBJM_STATUS_OK || resp->fd < 0) {
		VSB_printf(err, "GET answered %s: %s",
		    objm_status_name(resp->status), resp->message);
		objm_response_free(resp);
		return (OM_ERROR);
	}

	has_times = om_meta_double(resp, M_T_ORIGIN, &t_origin) &&
	    om_meta_double(resp, M_TTL, &ttl) &&
	    om_meta_double(resp, M_GRACE, &grace) &&
	    om_meta_double(resp, M_KEEP, &keep);
	if (has_times) {
		age = ctx->now - t_origin;
		if (age < ttl)
			v = OM_HIT;
		else if (age < ttl + grace && !VRT_r_bereq_is_bgfetch(ctx))
			v = OM_STALE;
		else
			v = OM_MISS;	/* past grace (or a background refresh) */
	} else {
		/* Not stored by this VMOD: objmapper's own expiry is its TTL. */
		v = OM_HIT;
		t_origin = resp->meta.mtime_ns / 1e9;
	}
	if (v == OM_MISS) {
		objm_response_free(resp);
		return (OM_MISS);
	}
	if (t != NULL) {
		t->has_times = has_times;
		t->t_origin = t_origin;
		t->ttl = ttl;
		t->grace = grace;
		t->keep = keep;
	}
	*respp = resp;
	return (v);
}

static int
om_valid_value(const void *v, size_t len)
{
	const unsigned char *p = v;
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
			return (0);
	return (1);
}

static int v_matchproto_(vdi_gethdrs_f)
om_gethdrs(VRT_CTX, VCL_BACKEND dir)
{
	struct om_backend *be;
	struct busyobj *bo;
	struct http *beresp;
	struct http_conn *htc;
	struct vfp_entry *vfe;
	struct om_body *body;
	struct om_task *t;
	objm_response_t *resp = NULL;
	const objm_meta_pair_t *p;
	struct vsb *err = VSB_new_auto();
	enum om_verdict v;
	unsigned status = 200;
	const char *reason = NULL;
	char digits[4];
	double age, t_origin;
	uint64_t len = 0;
	size_t i;
	int want_body;

	CHECK_OBJ_NOTNULL(ctx, VRT_CTX_MAGIC);
	CAST_OBJ_NOTNULL(be, dir->priv, OM_BACKEND_MAGIC);
	bo = ctx->bo;
	CHECK_OBJ_NOTNULL(bo, BUSYOBJ_MAGIC);
	beresp = ctx->http_beresp;
	AN(err);

	t = om_task(ctx, be);
	if (t != NULL)
		t->verdict = OM_NONE;

	if (!om_fetch_cacheable(ctx)) {
		v = OM_BYPASS;
		CTR_INC(be, bypass);
	} else if (!om_is_healthy(be)) {
		v = OM_ERROR;
		PTOK(pthread_mutex_lock(&be->mtx));
		VSB_printf(err, "sick, not asked until a probe gets an answer; last "
		    "failure: %s", be->last_err);
		PTOK(pthread_mutex_unlock(&be->mtx));
		CTR_INC(be, skipped);
	} else {
		v = om_lookup(ctx, be, t, &resp, err);
		if (v == OM_ERROR) {
			CTR_INC(be, error);
			AZ(VSB_finish(err));
			om_note_error(be, VSB_data(err));
			VSB_clear(err);
			VSB_cat(err, be->last_err);
		}
	}
	AZ(VSB_finish(err));
	if (t != NULL)
		t->verdict = v;

	want_body = 0;
	if (v == OM_HIT || v == OM_STALE) {
		AN(resp);
		p = om_meta(resp, M_STATUS);
		if (p != NULL && p->value_len == 3) {
			memcpy(digits, p->value, 3);
			digits[3] = '\0';
			status = (unsigned)strtoul(digits, NULL, 10);
			if (status < 100 || status > 999)
				status = 200;
		}
		p = om_meta(resp, M_REASON);
		if (p != NULL && om_valid_value(p->value, p->value_len))
			reason = WS_Printf(ctx->ws, "%.*s", (int)p->value_len,
			    (const char *)p->value);
		http_PutResponse(beresp, "HTTP/1.1", (uint16_t)status, reason);
		beresp->protover = 11;
		for (i = 0; i < resp->custom_count; i++) {
			p = &resp->custom[i];
			if (strncmp(p->name, M_HDR, 2) != 0 || p->name[2] == '\0' ||
			    !om_valid_value(p->value, p->value_len))
				continue;
			http_PrintfHeader(beresp, "%s: %.*s", p->name + 2,
			    (int)p->value_len, (const char *)p->value);
		}
		t_origin = t != NULL && t->has_times ? t->t_origin :
		    resp->meta.mtime_ns / 1e9;
		age = ctx->now - t_origin;
		http_PrintfHeader(beresp, "Age: %.0f", age > 0 ? floor(age) : 0.0);
		len = resp->length;
		http_PrintfHeader(beresp, "Content-Length: %ju", (uintmax_t)len);
		want_body = len > 0 && http_GetMethod(ctx->http_bereq) != NULL &&
		    strcmp(http_GetMethod(ctx->http_bereq), "HEAD") != 0;
		if (v == OM_HIT)
			CTR_INC(be, hit);
		else
			CTR_INC(be, stale);
		VSLb(bo->vsl, SLT_Debug, "objmapper %s: %s, %ju bytes, age %.0f",
		    be->vcl_name, om_verdict_name[v], (uintmax_t)len, age);
	} else {
		http_PutResponse(beresp, "HTTP/1.1", v == OM_ERROR ? 503 : 404, NULL);
		beresp->protover = 11;
		http_SetHeader(beresp, "Content-Length: 0");
		/* Never cached, even by a VCL that does not retry. */
		http_SetHeader(beresp, "Cache-Control: no-store");
		if (v == OM_MISS)
			CTR_INC(be, miss);
		if (v == OM_ERROR)
			om_errlog(be, bo->vsl, SLT_FetchError, "unavailable: %s",
			    VSB_data(err));
	}
	http_PrintfHeader(beresp, "X-Objmapper: %s", om_verdict_name[v]);
	VSB_destroy(&err);

	htc = WS_Alloc(bo->ws, sizeof *htc);
	if (htc == NULL) {
		VSLb(bo->vsl, SLT_FetchError,
		    "objmapper %s: out of workspace", be->vcl_name);
		objm_response_free(resp);
		return (-1);
	}
	INIT_OBJ(htc, HTTP_CONN_MAGIC);
	htc->doclose = SC_NULL;
	htc->content_length = want_body ? (ssize_t)len : 0;
	htc->body_status = want_body ? BS_LENGTH : BS_NONE;
	bo->htc = htc;
	if (!want_body) {
		objm_response_free(resp);
		return (0);
	}
	vfe = VFP_Push(bo->vfc, &om_body_vfp);
	if (vfe == NULL) {
		bo->htc = NULL;
		VSLb(bo->vsl, SLT_FetchError,
		    "objmapper %s: out of workspace for the body", be->vcl_name);
		objm_response_free(resp);
		return (-1);
	}
	ALLOC_OBJ(body, OM_BODY_MAGIC);
	AN(body);
	body->be = be;
	body->off = resp->offset;
	body->len = len;
	body->fd = objm_response_take_fd(resp);
	objm_response_free(resp);
	vfe->priv1 = body;
	return (0);
}

static void v_matchproto_(vdi_finish_f)
om_finish(VRT_CTX, VCL_BACKEND dir)
{
	(void)dir;
	CHECK_OBJ_NOTNULL(ctx->bo, BUSYOBJ_MAGIC);
	ctx->bo->htc = NULL;
}

static void v_matchproto_(vdi_event_f)
om_event(VCL_BACKEND dir, enum vcl_event_e ev)
{
	struct om_backend *be;

	CAST_OBJ_NOTNULL(be, dir->priv, OM_BACKEND_MAGIC);
	if (ev == VCL_EVENT_WARM)
		om_probe_start(be);
	else if (ev == VCL_EVENT_COLD)
		om_probe_stop(be);
}

static void v_matchproto_(vdi_list_f)
om_list(VRT_CTX, VCL_BACKEND dir, struct vsb *vsb, int pflag, int jflag)
{
	struct om_backend *be;
	int ok;

	(void)ctx;
	CAST_OBJ_NOTNULL(be, dir->priv, OM_BACKEND_MAGIC);
	ok = om_is_healthy(be);
	if (jflag && pflag) {
		VSB_printf(vsb, "{\"socket\": \"%s\", \"healthy\": %s}",
		    be->socket, ok ? "true" : "false");
	} else if (jflag) {
		VSB_printf(vsb, "\"%s\"", ok ? "healthy" : "sick");
	} else if (pflag) {
		VSB_printf(vsb, "\n\tsocket %s, %s\n", be->socket,
		    ok ? "healthy" : "sick");
	} else {
		VSB_cat(vsb, ok ? "healthy" : "sick");
	}
}

static const struct vdi_methods om_methods[1] = {{
	.magic =	VDI_METHODS_MAGIC,
	.type =		"objmapper",
	.healthy =	om_healthy,
	.gethdrs =	om_gethdrs,
	.finish =	om_finish,
	.event =	om_event,
	.list =		om_list,
}};

/*--------------------------------------------------------------------
 * The body of a hit: pread from the passed fd into Varnish's storage.
 */

static enum vfp_status v_matchproto_(vfp_pull_f)
om_body_pull(struct vfp_ctx *vc, struct vfp_entry *vfe, void *p, ssize_t *lp)
{
	struct om_body *b;
	uint64_t left;
	ssize_t n;

	CAST_OBJ_NOTNULL(b, vfe->priv1, OM_BODY_MAGIC);
	left = b->len - b->done;
	if ((uint64_t)*lp > left)
		*lp = (ssize_t)left;
	do {
		n = pread(b->fd, p, *lp, (off_t)(b->off + b->done));
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		*lp = 0;
		return (VFP_Error(vc, "objmapper: reading the object's fd: %s",
		    strerror(errno)));
	}
	if (n == 0 && *lp > 0) {
		*lp = 0;
		return (VFP_Error(vc, "objmapper: the object's fd ended after %ju "
		    "of %ju bytes", (uintmax_t)b->done, (uintmax_t)b->len));
	}
	*lp = n;
	b->done += n;
	CTR_ADD(b->be, bytes_out, n);
	return (b->done == b->len ? VFP_END : VFP_OK);
}

static void v_matchproto_(vfp_fini_f)
om_body_fini(struct vfp_ctx *vc, struct vfp_entry *vfe)
{
	struct om_body *b;

	(void)vc;
	if (vfe->priv1 == NULL)
		return;
	CAST_OBJ_NOTNULL(b, vfe->priv1, OM_BODY_MAGIC);
	vfe->priv1 = NULL;
	if (b->fd >= 0)
		closefd(&b->fd);
	FREE_OBJ(b);
}

static const struct vfp om_body_vfp = {
	.name = "objmapper_body",
	.pull = om_body_pull,
	.fini = om_body_fini,
};

/*--------------------------------------------------------------------
 * The store filter
 */

static const char * const om_hop_headers[] = {
	"Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
	"X-Objmapper", "Age", NULL,
};

static int
om_hop_header(const txt *t)
{
	int i;
	size_t l;

	for (i = 0; om_hop_headers[i] != NULL; i++) {
		l = strlen(om_hop_headers[i]);
		if ((size_t)(t->e - t->b) > l && t->b[l] == ':' &&
		    strncasecmp(t->b, om_hop_headers[i], l) == 0)
			return (1);
	}
	return (0);
}

/* Metadata pairs are kept in a vsb of NUL-separated names and values. */
struct om_pairs {
	objm_meta_pair_t	p[OBJM_MAX_CUSTOM_PAIRS];
	size_t			n;
};

static int
om_pair(struct om_pairs *ps, const char *name, const void *v, size_t len)
{
	if (ps->n >= OBJM_MAX_CUSTOM_PAIRS || strlen(name) > 255 || strlen(name) == 0)
		return (-1);
	ps->p[ps->n].name = name;
	ps->p[ps->n].value = v;
	ps->p[ps->n].value_len = len;
	ps->n++;
	return (0);
}

/* Why this response must not be stored, or NULL. */
static const char *
om_store_refusal(VRT_CTX, const struct vfp_ctx *vc)
{
	static const char * const cc_private[] = { "private", "no-store", NULL };
	static const char * const sc_nostore[] = { "no-store", NULL };
	const struct objcore *oc = vc->oc;
	const char *m;

	if (oc == NULL)
		return ("no object");
	if (oc->flags & (OC_F_PRIVATE | OC_F_HFM | OC_F_HFP))
		return ("Varnish does not cache it (pass, hit-for-miss or hit-for-pass)");
	if (ctx->bo != NULL && (ctx->bo->uncacheable || ctx->bo->was_304))
		return (ctx->bo->was_304 ? "a 304 revalidation" : "uncacheable");
	m = http_GetMethod(vc->req);
	if (m == NULL || strcmp(m, "GET") != 0)
		return ("not a GET");
	if (om_hdr_has(vc->resp, "Set-Cookie"))
		return ("it sets a cookie");
	if (om_hdr_directive(vc->resp, "Cache-Control", cc_private))
		return ("Cache-Control: private or no-store");
	if (om_hdr_directive(vc->resp, "Surrogate-Control", sc_nostore))
		return ("Surrogate-Control: no-store");
	return (NULL);
}

static enum vfp_status v_matchproto_(vfp_init_f)
om_store_init(VRT_CTX, struct vfp_ctx *vc, struct vfp_entry *vfe)
{
	struct om_backend *be;
	struct om_store *st;
	struct om_pairs *ps;
	struct vsb *key, *vary, *tags, *strs, *err;
	const struct objcore *oc;
	const char *why, *v, *e;
	objm_connection_t *c;
	objm_request_t req;
	objm_response_t *resp;
	struct vsl_log *vsl;
	double deadline, expiry, now;
	char status[4], nums[4][32];
	const txt *t;
	unsigned i;
	int reused, r;

	CHECK_OBJ_NOTNULL(ctx, VRT_CTX_MAGIC);
	CHECK_OBJ_NOTNULL(vc, VFP_CTX_MAGIC);
	CAST_OBJ_NOTNULL(be, TRUST_ME(vfe->vfp->priv1), OM_BACKEND_MAGIC);
	vsl = ctx->vsl;
	oc = vc->oc;

	if (http_GetHdr(vc->resp, "\014X-Objmapper:", &v))
		return (VFP_NULL);	/* our own answer */
	why = om_store_refusal(ctx, vc);
	if (why != NULL) {
		CTR_INC(be, store_uncacheable);
		VSLb(vsl, SLT_Debug, "objmapper %s: not storing: %s", be->vcl_name, why);
		return (VFP_NULL);
	}
	if (ctx->bo == NULL) {
		VSLb(vsl, SLT_Debug, "objmapper %s: not storing: no fetch", be->vcl_name);
		return (VFP_NULL);
	}
	now = VTIM_real();
	expiry = oc->t_origin + oc->ttl + oc->grace + oc->keep;
	if (oc->ttl + oc->grace + oc->keep <= 0 || expiry < now + 1) {
		CTR_INC(be, store_uncacheable);
		VSLb(vsl, SLT_Debug, "objmapper %s: not storing: expires in "
		    "%.1fs", be->vcl_name, expiry - now);
		return (VFP_NULL);
	}
	if (!om_is_healthy(be)) {
		CTR_INC(be, skipped);
		VSLb(vsl, SLT_Debug, "objmapper %s: not storing: sick", be->vcl_name);
		return (VFP_NULL);
	}

	key = VSB_new_auto();
	vary = VSB_new_auto();
	tags = VSB_new_auto();
	strs = VSB_new_auto();
	err = VSB_new_auto();
	ps = calloc(1, sizeof *ps);
	AN(key); AN(vary); AN(tags); AN(strs); AN(err); AN(ps);

	om_vary_list(vc->resp, vary);
	AZ(VSB_finish(vary));
	if (strcmp(VSB_data(vary), "*") == 0 || strstr(VSB_data(vary), ",*") ||
	    strncmp(VSB_data(vary), "*,", 2) == 0) {
		why = "Vary: *";
		goto refuse;
	}

	/* The pairs every stored object carries. */
	snprintf(status, sizeof status, "%03u", vc->resp->status % 1000);
	snprintf(nums[0], sizeof nums[0], "%.6f", oc->t_origin);
	snprintf(nums[1], sizeof nums[1], "%.3f", oc->ttl);
	snprintf(nums[2], sizeof nums[2], "%.3f", oc->grace);
	snprintf(nums[3], sizeof nums[3], "%.3f", oc->keep);
	r = om_pair(ps, M_STATUS, status, 3);
	r |= om_pair(ps, M_T_ORIGIN, nums[0], strlen(nums[0]));
	r |= om_pair(ps, M_TTL, nums[1], strlen(nums[1]));
	r |= om_pair(ps, M_GRACE, nums[2], strlen(nums[2]));
	r |= om_pair(ps, M_KEEP, nums[3], strlen(nums[3]));
	t = &vc->req->hd[HTTP_HDR_URL];
	r |= om_pair(ps, M_URL, t->b, t->e - t->b);
	if (http_GetHdr(vc->req, H_Host, &v))
		r |= om_pair(ps, M_HOST, v, strlen(v));
	(void)om_hdr_join(vc->resp, be->tag_header, tags);
	AZ(VSB_finish(tags));
	if (VSB_len(tags) > 0)
		r |= om_pair(ps, M_TAGS, VSB_data(tags), VSB_len(tags));

	deadline = VTIM_mono() + be->timeout;
	c = om_conn_get(be, deadline, &reused, err);
	if (c == NULL) {
		om_set_health(be, 0);
		why = NULL;
		goto fail;
	}
	memset(&req, 0, sizeof req);
	req.expires_at = (uint64_t)ceil(expiry);

	om_base_key(be, ctx->bo->digest, key);
	if (VSB_len(vary) > 0) {
		/*
		 * The marker first: the bare key names the varied headers, so a
		 * lookup knows which variant to ask for. It carries the URL, host
		 * and tags too, so bans remove it with its variants.
		 */
		AZ(VSB_finish(key));
		req.op = OBJM_OP_PUT;
		req.mode = OBJM_MODE_COPY;
		req.uri = VSB_data(key);
		req.uri_len = VSB_len(key);
		r |= om_pair(ps, M_VARY, VSB_data(vary), VSB_len(vary));
		req.custom = ps->p;
		req.custom_count = ps->n;
		if (r != 0) {
			why = "too many metadata pairs";
			om_conn_put(be, c);
			goto refuse;
		}
		if (om_call(be, &c, &req, deadline, &resp, err) != 0)
			goto fail;
		if (resp->status != OBJM_STATUS_OK) {
			VSB_printf(err, "PUT of the Vary marker: %s: %s",
			    objm_status_name(resp->status), resp->message);
			objm_response_free(resp);
			om_conn_put(be, c);
			goto fail;
		}
		objm_response_free(resp);
		ps->n--;	/* the variant itself is no marker */
		VSB_clear(key);
		om_base_key(be, ctx->bo->digest, key);
		if (om_variant(vc->req, VSB_data(vary), key) != 0) {
			why = "Vary: *";
			om_conn_put(be, c);
			goto refuse;
		}
	}
	AZ(VSB_finish(key));
	if (VSB_len(key) > OM_KEY_MAX) {
		why = "the variant's key is over objmapper's key limit";
		om_conn_put(be, c);
		goto refuse;
	}

	/* The response: status line and headers, minus those of one transfer. */
	t = &vc->resp->hd[HTTP_HDR_REASON];
	if (t->b != NULL)
		r |= om_pair(ps, M_REASON, t->b, t->e - t->b);
	for (i = HTTP_HDR_FIRST; i < vc->resp->nhd; i++) {
		t = &vc->resp->hd[i];
		if (t->b == NULL || om_hop_header(t))
			continue;
		e = memchr(t->b, ':', t->e - t->b);
		if (e == NULL || e == t->b || e - t->b > 253)
			continue;
		VSB_clear(strs);
		VSB_cat(strs, M_HDR);
		VSB_bcat(strs, t->b, e - t->b);
		AZ(VSB_finish(strs));
		for (v = e + 1; v < t->e && (*v == ' ' || *v == '\t'); v++)
			continue;
		/* The names must outlive this loop: copy them to the workspace. */
		r |= om_pair(ps, WS_Copy(ctx->ws, VSB_data(strs), -1) ?: "",
		    v, t->e - v);
	}
	if (r != 0) {
		why = "too many headers, or out of workspace";
		om_conn_put(be, c);
		goto refuse;
	}
	req.op = OBJM_OP_PUT;
	req.mode = OBJM_MODE_FDPASS;
	req.uri = VSB_data(key);
	req.uri_len = VSB_len(key);
	req.length = vc->resp != NULL && http_GetHdr(vc->resp, H_Content_Length, &v) ?
	    strtoull(v, NULL, 10) : 0;
	req.custom = ps->p;
	req.custom_count = ps->n;
	if (http_GetHdr(vc->resp, H_Content_Type, &v) && strlen(v) <= 255)
		req.content_type = v;
	if (om_call(be, &c, &req, deadline, &resp, err) != 0)
		goto fail;
	if (resp->status != OBJM_STATUS_OK || resp->fd < 0) {
		VSB_printf(err, "PUT: %s: %s", objm_status_name(resp->status),
		    resp->message);
		objm_response_free(resp);
		om_conn_put(be, c);
		goto fail;
	}
	ALLOC_OBJ(st, OM_STORE_MAGIC);
	AN(st);
	st->be = be;
	st->conn = c;
	st->handle = resp->handle;
	st->fd = objm_response_take_fd(resp);
	st->vsl = vsl;
	objm_response_free(resp);
	vfe->priv1 = st;
	VSB_destroy(&key); VSB_destroy(&vary); VSB_destroy(&tags);
	VSB_destroy(&strs); VSB_destroy(&err);
	free(ps);
	return (VFP_OK);

  refuse:
	AZ(VSB_finish(err));
	CTR_INC(be, store_uncacheable);
	VSLb(vsl, SLT_Debug, "objmapper %s: not storing: %s", be->vcl_name, why);
	goto out;
  fail:
	CTR_INC(be, store_abort);
	CTR_INC(be, error);
	AZ(VSB_finish(err));
	om_errlog(be, vsl, SLT_FetchError, "not storing: %s", VSB_data(err));
  out:
	VSB_destroy(&key); VSB_destroy(&vary); VSB_destroy(&tags);
	VSB_destroy(&strs);
	VSB_destroy(&err);
	free(ps);
	return (VFP_NULL);
}

/* Writes all of buf to the staging fd; -1 on failure. */
static int
om_write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return (-1);
		buf += n;
		len -= n;
	}
	return (0);
}

static void
om_store_end(struct om_store *st, int commit)
{
	struct om_backend *be = st->be;
	objm_request_t req;
	objm_response_t *resp;
	struct vsb *err = VSB_new_auto();
	double deadline = VTIM_mono() + be->timeout;

	AN(err);
	if (st->fd >= 0)
		closefd(&st->fd);
	if (st->conn == NULL)
		goto out;
	memset(&req, 0, sizeof req);
	req.op = commit ? OBJM_OP_COMMIT : OBJM_OP_ABORT;
	req.handle = st->handle;
	req.length = st->written;
	if (om_call(be, &st->conn, &req, deadline, &resp, err) != 0) {
		commit = 0;
		goto out;
	}
	if (resp->status != OBJM_STATUS_OK) {
		if (commit)
			VSB_printf(err, "COMMIT: %s: %s",
			    objm_status_name(resp->status), resp->message);
		commit = 0;
	}
	objm_response_free(resp);
	om_conn_put(be, st->conn);
	st->conn = NULL;
  out:
	AZ(VSB_finish(err));
	if (commit) {
		CTR_INC(be, store);
		CTR_ADD(be, bytes_in, st->written);
	} else {
		CTR_INC(be, store_abort);
		if (VSB_len(err) > 0)
			om_errlog(be, st->vsl, SLT_FetchError, "not stored: %s",
			    VSB_data(err));
	}
	VSB_destroy(&err);
}

static enum vfp_status v_matchproto_(vfp_pull_f)
om_store_pull(struct vfp_ctx *vc, struct vfp_entry *vfe, void *p, ssize_t *lp)
{
	struct om_store *st;
	enum vfp_status vs;

	CAST_OBJ_NOTNULL(st, vfe->priv1, OM_STORE_MAGIC);
	vs = VFP_Suck(vc, p, lp);
	if (st->failed)
		return (vs);
	if ((vs == VFP_OK || vs == VFP_END) && *lp > 0) {
		if (om_write_all(st->fd, p, *lp) != 0) {
			om_errlog(st->be, st->vsl, SLT_FetchError,
			    "not stored: writing the staging fd: %s", strerror(errno));
			st->failed = 1;
			om_store_end(st, 0);
			return (vs);
		}
		st->written += *lp;
	}
	if (vs == VFP_END) {
		st->failed = 1;		/* done either way */
		om_store_end(st, 1);
	} else if (vs == VFP_ERROR) {
		st->failed = 1;
		om_store_end(st, 0);
		om_errlog(st->be, st->vsl, SLT_FetchError,
		    "not stored: the fetch failed, PUT aborted");
	}
	return (vs);
}

static void v_matchproto_(vfp_fini_f)
om_store_fini(struct vfp_ctx *vc, struct vfp_entry *vfe)
{
	struct om_store *st;

	(void)vc;
	if (vfe->priv1 == NULL)
		return;
	CAST_OBJ_NOTNULL(st, vfe->priv1, OM_STORE_MAGIC);
	vfe->priv1 = NULL;
	if (!st->failed)
		om_store_end(st, 0);	/* the fetch stopped before its end */
	if (st->fd >= 0)
		closefd(&st->fd);
	if (st->conn != NULL)
		objm_client_destroy(st->conn);	/* drops any staged PUT */
	FREE_OBJ(st);
}

/*--------------------------------------------------------------------
 * The VCL object
 */

static const char * const om_builtin_filters[] = {
	"esi", "esi_gzip", "gzip", "gunzip", "testgunzip", "range", NULL,
};

static void
om_free(struct om_backend *be)
{
	int i;

	for (i = 0; i < be->npool; i++)
		objm_client_destroy(be->pool[i]);
	if (be->vsc_seg != NULL)
		VSC_objmapper_Destroy(&be->vsc_seg);
	PTOK(pthread_mutex_destroy(&be->mtx));
	PTOK(pthread_mutex_destroy(&be->probe_mtx));
	PTOK(pthread_cond_destroy(&be->probe_cond));
	free(be->vcl_name);
	free(be->socket);
	free(be->prefix);
	free(be->tag_header);
	FREE_OBJ(be);
}

VCL_VOID
vmod_backend__init(VRT_CTX, struct vmod_objmapper_backend **bep,
    const char *vcl_name, VCL_STRING socket, VCL_STRING prefix,
    VCL_DURATION timeout, VCL_DURATION probe_interval, VCL_STRING tag_header)
{
	struct om_backend *be;
	const char *err;
	size_t l;
	int i;

	CHECK_OBJ_NOTNULL(ctx, VRT_CTX_MAGIC);
	AN(bep);
	AZ(*bep);
	if (socket == NULL || *socket == '\0') {
		VRT_fail(ctx, "objmapper.backend %s: socket is empty; pass the "
		    "daemon's Unix socket path, e.g. "
		    "socket=\"/run/objmapper/objmapper.sock\"", vcl_name);
		return;
	}
	if (strlen(socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		VRT_fail(ctx, "objmapper.backend %s: socket path %s is longer "
		    "than a Unix socket path may be", vcl_name, socket);
		return;
	}
	if (prefix == NULL)
		prefix = "";
	if (strlen(prefix) > 1024) {
		VRT_fail(ctx, "objmapper.backend %s: prefix is over 1024 bytes",
		    vcl_name);
		return;
	}
	if (!(timeout > 0) || timeout > 60) {
		VRT_fail(ctx, "objmapper.backend %s: timeout must be above 0 and "
		    "at most 60s, not %.3f", vcl_name, timeout);
		return;
	}
	if (!(probe_interval >= 0.01) || probe_interval > 3600) {
		VRT_fail(ctx, "objmapper.backend %s: probe_interval must be "
		    "between 0.01s and 1h, not %.3f", vcl_name, probe_interval);
		return;
	}
	l = tag_header == NULL ? 0 : strlen(tag_header);
	if (l == 0 || l > 100 || strpbrk(tag_header, ": \t\r\n") != NULL) {
		VRT_fail(ctx, "objmapper.backend %s: tag_header must be a header "
		    "name (1 to 100 bytes, no colon or space)", vcl_name);
		return;
	}
	for (i = 0; om_builtin_filters[i] != NULL; i++)
		if (strcmp(vcl_name, om_builtin_filters[i]) == 0) {
			VRT_fail(ctx, "objmapper.backend: the object is named %s, "
			    "which is a built-in fetch filter; its store filter "
			    "takes the object's name, so pick another name",
			    vcl_name);
			return;
		}

	ALLOC_OBJ(be, OM_BACKEND_MAGIC);
	AN(be);
	be->vcl_name = strdup(vcl_name);
	be->socket = strdup(socket);
	be->prefix = strdup(prefix);
	be->tag_header = strdup(tag_header);
	AN(be->vcl_name); AN(be->socket); AN(be->prefix); AN(be->tag_header);
	be->timeout = timeout;
	be->probe_interval = probe_interval;
	PTOK(pthread_mutex_init(&be->mtx, NULL));
	PTOK(pthread_mutex_init(&be->probe_mtx, NULL));
	PTOK(pthread_cond_init(&be->probe_cond, NULL));
	be->changed = VTIM_real();

	be->vsc = VSC_objmapper_New(NULL, &be->vsc_seg, "%s.%s",
	    VCL_Name(ctx->vcl), vcl_name);
	if (be->vsc == NULL) {
		VRT_fail(ctx, "objmapper.backend %s: cannot create its counters",
		    vcl_name);
		om_free(be);
		return;
	}

	/* A first verdict before any fetch, bounded by the timeout. */
	{
		objm_connection_t *c = NULL;
		(void)om_probe_once(be, &c);
		if (c != NULL)
			objm_client_destroy(c);
	}

	be->vfp.name = be->vcl_name;
	be->vfp.init = om_store_init;
	be->vfp.pull = om_store_pull;
	be->vfp.fini = om_store_fini;
	be->vfp.priv1 = be;
	err = VRT_AddFilter(ctx, &be->vfp, NULL);
	if (err != NULL) {
		VRT_fail(ctx, "objmapper.backend %s: cannot add its store filter: %s",
		    vcl_name, err);
		om_free(be);
		return;
	}
	be->dir = VRT_AddDirector(ctx, om_methods, be, "%s", vcl_name);
	if (be->dir == NULL) {
		VRT_RemoveFilter(ctx, &be->vfp, NULL);
		VRT_fail(ctx, "objmapper.backend %s: Varnish refused the director",
		    vcl_name);
		om_free(be);
		return;
	}
	*bep = (struct vmod_objmapper_backend *)be;
}

VCL_VOID
vmod_backend__fini(struct vmod_objmapper_backend **bep)
{
	struct om_backend *be;

	if (bep == NULL || *bep == NULL)
		return;
	CAST_OBJ_NOTNULL(be, (void *)*bep, OM_BACKEND_MAGIC);
	*bep = NULL;
	om_probe_stop(be);
	VRT_DelDirector(&be->dir);
	/*
	 * The store filter is not removed here: there is no context to do it with.
	 * Varnish drops a VCL's filters with the VCL, after its objects are gone,
	 * and no fetch of a discarded VCL can run.
	 */
	om_free(be);
}

static struct om_backend *
om_be(struct vmod_objmapper_backend *o)
{
	struct om_backend *be;

	CAST_OBJ_NOTNULL(be, (void *)o, OM_BACKEND_MAGIC);
	return (be);
}

VCL_BACKEND
vmod_backend_backend(VRT_CTX, struct vmod_objmapper_backend *o)
{
	(void)ctx;
	return (om_be(o)->dir);
}

VCL_VOID
vmod_backend_restore(VRT_CTX, struct vmod_objmapper_backend *o)
{
	struct om_backend *be = om_be(o);
	struct objcore *oc;
	struct om_task *t;

	CHECK_OBJ_NOTNULL(ctx, VRT_CTX_MAGIC);
	if (ctx->bo == NULL || ctx->method != VCL_MET_BACKEND_RESPONSE) {
		VRT_fail(ctx, "objmapper %s.restore() is for vcl_backend_response",
		    be->vcl_name);
		return;
	}
	if (ctx->bo->director_resp != be->dir)
		return;
	t = om_task(ctx, be);
	if (t == NULL || (t->verdict != OM_HIT && t->verdict != OM_STALE) ||
	    !t->has_times)
		return;
	oc = ctx->bo->fetch_objcore;
	CHECK_OBJ_NOTNULL(oc, OBJCORE_MAGIC);
	oc->t_origin = t->t_origin;
	oc->ttl = (float)t->ttl;
	oc->grace = (float)t->grace;
	oc->keep = (float)t->keep;
	VSLb(ctx->vsl, SLT_TTL, "VCL %.0f %.0f %.0f %.0f %s (objmapper restore)",
	    oc->ttl, oc->grace, oc->keep, oc->t_origin,
	    ctx->bo->uncacheable ? "uncacheable" : "cacheable");
}

/*
 * Sends a ban to objmapper: `cond`, restricted to this object's prefix. Logged and
 * counted either way; false if objmapper did not take it.
 */
static VCL_BOOL
om_send_ban(VRT_CTX, struct om_backend *be, struct vsb *cond)
{
	struct vsb *expr = VSB_new_auto(), *err = VSB_new_auto();
	objm_request_t req;
	int status, r;

	AN(expr);
	AN(err);
	AZ(VSB_finish(cond));
	VSB_cat(expr, VSB_data(cond));
	if (*be->prefix != '\0') {
		if (VSB_len(expr) > 0)
			VSB_cat(expr, " && ");
		VSB_cat(expr, "key ^ ");
		om_ban_quote(expr, be->prefix, strlen(be->prefix));
	}
	AZ(VSB_finish(expr));
	if (VSB_len(expr) == 0 || VSB_len(expr) > OM_KEY_MAX) {
		VRT_fail(ctx, "objmapper %s: the ban expression is %s", be->vcl_name,
		    VSB_len(expr) == 0 ? "empty" : "over 4096 bytes");
		VSB_destroy(&expr);
		VSB_destroy(&err);
		return (0);
	}
	memset(&req, 0, sizeof req);
	req.op = OBJM_OP_BAN;
	req.uri = VSB_data(expr);
	req.uri_len = VSB_len(expr);
	r = om_simple(be, &req, err, &status);
	AZ(VSB_finish(err));
	CTR_INC(be, purge);
	if (r != 0) {
		CTR_INC(be, purge_fail);
		VSLb(ctx->vsl, SLT_VCL_Error, "objmapper %s: ban %s failed: %s",
		    be->vcl_name, VSB_data(expr), VSB_data(err));
	} else {
		VSLb(ctx->vsl, SLT_VCL_Log, "objmapper %s: ban %s", be->vcl_name,
		    VSB_data(expr));
	}
	VSB_destroy(&expr);
	VSB_destroy(&err);
	return (r == 0);
}

VCL_BOOL
vmod_backend_purge(VRT_CTX, struct vmod_objmapper_backend *o)
{
	struct om_backend *be = om_be(o);
	struct vsb *key, *cond;
	VCL_BOOL r;

	CHECK_OBJ_NOTNULL(ctx, VRT_CTX_MAGIC);
	if (ctx->req == NULL || !(ctx->method & (VCL_MET_PURGE | VCL_MET_HIT |
	    VCL_MET_MISS | VCL_MET_PASS | VCL_MET_DELIVER))) {
		VRT_fail(ctx, "objmapper %s.purge() needs the request's hash: call "
		    "it in vcl_purge (or vcl_hit, vcl_miss)", be->vcl_name);
		return (0);
	}
	/*
	 * Every key of the request starts with prefix + its hash (64 hex digits,
	 * always the same length): the object, or the Vary marker and its variants.
	 */
	key = VSB_new_auto();
	cond = VSB_new_auto();
	AN(key);
	AN(cond);
	om_base_key(be, ctx->req->digest, key);
	AZ(VSB_finish(key));
	VSB_cat(cond, "key ^ ");
	om_ban_quote(cond, VSB_data(key), VSB_len(key));
	VSB_destroy(&key);
	r = om_send_ban(ctx, be, cond);
	VSB_destroy(&cond);
	return (r);
}

/*
 * Bans `field op "value"` (and, if `host` is not empty, `meta.host == "host"`) in
 * objmapper; `what` names the VCL method for the refusal of an empty value.
 */
static VCL_BOOL
om_ban_field(VRT_CTX, struct om_backend *be, const char *what, const char *field_op,
    VCL_STRING value, VCL_STRING host, int empty_ok)
{
	struct vsb *cond;
	VCL_BOOL r;

	if (value == NULL)
		value = "";
	if (!empty_ok && *value == '\0') {
		VRT_fail(ctx, "objmapper %s.%s(): the %s is empty", be->vcl_name,
		    what, strcmp(what, "ban_tag") == 0 ? "tag" : "regex");
		return (0);
	}
	cond = VSB_new_auto();
	AN(cond);
	VSB_cat(cond, field_op);
	om_ban_quote(cond, value, strlen(value));
	if (host != NULL && *host != '\0') {
		VSB_cat(cond, " && meta.host == ");
		om_ban_quote(cond, host, strlen(host));
	}
	r = om_send_ban(ctx, be, cond);
	VSB_destroy(&cond);
	return (r);
}

VCL_BOOL
vmod_backend_purge_url(VRT_CTX, struct vmod_objmapper_backend *o,
    VCL_STRING prefix, VCL_STRING host)
{
	return (om_ban_field(ctx, om_be(o), "purge_url", "meta.url ^ ", prefix,
	    host, 1));
}

VCL_BOOL
vmod_backend_ban_url(VRT_CTX, struct vmod_objmapper_backend *o,
    VCL_STRING regex, VCL_STRING host)
{
	return (om_ban_field(ctx, om_be(o), "ban_url", "meta.url ~ ", regex, host, 0));
}

VCL_BOOL
vmod_backend_ban_tag(VRT_CTX, struct vmod_objmapper_backend *o, VCL_STRING tag)
{
	struct om_backend *be = om_be(o);

	if (tag != NULL && strpbrk(tag, " ,\t") != NULL) {
		VRT_fail(ctx, "objmapper %s.ban_tag(): a tag is one token, not \"%s\"",
		    be->vcl_name, tag);
		return (0);
	}
	return (om_ban_field(ctx, be, "ban_tag", "meta.tags has ", tag, NULL, 0));
}

VCL_BOOL
vmod_backend_ban(VRT_CTX, struct vmod_objmapper_backend *o, VCL_STRING expr)
{
	struct om_backend *be = om_be(o);
	struct vsb *cond = VSB_new_auto();
	VCL_BOOL r;

	AN(cond);
	if (expr == NULL || *expr == '\0') {
		VRT_fail(ctx, "objmapper %s.ban(): the expression is empty",
		    be->vcl_name);
		VSB_destroy(&cond);
		return (0);
	}
	VSB_cat(cond, expr);
	r = om_send_ban(ctx, be, cond);
	VSB_destroy(&cond);
	return (r);
}

VCL_BOOL
vmod_backend_delete(VRT_CTX, struct vmod_objmapper_backend *o, VCL_STRING key)
{
	struct om_backend *be = om_be(o);
	struct vsb *err = VSB_new_auto();
	objm_request_t req;
	int status, r;

	AN(err);
	if (key == NULL || *key == '\0' || strlen(key) > OM_KEY_MAX) {
		VRT_fail(ctx, "objmapper %s.delete(): the key must be 1 to 4096 bytes",
		    be->vcl_name);
		VSB_destroy(&err);
		return (0);
	}
	memset(&req, 0, sizeof req);
	req.op = OBJM_OP_DELETE;
	req.uri = key;
	req.uri_len = strlen(key);
	r = om_simple(be, &req, err, &status);
	AZ(VSB_finish(err));
	CTR_INC(be, purge);
	if (r != 0 && status == OBJM_STATUS_NOT_FOUND)
		r = 0;		/* gone either way */
	if (r != 0) {
		CTR_INC(be, purge_fail);
		VSLb(ctx->vsl, SLT_VCL_Error, "objmapper %s: delete failed: %s",
		    be->vcl_name, VSB_data(err));
	}
	VSB_destroy(&err);
	return (r == 0);
}
