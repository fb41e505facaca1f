/*
 * http.c: the read-only HTTP status API (see http.h, docs/http-api.md).
 *
 * libmicrohttpd with one internal polling thread: every handler only
 * copies an engine snapshot or reads at most AUDIT_EVENTS_MAX audit rows,
 * so serving requests one at a time keeps the station's two cores for the
 * boards and bounds what a flood of requests can take.  Sockets, header
 * sizes and connection counts are bounded by MHD options; what reaches a
 * handler is checked here before any of it is used: the method (GET and
 * HEAD only), no request body, the path length, the query arguments each
 * route accepts, and every number with strtoll and a range.
 *
 * Routes are one table; a route either matches its path exactly or is a
 * prefix followed by one path segment (a slot number, a device ID).
 * Every endpoint but /healthz needs "Authorization: Bearer <token>", the
 * token read from [http] token_file at start, compared in constant time
 * and wiped at stop.  JSON is built with jansson, never pasted.
 */
#include "ui/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>

#include "db/audit.h"
#include "station/buf.h"
#include "station/config.h"
#include "station/devid.h"
#include "station/engine.h"
#include "station/err.h"
#include "station/fsutil.h"
#include "station/log.h"

/* Longest path we route; every real one is far shorter. */
#define HTTP_MAX_PATH 256
/* Headers and request line must fit in this per connection (MHD answers
 * 431/414 itself beyond it). */
#define HTTP_CONN_MEMORY (16 * 1024)
#define HTTP_CONN_TIMEOUT_S 10
/* The token: one line of 16..256 visible characters. */
#define HTTP_TOKEN_MIN 16
#define HTTP_TOKEN_MAX 256
#define HTTP_TOKEN_FILE_MAX 4096
#define HTTP_PEM_MAX (256 * 1024)
/* /metrics is a few KiB; the cap only stops a bug from growing it. */
#define HTTP_METRICS_MAX (256 * 1024)
#define HTTP_EVENTS_DEFAULT 100

struct http {
	struct MHD_Daemon *d;
	struct engine *engine;
	struct audit *audit;
	const struct config *cfg;
	/* Zero-padded to the maximum so the comparison always covers the
	 * same bytes whatever length is presented. */
	unsigned char token[HTTP_TOKEN_MAX];
	size_t token_len;
	uint8_t *tls_cert, *tls_key;
	size_t tls_cert_len, tls_key_len;
};

/* One request as the handlers see it. */
struct http_req {
	struct http *h;
	struct MHD_Connection *c;
	const char *arg;	/* the path segment after a prefix route */
};

/* What a handler produces: a JSON body or a text body, and a status. */
struct http_reply {
	unsigned int status;
	json_t *json;		/* owned */
	struct buf text;	/* used when json is NULL */
	const char *content_type;
};

typedef int (*http_handler)(struct http_req *rq, struct http_reply *rp);

static int http_healthz(struct http_req *, struct http_reply *);
static int http_status(struct http_req *, struct http_reply *);
static int http_slots(struct http_req *, struct http_reply *);
static int http_slot(struct http_req *, struct http_reply *);
static int http_device(struct http_req *, struct http_reply *);
static int http_events(struct http_req *, struct http_reply *);
static int http_metrics(struct http_req *, struct http_reply *);

static const char *const http_args_none[] = { NULL };
static const char *const http_args_events[] = { "since", "limit", NULL };

static const struct http_route {
	const char *path;	/* exact, or a prefix ending in '/' */
	int segment;		/* 1: path is a prefix + one segment */
	int auth;
	const char *const *args;	/* query arguments allowed */
	http_handler fn;
} http_routes[] = {
	{ "/healthz", 0, 0, http_args_none, http_healthz },
	{ "/metrics", 0, 1, http_args_none, http_metrics },
	{ "/api/v1/status", 0, 1, http_args_none, http_status },
	{ "/api/v1/slots", 0, 1, http_args_none, http_slots },
	{ "/api/v1/slots/", 1, 1, http_args_none, http_slot },
	{ "/api/v1/devices/", 1, 1, http_args_none, http_device },
	{ "/api/v1/events", 0, 1, http_args_events, http_events },
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- replies ----------------------------------------------------------- */

static int64_t
http_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * A JSON string for text that should be ASCII but came from a board or a
 * file: when jansson refuses it (not UTF-8), bytes outside printable ASCII
 * become '?' so the reply stays parseable.  NULL and "" give JSON null
 * when null_empty is set.
 */
static json_t *
http_jstr(const char *s, int null_empty)
{
	json_t *j;
	char *fix;
	size_t i, n;

	if (s == NULL || (null_empty && s[0] == '\0'))
		return json_null();
	n = strlen(s);
	if ((j = json_stringn(s, n)) != NULL)
		return j;
	if ((fix = malloc(n + 1)) == NULL)
		return NULL;
	for (i = 0; i < n; i++)
		fix[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	j = json_stringn(fix, n);
	free(fix);
	return j;
}

/*
 * Set o[key] = v, taking v.  Returns 0 or KL_ERR_NOMEM; a NULL v (failed
 * allocation) is an error, and v is released either way.
 */
static int
http_set(json_t *o, const char *key, json_t *v)
{
	if (v == NULL)
		return KL_ERR_NOMEM;
	return json_object_set_new(o, key, v) == 0 ? 0 : KL_ERR_NOMEM;
}

static int
http_error(struct http_reply *rp, unsigned int status, const char *code,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int
http_error(struct http_reply *rp, unsigned int status, const char *code,
    const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_decref(rp->json);
	rp->status = status;
	rp->json = json_pack("{s:{s:i, s:s, s:o}}", "error", "status",
	    (int)status, "code", code, "message", http_jstr(msg, 0));
	return rp->json != NULL ? 0 : KL_ERR_NOMEM;
}

static enum MHD_Result
http_queue(struct MHD_Connection *c, struct http_reply *rp, int auth_fail,
    int bad_method)
{
	struct MHD_Response *resp = NULL;
	enum MHD_Result ret;
	char *body = NULL;
	size_t len;

	if (rp->json != NULL) {
		body = json_dumps(rp->json, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (body == NULL)
			return MHD_NO;
		len = strlen(body);
		/* json_dumps allocates with malloc (jansson's default). */
		resp = MHD_create_response_from_buffer(len, body,
		    MHD_RESPMEM_MUST_FREE);
		if (resp == NULL)
			free(body);
	} else {
		resp = MHD_create_response_from_buffer(rp->text.len,
		    rp->text.data, MHD_RESPMEM_MUST_COPY);
	}
	if (resp == NULL)
		return MHD_NO;
	(void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	    rp->content_type != NULL ? rp->content_type : "application/json");
	(void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
	    "no-store");
	(void)MHD_add_response_header(resp, "X-Content-Type-Options",
	    "nosniff");
	if (auth_fail)
		(void)MHD_add_response_header(resp,
		    MHD_HTTP_HEADER_WWW_AUTHENTICATE,
		    "Bearer realm=\"keyline\"");
	if (bad_method)
		(void)MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
		    "GET, HEAD");
	ret = MHD_queue_response(c, rp->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- request checks ---------------------------------------------------- */

static int
http_authorized(struct http *h, struct MHD_Connection *c)
{
	static const char scheme[] = "Bearer ";
	unsigned char given[HTTP_TOKEN_MAX];
	const char *v;
	size_t n;
	int ok;

	v = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_AUTHORIZATION);
	if (v == NULL || strncasecmp(v, scheme, sizeof(scheme) - 1) != 0)
		return 0;
	v += sizeof(scheme) - 1;
	n = strlen(v);
	if (n == 0 || n > HTTP_TOKEN_MAX)
		return 0;
	/* Same bytes compared whatever was sent: only the length, which is
	 * bounded by a public maximum, can show in the timing. */
	memset(given, 0, sizeof(given));
	memcpy(given, v, n);
	ok = CRYPTO_memcmp(given, h->token, sizeof(given)) == 0 &&
	    n == h->token_len;
	OPENSSL_cleanse(given, sizeof(given));
	return ok;
}

struct http_argcheck {
	const char *const *allowed;
	const char *bad;	/* first argument not allowed (borrowed) */
	int count;
};

static enum MHD_Result
http_arg_cb(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	struct http_argcheck *ac = cls;
	size_t i;

	(void)kind;
	(void)value;
	ac->count++;
	for (i = 0; ac->allowed[i] != NULL; i++)
		if (strcmp(key, ac->allowed[i]) == 0)
			return MHD_YES;
	if (ac->bad == NULL)
		ac->bad = key;
	return MHD_YES;
}

/*
 * A query argument as a number in min..max: 0 and *out; KL_ERR_NOT_FOUND
 * when absent; KL_ERR_INVALID (digits only, no sign, no spaces).
 */
static int
http_arg_num(struct MHD_Connection *c, const char *name, long long min,
    long long max, long long *out)
{
	const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
	    name);
	char *end = NULL;
	long long n;

	if (v == NULL)
		return KL_ERR_NOT_FOUND;
	if (v[0] < '0' || v[0] > '9' || strlen(v) > 19)
		return KL_ERR_INVALID;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno != 0 || end == NULL || *end != '\0' || n < min || n > max)
		return KL_ERR_INVALID;
	*out = n;
	return 0;
}

static const struct http_route *
http_route_find(const char *path, const char **arg)
{
	size_t i, n;

	for (i = 0; i < NELEM(http_routes); i++) {
		const struct http_route *r = &http_routes[i];

		if (!r->segment) {
			if (strcmp(path, r->path) == 0) {
				*arg = NULL;
				return r;
			}
			continue;
		}
		n = strlen(r->path);
		if (strncmp(path, r->path, n) == 0 && path[n] != '\0' &&
		    strchr(path + n, '/') == NULL) {
			*arg = path + n;
			return r;
		}
	}
	return NULL;
}

static int
http_has_body(struct MHD_Connection *c)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_CONTENT_LENGTH);

	if (MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL)
		return 1;
	return cl != NULL && strspn(cl, "0") != strlen(cl);
}

/*
 * Called by MHD at least twice per request: first with the headers only,
 * then (after any body) to answer.  A wrong method or a body is answered
 * on the first call, before any body is read, so none is ever buffered
 * (MHD then closes that connection).  Everything else is answered on the
 * second call: an answer queued on the first one would also close the
 * connection, and keep-alive matters to a poller.
 */
static enum MHD_Result
http_access(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct http *h = cls;
	struct http_req rq = { h, c, NULL };
	struct http_reply rp;
	struct http_argcheck ac;
	const struct http_route *route;
	enum MHD_Result ret;
	int r, auth_fail = 0, bad_method = 0;

	static int first_seen;

	(void)version;
	(void)upload_data;
	memset(&rp, 0, sizeof(rp));
	buf_init(&rp.text, HTTP_METRICS_MAX);
	rp.status = MHD_HTTP_OK;

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
		bad_method = 1;
		r = http_error(&rp, MHD_HTTP_METHOD_NOT_ALLOWED,
		    "method_not_allowed", "read-only API: GET and HEAD only");
		goto reply;
	}
	if (http_has_body(c) || *upload_data_size > 0) {
		/* Not consumed: MHD closes the connection after the answer. */
		r = http_error(&rp, MHD_HTTP_CONTENT_TOO_LARGE,
		    "body_not_allowed", "requests must not carry a body");
		goto reply;
	}
	if (*con_cls == NULL) {
		*con_cls = &first_seen;
		buf_free(&rp.text);
		return MHD_YES;
	}
	if (strnlen(url, HTTP_MAX_PATH + 1) > HTTP_MAX_PATH) {
		r = http_error(&rp, MHD_HTTP_URI_TOO_LONG, "path_too_long",
		    "path longer than %d bytes", HTTP_MAX_PATH);
		goto reply;
	}
	route = http_route_find(url, &rq.arg);
	/* Unknown paths need the token too: without it, the route table
	 * is not for probing. */
	if ((route == NULL || route->auth) && !http_authorized(h, c)) {
		auth_fail = 1;
		r = http_error(&rp, MHD_HTTP_UNAUTHORIZED, "unauthorized",
		    "a valid bearer token is required");
		goto reply;
	}
	if (route == NULL) {
		r = http_error(&rp, MHD_HTTP_NOT_FOUND, "not_found",
		    "no such endpoint");
		goto reply;
	}
	memset(&ac, 0, sizeof(ac));
	ac.allowed = route->args;
	(void)MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, http_arg_cb,
	    &ac);
	if (ac.bad != NULL) {
		r = http_error(&rp, MHD_HTTP_BAD_REQUEST, "bad_argument",
		    "unknown query argument '%.64s'", ac.bad);
		goto reply;
	}
	r = route->fn(&rq, &rp);
	if (r != 0) {
		log_warn("http: %s: %s", url, kl_strerror(r));
		r = http_error(&rp, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
		    "%s", kl_strerror(r));
	}
 reply:
	ret = r == 0 ? http_queue(c, &rp, auth_fail, bad_method) : MHD_NO;
	json_decref(rp.json);
	buf_free(&rp.text);
	return ret;
}

/* ---- handlers ---------------------------------------------------------- */

static int
http_healthz(struct http_req *rq, struct http_reply *rp)
{
	(void)rq;
	rp->json = json_pack("{s:s}", "status", "ok");
	return rp->json != NULL ? 0 : KL_ERR_NOMEM;
}

static int
http_status(struct http_req *rq, struct http_reply *rp)
{
	const struct config *cfg = rq->h->cfg;
	struct engine_status s;
	char head[AUDIT_HASH_HEX + 1];
	int64_t rows;

	memset(&s, 0, sizeof(s));
	engine_status(rq->h->engine, &s);
	/* The head, for an MES to keep as an anchor (docs/audit.md); null
	 * if the log cannot be read right now. */
	if (audit_head(rq->h->audit, &rows, head, sizeof(head)) != 0) {
		rows = -1;
		head[0] = '\0';
	}
	rp->json = json_pack("{s:I, s:{s:o, s:o, s:o}, "
	    "s:{s:s, s:I, s:I, s:f}, s:{s:i, s:i, s:i}, s:{s:o, s:o, s:i}, "
	    "s:i, s:{s:I, s:s?}}",
	    "time_ms", (json_int_t)http_now_ms(),
	    "station",
	    "id", http_jstr(cfg->station_id, 0),
	    "operator", http_jstr(cfg->operator_name, 1),
	    "work_order", http_jstr(cfg->work_order, 1),
	    "line",
	    "state", engine_line_state_name(s.line),
	    "started_ms", (json_int_t)s.started_ms,
	    "running_ms", (json_int_t)s.running_ms,
	    "boards_per_hour", s.boards_per_hour,
	    "counts",
	    "passed", s.counts.passed,
	    "failed", s.counts.failed,
	    "in_flight", s.counts.in_flight,
	    "ca",
	    "name", http_jstr(s.ca_name, 1),
	    "state", http_jstr(s.ca_state, 1),
	    "slots_waiting", s.slots_waiting_ca,
	    "slots", cfg->nslots,
	    "audit",
	    "rows", (json_int_t)rows,
	    "head", head[0] != '\0' ? head : NULL);
	return rp->json != NULL ? 0 : KL_ERR_NOMEM;
}

static json_t *
http_slot_json(const struct engine_slot_view *v)
{
	return json_pack("{s:i, s:s, s:s, s:o, s:o, s:o, s:o, s:I, s:I}",
	    "number", v->number,
	    "state", engine_state_name(v->state),
	    "step", engine_step_name(v->step),
	    "device", http_jstr(v->device, 1),
	    "serial", http_jstr(v->serial, 1),
	    "device_id", http_jstr(v->device_id, 1),
	    "error", http_jstr(v->error, 1),
	    "started_ms", (json_int_t)v->started_ms,
	    "finished_ms", (json_int_t)v->finished_ms);
}

static int
http_slots(struct http_req *rq, struct http_reply *rp)
{
	struct engine_slot_view *v = NULL;
	json_t *arr = NULL;
	int r = KL_ERR_NOMEM, n, i;

	if ((v = calloc(CONFIG_MAX_SLOTS, sizeof(*v))) == NULL)
		goto out;
	n = engine_slots(rq->h->engine, v, CONFIG_MAX_SLOTS);
	if ((arr = json_array()) == NULL)
		goto out;
	for (i = 0; i < n; i++)
		if (json_array_append_new(arr, http_slot_json(&v[i])) != 0)
			goto out;
	if ((rp->json = json_pack("{s:O}", "slots", arr)) == NULL)
		goto out;
	r = 0;
 out:
	json_decref(arr);
	free(v);
	return r;
}

static int
http_slot(struct http_req *rq, struct http_reply *rp)
{
	struct engine_slot_detail *d = NULL;
	json_t *o = NULL, *steps = NULL, *st;
	char *end = NULL;
	long long n;
	int r = KL_ERR_NOMEM, i;

	if (rq->arg[0] < '1' || rq->arg[0] > '9' || strlen(rq->arg) > 3)
		return http_error(rp, MHD_HTTP_BAD_REQUEST, "bad_slot",
		    "slot must be a number from 1 to %d", CONFIG_MAX_SLOTS);
	errno = 0;
	n = strtoll(rq->arg, &end, 10);
	if (errno != 0 || *end != '\0' || n < 1 || n > CONFIG_MAX_SLOTS)
		return http_error(rp, MHD_HTTP_BAD_REQUEST, "bad_slot",
		    "slot must be a number from 1 to %d", CONFIG_MAX_SLOTS);
	if ((d = calloc(1, sizeof(*d))) == NULL)
		goto out;
	r = engine_slot_detail(rq->h->engine, (int)n, d);
	if (r == KL_ERR_NOT_FOUND) {
		r = http_error(rp, MHD_HTTP_NOT_FOUND, "not_found",
		    "no slot %lld in this station", n);
		goto out;
	}
	if (r != 0)
		goto out;
	r = KL_ERR_NOMEM;
	if ((o = http_slot_json(&d->view)) == NULL ||
	    (steps = json_array()) == NULL)
		goto out;
	for (i = 0; i < d->nsteps && i < STEP__COUNT; i++) {
		const struct engine_step_rec *s = &d->steps[i];

		st = json_pack("{s:s, s:I, s:o, s:o, s:b}",
		    "step", engine_step_name(s->step),
		    "start_ms", (json_int_t)s->start_ms,
		    "end_ms", s->end_ms != 0 ?
		    json_integer((json_int_t)s->end_ms) : json_null(),
		    "duration_ms", s->end_ms != 0 ?
		    json_integer((json_int_t)(s->end_ms - s->start_ms)) :
		    json_null(),
		    "failed", s->failed);
		if (json_array_append_new(steps, st) != 0)
			goto out;
	}
	if (http_set(o, "cert_serial", http_jstr(d->cert_serial, 1)) != 0 ||
	    http_set(o, "key_fpr", http_jstr(d->key_fpr, 1)) != 0 ||
	    json_object_set(o, "steps", steps) != 0)
		goto out;
	rp->json = o;
	o = NULL;
	r = 0;
 out:
	json_decref(steps);
	json_decref(o);
	free(d);
	return r;
}

static int
http_device(struct http_req *rq, struct http_reply *rp)
{
	struct audit_device_record *rec = NULL;
	char serial[AUDIT_REC_FPR];
	int r = KL_ERR_NOMEM, found = 0;

	if (!devid_valid(rq->arg))
		return http_error(rp, MHD_HTTP_BAD_REQUEST, "bad_device_id",
		    "a device ID is 1..%d of [A-Za-z0-9._-], not starting "
		    "with '.' or '-'", DEVID_MAX);
	if ((rec = calloc(1, sizeof(*rec))) == NULL)
		goto out;
	r = audit_device_record(rq->h->audit, rq->arg, rec);
	if (r == KL_ERR_NOT_FOUND) {
		r = http_error(rp, MHD_HTTP_NOT_FOUND, "not_found",
		    "no provisioning record for this device ID");
		goto out;
	}
	if (r != 0)
		goto out;
	/* Whether any attempt got a certificate onto a board (the
	 * duplicate rule), which the newest attempt alone may not say. */
	serial[0] = '\0';
	if ((r = audit_find_provisioned(rq->h->audit, rq->arg, &found, serial,
	    sizeof(serial))) != 0)
		goto out;
	rp->json = json_pack("{s:o, s:b, s:o, s:s, s:I, s:o, s:o, s:I, s:o, "
	    "s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:I, s:I, s:o, s:o}",
	    "device_id", http_jstr(rec->device_id, 0),
	    "provisioned", found,
	    "provisioned_cert_serial", http_jstr(serial, 1),
	    "outcome", rec->outcome,
	    "attempts", (json_int_t)rec->attempts,
	    "station", http_jstr(rec->station, 1),
	    "operator", http_jstr(rec->operator_name, 1),
	    "slot", (json_int_t)rec->slot,
	    "board_serial", http_jstr(rec->board_serial, 1),
	    "cert_serial", http_jstr(rec->cert_serial, 1),
	    "cert_fpr", http_jstr(rec->cert_fpr, 1),
	    "key_fpr", http_jstr(rec->key_fpr, 1),
	    "ca", http_jstr(rec->ca, 1),
	    "first_time", http_jstr(rec->first_time, 1),
	    "last_time", http_jstr(rec->last_time, 1),
	    "first_event_id", (json_int_t)rec->first_id,
	    "last_event_id", (json_int_t)rec->last_id,
	    "rows", (json_int_t)rec->rows,
	    "last_step", http_jstr(rec->last_step, 1),
	    "error", http_jstr(rec->error, 1));
	r = rp->json != NULL ? 0 : KL_ERR_NOMEM;
 out:
	free(rec);
	return r;
}

static int
http_event_row(void *arg, const struct audit_row *row)
{
	json_t *arr = arg, *o;

	o = json_pack("{s:I, s:o, s:o, s:o, s:I, s:o, s:o, s:o, s:o, s:o, "
	    "s:o, s:o, s:o, s:o, s:o, s:o}",
	    "id", (json_int_t)row->id,
	    "time", http_jstr(row->time, 0),
	    "station", http_jstr(row->station, 0),
	    "operator", http_jstr(row->operator_name, 0),
	    "slot", (json_int_t)row->slot,
	    "board_serial", http_jstr(row->board_serial, 0),
	    "device_id", http_jstr(row->device_id, 0),
	    "step", http_jstr(row->step, 0),
	    "outcome", http_jstr(row->outcome, 0),
	    "key_fpr", http_jstr(row->key_fpr, 0),
	    "cert_serial", http_jstr(row->cert_serial, 0),
	    "cert_fpr", http_jstr(row->cert_fpr, 0),
	    "ca", http_jstr(row->ca, 0),
	    "error", http_jstr(row->error, 0),
	    "prev_hash", http_jstr(row->prev_hash, 0),
	    "row_hash", http_jstr(row->row_hash, 0));
	if (o == NULL || json_array_append_new(arr, o) != 0)
		return KL_ERR_NOMEM;
	return 0;
}

static int
http_events(struct http_req *rq, struct http_reply *rp)
{
	long long since = 0, limit = HTTP_EVENTS_DEFAULT;
	json_t *arr = NULL;
	int64_t next = 0;
	int r, more = 0;

	r = http_arg_num(rq->c, "since", 0, INT64_MAX - 1, &since);
	if (r != 0 && r != KL_ERR_NOT_FOUND)
		return http_error(rp, MHD_HTTP_BAD_REQUEST, "bad_argument",
		    "since must be an event id (a whole number >= 0)");
	r = http_arg_num(rq->c, "limit", 1, AUDIT_EVENTS_MAX, &limit);
	if (r != 0 && r != KL_ERR_NOT_FOUND)
		return http_error(rp, MHD_HTTP_BAD_REQUEST, "bad_argument",
		    "limit must be a whole number from 1 to %d",
		    AUDIT_EVENTS_MAX);
	if ((arr = json_array()) == NULL)
		return KL_ERR_NOMEM;
	r = audit_events_since(rq->h->audit, (int64_t)since, (int)limit,
	    http_event_row, arr, &next, &more);
	if (r == 0) {
		rp->json = json_pack("{s:O, s:I, s:b}", "events", arr,
		    "next", (json_int_t)next, "more", more);
		if (rp->json == NULL)
			r = KL_ERR_NOMEM;
	}
	json_decref(arr);
	return r;
}

/* ---- /metrics (Prometheus text format 0.0.4) --------------------------- */

static int
http_put(struct buf *b, const char *fmt, ...) __attribute__((format(printf,
    2, 3)));

static int
http_put(struct buf *b, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		return KL_ERR_TOO_BIG;
	return buf_put(b, line, (size_t)n);
}

static int
http_put_counter(struct buf *b, const char *name, const char *help,
    const char *type, uint64_t v)
{
	int r;

	if ((r = http_put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
	    type)) != 0)
		return r;
	return http_put(b, "%s %" PRIu64 "\n", name, v);
}

/* One histogram series; label is "" or `step="keygen",`. */
static int
http_put_hist(struct buf *b, const char *name, const char *label,
    const struct engine_histogram *hg)
{
	int i, r;

	for (i = 0; i < ENGINE_BUCKETS - 1; i++)
		if ((r = http_put(b, "%s_bucket{%sle=\"%g\"} %" PRIu64 "\n",
		    name, label, engine_metric_buckets_ms[i] / 1000.0,
		    hg->bucket[i])) != 0)
			return r;
	if ((r = http_put(b, "%s_bucket{%sle=\"+Inf\"} %" PRIu64 "\n", name,
	    label, hg->count)) != 0)
		return r;
	/* Labels without the trailing comma for _sum and _count. */
	if (label[0] != '\0') {
		int n = (int)strlen(label) - 1;

		if ((r = http_put(b, "%s_sum{%.*s} %.6f\n%s_count{%.*s} %"
		    PRIu64 "\n", name, n, label, hg->sum_ms / 1000.0, name, n,
		    label, hg->count)) != 0)
			return r;
		return 0;
	}
	return http_put(b, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name,
	    hg->sum_ms / 1000.0, name, hg->count);
}

static int
http_metrics(struct http_req *rq, struct http_reply *rp)
{
	struct engine_metrics *m = NULL;
	struct engine_status s;
	struct buf *b = &rp->text;
	char label[64];
	int r = KL_ERR_NOMEM, i;
	static const enum line_state lines[] = { LINE_PAUSED, LINE_RUNNING,
	    LINE_STOPPING };

	if ((m = calloc(1, sizeof(*m))) == NULL)
		goto out;
	engine_metrics(rq->h->engine, m);
	memset(&s, 0, sizeof(s));
	engine_status(rq->h->engine, &s);
	rp->content_type = "text/plain; version=0.0.4; charset=utf-8";
	if ((r = http_put_counter(b, "keyline_boards_passed_total",
	    "Boards provisioned.", "counter", m->passed_total)) != 0 ||
	    (r = http_put_counter(b, "keyline_boards_failed_total",
	    "Boards that failed.", "counter", m->failed_total)) != 0 ||
	    (r = http_put_counter(b, "keyline_link_retries_total",
	    "Link frames sent again.", "counter", m->retries_total)) != 0 ||
	    (r = http_put_counter(b, "keyline_wire_bytes_total",
	    "Bytes on the board links, both ways.", "counter",
	    m->wire_bytes_total)) != 0 ||
	    (r = http_put_counter(b, "keyline_boards_in_flight",
	    "Boards being provisioned now.", "gauge",
	    (uint64_t)(s.counts.in_flight > 0 ? s.counts.in_flight : 0))) != 0 ||
	    (r = http_put_counter(b, "keyline_slots_waiting_ca",
	    "Slots waiting for the CA.", "gauge",
	    (uint64_t)(s.slots_waiting_ca > 0 ? s.slots_waiting_ca : 0))) != 0)
		goto out;
	if ((r = http_put(b, "# HELP keyline_line_state Line state (1 for "
	    "the current one).\n# TYPE keyline_line_state gauge\n")) != 0)
		goto out;
	for (i = 0; i < (int)NELEM(lines); i++)
		if ((r = http_put(b, "keyline_line_state{state=\"%s\"} %d\n",
		    engine_line_state_name(lines[i]), s.line == lines[i])) != 0)
			goto out;
	if ((r = http_put(b, "# HELP keyline_step_duration_seconds Time per "
	    "board step.\n# TYPE keyline_step_duration_seconds histogram\n"))
	    != 0)
		goto out;
	for (i = 0; i < STEP__COUNT; i++) {
		snprintf(label, sizeof(label), "step=\"%s\",",
		    engine_step_name((enum engine_step)i));
		if ((r = http_put_hist(b, "keyline_step_duration_seconds",
		    label, &m->step[i])) != 0)
			goto out;
	}
	if ((r = http_put(b, "# HELP keyline_board_duration_seconds Time per "
	    "board, start to outcome.\n# TYPE keyline_board_duration_seconds "
	    "histogram\n")) != 0 ||
	    (r = http_put_hist(b, "keyline_board_duration_seconds", "",
	    &m->board)) != 0)
		goto out;
	r = 0;
 out:
	free(m);
	return r;
}

/* ---- start, stop ------------------------------------------------------- */

static void
http_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_warn("http: %s", msg);
}

/* The first line of token_file; never logged, wiped on every path. */
static int
http_load_token(struct http *h, const char *path, char *err, size_t errsz)
{
	uint8_t *data = NULL;
	size_t len = 0, n, i;
	struct stat sb;
	int r;

	if ((r = fsutil_read_capped(path, HTTP_TOKEN_FILE_MAX, &data, &len,
	    err, errsz)) != 0) {
		if (r == KL_ERR_TOO_BIG)
			r = KL_ERR_CONFIG;
		goto out;
	}
	n = strcspn((const char *)data, "\r\n");
	if (n < HTTP_TOKEN_MIN || n > HTTP_TOKEN_MAX) {
		snprintf(err, errsz, "%s: the token must be one line of %d..%d "
		    "characters", path, HTTP_TOKEN_MIN, HTTP_TOKEN_MAX);
		r = KL_ERR_CONFIG;
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (data[i] <= 0x20 || data[i] >= 0x7f) {
			snprintf(err, errsz, "%s: the token must be visible "
			    "ASCII without spaces", path);
			r = KL_ERR_CONFIG;
			goto out;
		}
	}
	if (stat(path, &sb) == 0 && (sb.st_mode & 077) != 0)
		log_warn("http: %s is readable by group or others; chmod 600",
		    path);
	memset(h->token, 0, sizeof(h->token));
	memcpy(h->token, data, n);
	h->token_len = n;
	r = 0;
 out:
	if (data != NULL) {
		OPENSSL_cleanse(data, len);
		free(data);
	}
	return r;
}

static int
http_load_pem(const char *path, uint8_t **out, size_t *len, char *err,
    size_t errsz)
{
	int r = fsutil_read_capped(path, HTTP_PEM_MAX, out, len, err, errsz);

	if (r == KL_ERR_TOO_BIG)
		r = KL_ERR_CONFIG;
	if (r == 0 && strstr((const char *)*out, "-----BEGIN ") == NULL) {
		snprintf(err, errsz, "%s: not a PEM file", path);
		OPENSSL_cleanse(*out, *len);
		free(*out);
		*out = NULL;
		r = KL_ERR_CONFIG;
	}
	return r;
}

static void
http_free(struct http *h)
{
	if (h == NULL)
		return;
	OPENSSL_cleanse(h->token, sizeof(h->token));
	if (h->tls_key != NULL) {
		OPENSSL_cleanse(h->tls_key, h->tls_key_len);
		free(h->tls_key);
	}
	free(h->tls_cert);
	free(h);
}

int
http_start(struct http **out, const struct http_opts *o, char *err,
    size_t errsz)
{
	struct http *h = NULL;
	const struct config *cfg;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	struct sockaddr *sa;
	unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD |
	    MHD_USE_ERROR_LOG;
	int r = KL_ERR_INTERNAL, tls;

	if (out == NULL || o == NULL || o->engine == NULL || o->audit == NULL ||
	    o->cfg == NULL) {
		snprintf(err, errsz, "http: missing engine, audit or config");
		return KL_ERR_INVALID;
	}
	cfg = o->cfg;
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(err, errsz, "http: out of memory");
		return KL_ERR_NOMEM;
	}
	h->engine = o->engine;
	h->audit = o->audit;
	h->cfg = cfg;
	if (cfg->http_token_file[0] == '\0') {
		snprintf(err, errsz, "%s: [http] token_file: required",
		    cfg->path);
		r = KL_ERR_CONFIG;
		goto out;
	}
	if ((r = http_load_token(h, cfg->http_token_file, err, errsz)) != 0)
		goto out;
	tls = cfg->http_tls_cert[0] != '\0';
	if (tls) {
		if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
			snprintf(err, errsz, "http: this libmicrohttpd has no "
			    "TLS support");
			r = KL_ERR_UNSUPPORTED;
			goto out;
		}
		if ((r = http_load_pem(cfg->http_tls_cert, &h->tls_cert,
		    &h->tls_cert_len, err, errsz)) != 0 ||
		    (r = http_load_pem(cfg->http_tls_key, &h->tls_key,
		    &h->tls_key_len, err, errsz)) != 0)
			goto out;
		flags |= MHD_USE_TLS;
	}

	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	if (inet_pton(AF_INET, cfg->http_bind, &sin.sin_addr) == 1) {
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)cfg->http_port);
		sa = (struct sockaddr *)&sin;
	} else if (inet_pton(AF_INET6, cfg->http_bind, &sin6.sin6_addr) == 1) {
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons((uint16_t)cfg->http_port);
		sa = (struct sockaddr *)&sin6;
		flags |= MHD_USE_IPv6;
	} else {
		snprintf(err, errsz, "%s: [http] bind: not a numeric address: "
		    "'%s'", cfg->path, cfg->http_bind);
		r = KL_ERR_CONFIG;
		goto out;
	}

	/* TLS options last: MHD ignores them unless MHD_USE_TLS is set, and
	 * MHD_OPTION_END before them ends the list for plain HTTP. */
	h->d = MHD_start_daemon(flags, (uint16_t)cfg->http_port, NULL, NULL,
	    http_access, h,
	    MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, (void *)NULL,
	    MHD_OPTION_SOCK_ADDR, sa,
	    MHD_OPTION_CONNECTION_LIMIT,
	    (unsigned int)cfg->http_max_connections,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)HTTP_CONN_TIMEOUT_S,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
	    tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END,
	    (const char *)h->tls_cert,
	    MHD_OPTION_HTTPS_MEM_KEY, (const char *)h->tls_key,
	    MHD_OPTION_END);
	if (h->d == NULL) {
		snprintf(err, errsz, "http: cannot listen on %s port %d%s "
		    "(address in use, or bad TLS files)", cfg->http_bind,
		    cfg->http_port, tls ? " with TLS" : "");
		r = KL_ERR_IO;
		goto out;
	}
	log_info("http: serving on %s%s%s:%d%s", strchr(cfg->http_bind, ':') ?
	    "[" : "", cfg->http_bind, strchr(cfg->http_bind, ':') ? "]" : "",
	    cfg->http_port, tls ? " (TLS)" : "");
	*out = h;
	h = NULL;
	r = 0;
 out:
	http_free(h);
	return r;
}

void
http_stop(struct http *h)
{
	if (h == NULL)
		return;
	/* Waits for the polling thread: no handler runs after this. */
	if (h->d != NULL)
		MHD_stop_daemon(h->d);
	http_free(h);
}
