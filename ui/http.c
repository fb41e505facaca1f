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
 * prefix followed by one path segment (a slot number, a device ID).  The
 * path and query are taken as the client sent them and decoded by
 * http_target_parse (http_parse.c), which refuses a NUL in any form.
 *
 * Connections are admitted here, not only by MHD's global limit, so that
 * a few slow or hostile clients cannot keep the MES out (docs/http-api.md,
 * "Limits"): at most max_connections_per_ip per client address; when all
 * max_connections are taken, a client from an address holding fewer
 * connections takes the place of the oldest connection still waiting for
 * its headers from the address holding the most; and a warden thread
 * closes any connection that has not sent a whole request head within
 * HTTP_HEADER_TIMEOUT_MS, trickling or not (MHD's own timeout restarts
 * with every byte).  What was refused or closed is logged as one summary
 * line per HTTP_LOG_INTERVAL_MS, never a line per connection.
 * Every endpoint but /healthz needs "Authorization: Bearer <token>", the
 * token read from [http] token_file at start, compared in constant time
 * and wiped at stop.  JSON is built with jansson, never pasted.
 */
#include "ui/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include "db/audit.h"
#include "db/ship.h"
#include "common/buf.h"
#include "station/config/config.h"
#include "station/config/devid.h"
#include "station/engine/engine.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/secret.h"
#include "station/version.h"
#include "ui/http_parse.h"

/* Headers and request line must fit in this per connection (MHD answers
 * 431/414 itself beyond it). */
#define HTTP_CONN_MEMORY (16 * 1024)
/* Idle time while an answer is being sent (MHD's timeout, which restarts
 * with every byte moved). */
#define HTTP_CONN_TIMEOUT_S 10
/* A whole request head (TLS handshake, request line, headers) must arrive
 * within this of the connection opening or of the previous answer: a
 * client on the plant network sends it in one packet, a trickler is shut
 * out after it however steadily it sends. */
#define HTTP_HEADER_TIMEOUT_MS 3000
/* How often the warden looks, and how often it may log a summary. */
#define HTTP_WARDEN_TICK_MS 100
/* Requests of clients over their rate held at once (http_access). */
#define HTTP_HELD_MAX 256
#define HTTP_LOG_INTERVAL_MS 10000
/* libmicrohttpd's own messages per interval before they are counted. */
#define HTTP_LOG_BURST 5
/*
 * TLS 1.2 and 1.3 only (GnuTLS syntax): AEAD ciphers, ECDHE key
 * exchange for forward secrecy, the server's order first.  Written down
 * in docs/http-api.md; change both together.
 */
#define HTTP_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:" \
	"-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:" \
	"-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:%SERVER_PRECEDENCE"
/* The token: one line of 16..256 visible characters. */
#define HTTP_TOKEN_MIN 16
#define HTTP_TOKEN_MAX 256
#define HTTP_TOKEN_FILE_MAX 4096
#define HTTP_PEM_MAX (256 * 1024)
/* /metrics is a few KiB; the cap only stops a bug from growing it. */
#define HTTP_METRICS_MAX (256 * 1024)
#define HTTP_EVENTS_DEFAULT 100
/* Client addresses whose token buckets are remembered; past it, the
 * address heard from least recently is forgotten (and starts full). */
#define HTTP_RATE_ADDRS 256

/* Why a connection was refused at accept or closed by us. */
enum http_drop {
	DROP_PER_IP,		/* its address already had its share */
	DROP_FULL,		/* every slot busy, nobody to take over from */
	DROP_TAKEN_OVER,	/* closed for a client from a quieter address */
	DROP_HEADER_TIMEOUT,	/* no whole request head in time */
	DROP__COUNT
};

static const struct {
	const char *metric;	/* label value in /metrics */
	const char *log;	/* words in the summary line */
} http_drops[DROP__COUNT] = {
	[DROP_PER_IP] = { "per_address_limit", "over the per-address limit" },
	[DROP_FULL] = { "full", "refused with every connection busy" },
	[DROP_TAKEN_OVER] = { "taken_over",
	    "closed for a client from a quieter address" },
	[DROP_HEADER_TIMEOUT] = { "header_timeout",
	    "closed without a whole request head in time" },
};

/*
 * One open connection, from MHD's STARTED to its CLOSED notification.
 * fd, addr, waiting, since_ms, dying and the list links are under
 * http.mu (the warden reads them); target is only touched by MHD's
 * thread.  MHD notifies CLOSED before it closes the socket, and the
 * record leaves the list then, so a shutdown(2) under the mutex never
 * reaches a descriptor reused for something else.
 */
struct http_conn {
	struct http_conn *prev, *next;
	int fd;
	struct sockaddr_storage addr;
	int naddr;		/* live connections from the same address */
	int waiting;		/* for a whole request head */
	int64_t since_ms;	/* monotonic: when it began waiting */
	int dying;		/* shut down by us, not yet closed by MHD */
	char target[HTTP_TARGET_MAX + 1];	/* as sent */
	size_t target_len;
	int target_over;	/* longer than HTTP_TARGET_MAX */
	/* Over its rate: the request is held (MHD suspended) until
	 * held_until, then answered 429 (held_done).  Under http.mu. */
	struct MHD_Connection *mc;
	int held, held_done, held_retry_s;
	int64_t held_until;	/* monotonic */
};

/* One client address's token bucket (rate_limit, rate_burst). */
struct http_bucket {
	struct sockaddr_storage addr;	/* ss_family 0: unused */
	int64_t tokens;		/* thousandths of a request */
	int64_t at_ms;		/* monotonic: last refill */
};

/*
 * The status document as last built: the same bytes (and the same
 * MHD_Response, reference-counted by MHD) go to every client until
 * status_cache_ms has passed.  Only MHD's one thread touches it.
 */
struct http_doc {
	struct MHD_Response *ok;	/* 200, with ETag */
	struct MHD_Response *unchanged;	/* 304, same ETag */
	char etag[24];			/* W/"16 hex digits" */
	int64_t built_ms;		/* monotonic */
};

struct http {
	struct MHD_Daemon *d;
	struct engine *engine;
	struct audit *audit;
	const struct config *cfg;
	struct ship *ship;	/* NULL without a plant store */
	double start_time_s;	/* process start, Unix seconds */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t warden;
	int warden_started, stopping;
	struct http_conn *conns;	/* under mu */
	int nlive;			/* conns not dying */
	uint64_t drops[DROP__COUNT];		/* since start, for /metrics */
	struct http_bucket buckets[HTTP_RATE_ADDRS];	/* under mu */
	uint64_t limited;		/* 429s since start, under mu */
	int nheld;			/* requests held now, under mu */
	uint64_t status_builds;		/* MHD's thread only */
	struct http_doc status;		/* MHD's thread only */
	uint64_t drops_logged[DROP__COUNT];	/* as of the last summary */
	unsigned int mhd_lines;		/* MHD messages this interval */
	uint64_t mhd_suppressed;
	int64_t log_at_ms;		/* start of the log interval */
	/* Zero-padded to the maximum so the comparison always covers the
	 * same bytes whatever length is presented; on pages a core dump
	 * leaves out (secret_alloc). */
	unsigned char *token;
	size_t token_len;
	uint8_t *tls_cert, *tls_key;
	size_t tls_cert_len, tls_key_len;
};

/* One request as the handlers see it. */
struct http_req {
	struct http *h;
	struct MHD_Connection *c;
	const struct http_target *t;	/* path and query, decoded */
	const char *arg;	/* the path segment after a prefix route */
};

/* What a handler produces: a JSON body or a text body, and a status. */
struct http_reply {
	unsigned int status;
	json_t *json;		/* owned */
	struct buf text;	/* used when json is NULL */
	const char *content_type;
	/* Instead of the above: a response built earlier (the status
	 * cache), queued as it is; borrowed. */
	struct MHD_Response *ready;
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

static int64_t
http_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
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

	if (rp->ready != NULL)
		return MHD_queue_response(c, rp->status, rp->ready);
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
	ok = CRYPTO_memcmp(given, h->token, HTTP_TOKEN_MAX) == 0 &&
	    n == h->token_len;
	OPENSSL_cleanse(given, sizeof(given));
	return ok;
}

/* The first query argument the route does not take, or NULL. */
static const char *
http_bad_arg(const struct http_route *route, const struct http_target *t)
{
	size_t i, j;

	for (i = 0; i < t->nargs && i < HTTP_ARGS_MAX; i++) {
		for (j = 0; route->args[j] != NULL; j++)
			if (strcmp(t->args[i].key, route->args[j]) == 0)
				break;
		if (route->args[j] == NULL)
			return t->args[i].key;
	}
	return NULL;
}

/*
 * A query argument as a number in min..max: 0 and *out; KL_ERR_NOT_FOUND
 * when absent; KL_ERR_INVALID (digits only, no sign, no spaces).
 */
static int
http_arg_num(const struct http_target *t, const char *name, long long min,
    long long max, long long *out)
{
	const char *v = http_target_arg(t, name);

	if (v == NULL)
		return KL_ERR_NOT_FOUND;
	return http_parse_num(v, min, max, out);
}

static const struct http_route *
http_route_find(const char *path, const char **arg)
{
	size_t i;

	for (i = 0; i < NELEM(http_routes); i++)
		if (http_route_match(path, http_routes[i].path,
		    http_routes[i].segment, arg))
			return &http_routes[i];
	*arg = NULL;
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
/*
 * Run the calling thread (MHD's, the warden) only when the cores have
 * nothing else to do: the slots' threads always go first, so a flood of
 * requests takes the time the line leaves, not the line's.  SCHED_IDLE
 * still gets a small share under full load (CFS weight 3 against 1024),
 * enough for the MES and a scrape; nice 19 where SCHED_IDLE is refused.
 * Once per thread: a thread cannot go back from SCHED_IDLE unprivileged,
 * and never needs to.
 */
static void
http_thread_lower(void)
{
	static __thread int lowered;
	struct sched_param sp;

	if (lowered)
		return;
	lowered = 1;
	memset(&sp, 0, sizeof(sp));
#ifdef SCHED_IDLE
	if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) == 0)
		return;
#endif
	/* On Linux the "process" of PRIO_PROCESS is a thread id. */
	(void)setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
}

static int
http_addr_same(const struct sockaddr_storage *a, const struct sockaddr *b);

/*
 * A token bucket per client address: rate_limit requests a second,
 * rate_burst at once.  1 when addr may make a request now (one token
 * taken); 0 and *retry_s, the whole seconds until it may (at least 1).
 * With mu held.
 */
static int
http_rate_take(struct http *h, const struct sockaddr_storage *addr,
    int64_t now, int *retry_s)
{
	const int64_t rate = h->cfg->http_rate_limit;
	const int64_t cap = (int64_t)h->cfg->http_rate_burst * 1000;
	struct http_bucket *b = NULL, *old = NULL;
	int64_t wait_ms;
	size_t i;

	if (rate <= 0)
		return 1;
	for (i = 0; i < HTTP_RATE_ADDRS; i++) {
		struct http_bucket *p = &h->buckets[i];

		if (p->addr.ss_family != 0 &&
		    http_addr_same(&p->addr, (const struct sockaddr *)addr)) {
			b = p;
			break;
		}
		if (old == NULL || p->addr.ss_family == 0 ||
		    (old->addr.ss_family != 0 && p->at_ms < old->at_ms))
			old = p;
	}
	if (b == NULL) {
		/* New, or forgotten: a full bucket. */
		b = old;
		b->addr = *addr;
		b->tokens = cap;
		b->at_ms = now;
	}
	if (now > b->at_ms) {
		/* rate a second is rate thousandths a millisecond. */
		b->tokens += (now - b->at_ms) * rate;
		if (b->tokens > cap)
			b->tokens = cap;
	}
	b->at_ms = now;
	if (b->tokens >= 1000) {
		b->tokens -= 1000;
		return 1;
	}
	wait_ms = (1000 - b->tokens + rate - 1) / rate;
	*retry_s = (int)((wait_ms + 999) / 1000);
	if (*retry_s < 1)
		*retry_s = 1;
	return 0;
}

/*
 * 429 for a client over its rate: a fixed body, made without jansson,
 * and the connection kept alive (closing it would only cost another
 * accept when the client comes back).
 */
static enum MHD_Result
http_queue_limited(struct MHD_Connection *c, int retry_s)
{
	static const char body[] = "{\"error\":{\"status\":429,"
	    "\"code\":\"rate_limited\",\"message\":\"too many requests "
	    "from this address; see Retry-After\"}}";
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char retry[16];

	resp = MHD_create_response_from_buffer(sizeof(body) - 1,
	    (void *)body, MHD_RESPMEM_PERSISTENT);
	if (resp == NULL)
		return MHD_NO;
	snprintf(retry, sizeof(retry), "%d", retry_s);
	(void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	    "application/json");
	(void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
	    "no-store");
	(void)MHD_add_response_header(resp, "X-Content-Type-Options",
	    "nosniff");
	(void)MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER,
	    retry);
	ret = MHD_queue_response(c, MHD_HTTP_TOO_MANY_REQUESTS, resp);
	MHD_destroy_response(resp);
	return ret;
}

static struct http_conn *
http_conn_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c,
	    MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci != NULL ? ci->socket_context : NULL;
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
	struct http_conn *hc = http_conn_of(c);
	struct http_target *t = NULL;
	struct http_req rq = { h, c, NULL, NULL };
	struct http_reply rp;
	const struct http_route *route;
	const char *bad;
	enum MHD_Result ret;
	int r, auth_fail = 0, bad_method = 0, allowed = 1, retry_s = 0;

	static int first_seen;

	(void)url;	/* decoded by MHD, NULs and all: hc->target instead */
	(void)upload_data;
	http_thread_lower();
	if (hc == NULL)		/* no record (out of memory at accept) */
		return MHD_NO;
	/* The head is complete: the header deadline no longer applies.
	 * The rate is counted once per request, on MHD's second call,
	 * where an answer keeps the connection alive. */
	pthread_mutex_lock(&h->mu);
	hc->waiting = 0;
	if (hc->held_done) {
		/* Back from being held: its 429 now. */
		hc->held_done = 0;
		retry_s = hc->held_retry_s;
		pthread_mutex_unlock(&h->mu);
		return http_queue_limited(c, retry_s);
	}
	if (*con_cls != NULL) {
		allowed = http_rate_take(h, &hc->addr, http_mono_ms(),
		    &retry_s);
		if (!allowed)
			h->limited++;
		/*
		 * A client over its rate waits for its answer as long as
		 * Retry-After says (the warden resumes it), so that one
		 * asking again at once on a kept-alive connection (a poller
		 * in a loop, wrk) costs a 429 per connection per second, not
		 * thousands a second.  Bounded: past HTTP_HELD_MAX held
		 * requests the 429 goes at once.
		 */
		if (!allowed && h->nheld < HTTP_HELD_MAX) {
			hc->mc = c;
			hc->held = 1;
			hc->held_retry_s = retry_s;
			hc->held_until = http_mono_ms() + (int64_t)retry_s * 1000;
			h->nheld++;
			MHD_suspend_connection(c);
			pthread_mutex_unlock(&h->mu);
			return MHD_YES;
		}
	}
	pthread_mutex_unlock(&h->mu);
	if (!allowed)
		return http_queue_limited(c, retry_s);

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
	/* RFC 9112 3.2: a 1.1 request without Host is answered 400. */
	if (strcmp(version, MHD_HTTP_VERSION_1_1) == 0 &&
	    MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_HOST) == NULL) {
		r = http_error(&rp, MHD_HTTP_BAD_REQUEST, "bad_request",
		    "an HTTP/1.1 request needs a Host header");
		goto reply;
	}
	if ((t = malloc(sizeof(*t))) == NULL) {
		r = KL_ERR_NOMEM;
		goto reply;
	}
	r = hc->target_over ? KL_ERR_TOO_BIG :
	    http_target_parse(hc->target, hc->target_len, t);
	if (r == KL_ERR_TOO_BIG) {
		r = http_error(&rp, MHD_HTTP_URI_TOO_LONG, "path_too_long",
		    "path longer than %d bytes or target longer than %d",
		    HTTP_PATH_MAX, HTTP_TARGET_MAX);
		goto reply;
	}
	if (r != 0) {
		r = http_error(&rp, MHD_HTTP_BAD_REQUEST, "bad_request",
		    "malformed request target (a NUL, a control character, "
		    "a bad %%-escape, or a repeated or overlong argument)");
		goto reply;
	}
	rq.t = t;
	route = http_route_find(t->path, &rq.arg);
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
	if ((bad = http_bad_arg(route, t)) != NULL) {
		r = http_error(&rp, MHD_HTTP_BAD_REQUEST, "bad_argument",
		    "unknown query argument '%.64s'", bad);
		goto reply;
	}
	r = route->fn(&rq, &rp);
	if (r != 0) {
		log_warn("http: %s: %s", t->path, kl_strerror(r));
		r = http_error(&rp, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
		    "%s", kl_strerror(r));
	}
 reply:
	ret = r == 0 ? http_queue(c, &rp, auth_fail, bad_method) : MHD_NO;
	json_decref(rp.json);
	buf_free(&rp.text);
	free(t);
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

/* Audit shipping to the plant store (docs/plant.md), or null without. */
static json_t *
http_ship_json(struct ship *sh)
{
	struct ship_status st;

	if (sh == NULL)
		return json_null();
	ship_status(sh, &st);
	return json_pack("{s:b, s:b, s:I, s:I, s:I, s:I}",
	    "connected", st.connected,
	    "refused", st.refused,
	    "shipped_seq", (json_int_t)st.shipped,
	    "local_seq", (json_int_t)st.local,
	    "rows_waiting", (json_int_t)(st.shipped >= 0 &&
	    st.local > st.shipped ? st.local - st.shipped : 0),
	    "failures", (json_int_t)st.failures);
}

/* Conflicts the registry reported after an outage, newest first. */
static json_t *
http_conflicts_json(struct engine *e)
{
	struct engine_conflict c[ENGINE_CONFLICTS];
	json_t *a, *o;
	int i, n;

	if ((a = json_array()) == NULL)
		return NULL;
	n = engine_registry_conflicts(e, c, ENGINE_CONFLICTS);
	for (i = 0; i < n; i++) {
		o = json_pack("{s:I, s:o, s:o, s:o, s:i, s:o, s:o, s:i, s:o, "
		    "s:o}",
		    "id", (json_int_t)c[i].id,
		    "detected_at", http_jstr(c[i].detected_at, 1),
		    "device_id", http_jstr(c[i].device_id, 0),
		    "station", http_jstr(c[i].station, 0),
		    "slot", c[i].slot,
		    "cert_serial", http_jstr(c[i].cert_serial, 1),
		    "holder_station", http_jstr(c[i].holder_station, 0),
		    "holder_slot", c[i].holder_slot,
		    "holder_state", http_jstr(c[i].holder_state, 1),
		    "holder_cert_serial", http_jstr(c[i].holder_cert_serial, 1));
		if (o == NULL || json_array_append_new(a, o) != 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

/* The status document as an object (time_ms 0: set by the caller). */
static json_t *
http_status_json(struct http *h)
{
	const struct config *cfg = h->cfg;
	struct engine_status s;
	char head[AUDIT_HASH_HEX + 1];
	int64_t rows;

	memset(&s, 0, sizeof(s));
	engine_status(h->engine, &s);
	/* The head, for an MES to keep as an anchor (docs/audit.md); null
	 * if the log cannot be read right now. */
	if (audit_head(h->audit, &rows, head, sizeof(head)) != 0) {
		rows = -1;
		head[0] = '\0';
	}
	return json_pack("{s:I, s:{s:o, s:o, s:o}, "
	    "s:{s:s, s:I, s:I, s:f}, s:{s:i, s:i, s:i, s:i}, s:{s:o, s:o, s:i}, "
	    "s:{s:b, s:s, s:b, s:i, s:o, s:I, s:I, s:o}, s:i, s:{s:I, s:s?}}",
	    "time_ms", (json_int_t)0,
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
	    "already_provisioned", s.counts.already,
	    "failed", s.counts.failed,
	    "in_flight", s.counts.in_flight,
	    "ca",
	    "name", http_jstr(s.ca_name, 1),
	    "state", http_jstr(s.ca_state, 1),
	    "slots_waiting", s.slots_waiting_ca,
	    "registry",
	    "configured", cfg->registry_conninfo[0] != '\0',
	    "offline_mode", cfg->registry_offline == CONFIG_OFFLINE_LOCAL ?
	    "local" : "wait",
	    "offline", s.registry_offline,
	    "slots_waiting", s.slots_waiting_registry,
	    "shipping", http_ship_json(h->ship),
	    "queued", (json_int_t)s.registry_queued,
	    "conflicts", (json_int_t)s.registry_conflicts,
	    "recent_conflicts", http_conflicts_json(h->engine),
	    "slots", cfg->nslots,
	    "audit",
	    "rows", (json_int_t)rows,
	    "head", head[0] != '\0' ? head : NULL);
}

/* FNV-1a, 64 bits: an ETag only has to change when the bytes do. */
static uint64_t
http_fnv1a(const char *p, size_t n)
{
	uint64_t x = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < n; i++) {
		x ^= (unsigned char)p[i];
		x *= 0x100000001b3ULL;
	}
	return x;
}

/*
 * Headers every status answer carries, 200 and 304 alike (RFC 9110
 * 15.4.5).  private: it is behind a token, no shared cache may keep it;
 * max-age=0: a client may keep it and ask again with If-None-Match.
 */
static void
http_doc_headers(struct MHD_Response *resp, const char *etag)
{
	(void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
	    "private, max-age=0");
	(void)MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
	(void)MHD_add_response_header(resp, "X-Content-Type-Options",
	    "nosniff");
}

/*
 * Build the status document anew into h->status: engine_status (the
 * engine's lock) and audit_head once for every client served until the
 * next build.  The ETag is weak and hashes the document without time_ms:
 * two builds of the same state a moment apart are the same answer to a
 * client (RFC 9110 8.8.1), so a poller of an idle station gets 304.
 */
static int
http_status_build(struct http *h, int64_t now)
{
	struct MHD_Response *ok = NULL, *unchanged = NULL;
	json_t *o = NULL;
	char *body = NULL, etag[sizeof(h->status.etag)];
	int r = KL_ERR_NOMEM;

	if ((o = http_status_json(h)) == NULL ||
	    (body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL)
		goto out;
	snprintf(etag, sizeof(etag), "W/\"%016" PRIx64 "\"",
	    http_fnv1a(body, strlen(body)));
	free(body);
	/* Replacing a key keeps its place: time_ms stays first. */
	if (json_object_set_new(o, "time_ms",
	    json_integer((json_int_t)http_now_ms())) != 0 ||
	    (body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL)
		goto out;
	if ((ok = MHD_create_response_from_buffer(strlen(body), body,
	    MHD_RESPMEM_MUST_FREE)) == NULL)
		goto out;
	body = NULL;
	if ((unchanged = MHD_create_response_from_buffer(0, NULL,
	    MHD_RESPMEM_PERSISTENT)) == NULL)
		goto out;
	(void)MHD_add_response_header(ok, MHD_HTTP_HEADER_CONTENT_TYPE,
	    "application/json");
	http_doc_headers(ok, etag);
	http_doc_headers(unchanged, etag);
	/* Connections still sending the old ones hold MHD's references. */
	if (h->status.ok != NULL)
		MHD_destroy_response(h->status.ok);
	if (h->status.unchanged != NULL)
		MHD_destroy_response(h->status.unchanged);
	h->status.ok = ok;
	h->status.unchanged = unchanged;
	ok = unchanged = NULL;
	memcpy(h->status.etag, etag, sizeof(etag));
	h->status.built_ms = now;
	h->status_builds++;
	r = 0;
 out:
	if (ok != NULL)
		MHD_destroy_response(ok);
	if (unchanged != NULL)
		MHD_destroy_response(unchanged);
	free(body);
	json_decref(o);
	return r;
}

/*
 * GET /api/v1/status from the cache, built again once status_cache_ms
 * has passed (at once with 0); 304 when If-None-Match names it.
 */
static int
http_status(struct http_req *rq, struct http_reply *rp)
{
	struct http *h = rq->h;
	int64_t now = http_mono_ms();
	const char *inm;
	int r;

	if (h->status.ok == NULL ||
	    now - h->status.built_ms >= h->cfg->http_status_cache_ms) {
		if ((r = http_status_build(h, now)) != 0)
			return r;
	}
	inm = MHD_lookup_connection_value(rq->c, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_IF_NONE_MATCH);
	if (inm != NULL && http_etag_match(inm, strnlen(inm,
	    HTTP_INM_MAX + 1), h->status.etag)) {
		rp->status = MHD_HTTP_NOT_MODIFIED;
		rp->ready = h->status.unchanged;
	} else {
		rp->status = MHD_HTTP_OK;
		rp->ready = h->status.ok;
	}
	return 0;
}

static json_t *
http_slot_json(const struct engine_slot_view *v)
{
	return json_pack("{s:i, s:s, s:b, s:o, s:s, s:o, s:o, s:o, s:o, s:I, "
	    "s:I}",
	    "number", v->number,
	    "state", engine_state_name(v->state),
	    "held", v->held,
	    "hold_reason", http_jstr(v->hold_reason, 1),
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
	long long n;
	int r = KL_ERR_NOMEM, i;

	/* No leading zeros: one spelling per slot. */
	if (rq->arg[0] == '0' ||
	    http_parse_num(rq->arg, 1, CONFIG_MAX_SLOTS, &n) != 0)
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

	/* The audit log's own JSON form of a row (audit_row_json), the same
	 * as `keyline audit export --format json`. */
	if ((o = audit_row_json(row)) == NULL ||
	    json_array_append_new(arr, o) != 0)
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

	r = http_arg_num(rq->t, "since", 0, INT64_MAX - 1, &since);
	if (r != 0 && r != KL_ERR_NOT_FOUND)
		return http_error(rp, MHD_HTTP_BAD_REQUEST, "bad_argument",
		    "since must be an event id (a whole number >= 0)");
	r = http_arg_num(rq->t, "limit", 1, AUDIT_EVENTS_MAX, &limit);
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

/*
 * One histogram series; label is "" or `step="keygen",`.  Every number
 * that may have a fraction goes through http_fmt_double: printf's %g and
 * %f write "0,005" under a comma-decimal LC_NUMERIC, which Prometheus
 * refuses, and the console process does call setlocale.
 */
static int
http_put_hist(struct buf *b, const char *name, const char *label,
    const struct engine_histogram *hg)
{
	char le[32], sum[48];
	int i, r;

	for (i = 0; i < ENGINE_BUCKETS - 1; i++) {
		if ((r = http_fmt_double(le, sizeof(le),
		    engine_metric_buckets_ms[i] / 1000.0, 6, 1)) != 0)
			return r;
		if ((r = http_put(b, "%s_bucket{%sle=\"%s\"} %" PRIu64 "\n",
		    name, label, le, hg->bucket[i])) != 0)
			return r;
	}
	if ((r = http_put(b, "%s_bucket{%sle=\"+Inf\"} %" PRIu64 "\n", name,
	    label, hg->count)) != 0)
		return r;
	if ((r = http_fmt_double(sum, sizeof(sum), hg->sum_ms / 1000.0, 6,
	    0)) != 0)
		return r;
	/* Labels without the trailing comma for _sum and _count. */
	if (label[0] != '\0') {
		int n = (int)strlen(label) - 1;

		if ((r = http_put(b, "%s_sum{%.*s} %s\n%s_count{%.*s} %"
		    PRIu64 "\n", name, n, label, sum, name, n,
		    label, hg->count)) != 0)
			return r;
		return 0;
	}
	return http_put(b, "%s_sum %s\n%s_count %" PRIu64 "\n", name,
	    sum, name, hg->count);
}

/* Build, process start and what the connection limits turned away. */
static int
http_put_process(struct http *h, struct buf *b)
{
	uint64_t drops[DROP__COUNT], limited;
	char start[48];
	int r, i;

	if ((r = http_put(b, "# HELP keyline_build_info Keyline build; the "
	    "value is always 1.\n# TYPE keyline_build_info gauge\n"
	    "keyline_build_info{version=\"%s\",openssl=\"%s\","
	    "libmicrohttpd=\"%s\"} 1\n", KEYLINE_VERSION,
	    OpenSSL_version(OPENSSL_VERSION_STRING), MHD_get_version())) != 0)
		return r;
	if ((r = http_fmt_double(start, sizeof(start), h->start_time_s, 2,
	    1)) != 0 ||
	    (r = http_put(b, "# HELP process_start_time_seconds Start time of "
	    "the process since unix epoch in seconds.\n"
	    "# TYPE process_start_time_seconds gauge\n"
	    "process_start_time_seconds %s\n", start)) != 0)
		return r;
	pthread_mutex_lock(&h->mu);
	memcpy(drops, h->drops, sizeof(drops));
	limited = h->limited;
	pthread_mutex_unlock(&h->mu);
	if ((r = http_put(b, "# HELP keyline_http_connections_dropped_total "
	    "Status API connections refused at accept or closed by the "
	    "limits.\n# TYPE keyline_http_connections_dropped_total "
	    "counter\n")) != 0)
		return r;
	for (i = 0; i < DROP__COUNT; i++)
		if ((r = http_put(b, "keyline_http_connections_dropped_total"
		    "{reason=\"%s\"} %" PRIu64 "\n", http_drops[i].metric,
		    drops[i])) != 0)
			return r;
	if ((r = http_put_counter(b, "keyline_http_requests_limited_total",
	    "Status API requests answered 429 (over rate_limit).", "counter",
	    limited)) != 0)
		return r;
	/* Read in MHD's thread, the only one that writes it. */
	return http_put_counter(b, "keyline_http_status_builds_total",
	    "Times /api/v1/status was built (at most one per "
	    "status_cache_ms).", "counter", h->status_builds);
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
	    (r = http_put_counter(b,
	    "keyline_boards_already_provisioned_total",
	    "Boards that already held their recorded credentials.", "counter",
	    m->already_total)) != 0 ||
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
	    (uint64_t)(s.slots_waiting_ca > 0 ? s.slots_waiting_ca : 0))) != 0 ||
	    (r = http_put_counter(b, "keyline_slots_waiting_registry",
	    "Slots waiting for the plant registry.", "gauge",
	    (uint64_t)(s.slots_waiting_registry > 0 ?
	    s.slots_waiting_registry : 0))) != 0 ||
	    (r = http_put_counter(b, "keyline_slots_held",
	    "Slots held for the operator (too many boards too fast, or too "
	    "many failures in a row).", "gauge",
	    (uint64_t)(s.slots_held > 0 ? s.slots_held : 0))) != 0)
		goto out;
	/* After an outage (docs/plant.md, "offline = local"). */
	if (rq->h->cfg->registry_conninfo[0] != '\0' &&
	    ((r = http_put_counter(b, "keyline_registry_queued",
	    "Devices provisioned while the plant registry was unreachable, "
	    "not yet reconciled with it.", "gauge",
	    (uint64_t)(s.registry_queued > 0 ? s.registry_queued : 0))) != 0 ||
	    (r = http_put_counter(b, "keyline_registry_conflicts",
	    "Devices this station is part of that two boards were "
	    "provisioned as (found after an outage).", "gauge",
	    (uint64_t)(s.registry_conflicts > 0 ? s.registry_conflicts :
	    0))) != 0 ||
	    (r = http_put_counter(b, "keyline_registry_offline",
	    "Whether the last claim found the plant registry unreachable.",
	    "gauge", (uint64_t)(s.registry_offline != 0))) != 0))
		goto out;
	/* Shipping lag to the plant store, in rows (docs/plant.md). */
	if (rq->h->ship != NULL) {
		struct ship_status st;

		ship_status(rq->h->ship, &st);
		if ((r = http_put_counter(b, "keyline_audit_rows_unshipped",
		    "Audit rows committed here and not yet in the plant "
		    "store.", "gauge", (uint64_t)(st.shipped >= 0 &&
		    st.local > st.shipped ? st.local - st.shipped : 0))) != 0 ||
		    (r = http_put_counter(b, "keyline_audit_ship_connected",
		    "Whether the shipper's connection to the plant store is "
		    "up.", "gauge", (uint64_t)(st.connected != 0))) != 0 ||
		    (r = http_put_counter(b, "keyline_audit_ship_refused",
		    "Whether the plant store refused this station's rows "
		    "(provisioning stopped).", "gauge",
		    (uint64_t)(st.refused != 0))) != 0)
			goto out;
	}
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
	    &m->board)) != 0 ||
	    (r = http_put_process(rq->h, b)) != 0)
		goto out;
	r = 0;
 out:
	free(m);
	return r;
}

/* ---- start, stop ------------------------------------------------------- */

/*
 * libmicrohttpd's messages, at most HTTP_LOG_BURST per interval: under a
 * flood it would write one per connection (a full server, a reset peer),
 * and stderr is the console's or the batch operator's.  The rest are
 * counted into the warden's summary line.
 */
static void
http_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct http *h = cls;
	char msg[512];
	size_t n;
	int show;

	pthread_mutex_lock(&h->mu);
	show = h->mhd_lines < HTTP_LOG_BURST;
	if (show)
		h->mhd_lines++;
	else
		h->mhd_suppressed++;
	pthread_mutex_unlock(&h->mu);
	if (!show)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_warn("http: %s", msg);
}

/* ---- connection limits -------------------------------------------------- */

static int
http_addr_same(const struct sockaddr_storage *a, const struct sockaddr *b)
{
	if (a->ss_family != b->sa_family)
		return 0;
	if (b->sa_family == AF_INET)
		return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
		    &((const struct sockaddr_in *)b)->sin_addr,
		    sizeof(struct in_addr)) == 0;
	if (b->sa_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		    &((const struct sockaddr_in6 *)b)->sin6_addr,
		    sizeof(struct in6_addr)) == 0;
	return 0;
}

/* Live connections from addr; with mu held. */
static int
http_addr_count(struct http *h, const struct sockaddr *addr)
{
	struct http_conn *p;
	int n = 0;

	for (p = h->conns; p != NULL; p = p->next)
		if (!p->dying && http_addr_same(&p->addr, addr))
			n++;
	return n;
}

/* Add d to naddr of every live connection sharing hc's address (hc
 * included); with mu held. */
static void
http_addr_adjust(struct http *h, struct http_conn *hc, int d)
{
	struct http_conn *p;

	for (p = h->conns; p != NULL; p = p->next)
		if (!p->dying && http_addr_same(&p->addr,
		    (const struct sockaddr *)&hc->addr))
			p->naddr += d;
}

/*
 * Close hc from outside MHD's loop; with mu held.  shutdown(2), not
 * close(2): MHD sees the end of the stream on its next poll and closes
 * and frees the connection itself, in its own thread.
 */
static void
http_conn_kill(struct http *h, struct http_conn *hc, enum http_drop why)
{
	http_addr_adjust(h, hc, -1);
	hc->dying = 1;
	h->nlive--;
	h->drops[why]++;
	(void)shutdown(hc->fd, SHUT_RDWR);
}

static size_t
http_addr_len(const struct sockaddr *addr)
{
	if (addr->sa_family == AF_INET)
		return sizeof(struct sockaddr_in);
	if (addr->sa_family == AF_INET6)
		return sizeof(struct sockaddr_in6);
	return 0;
}

/* MHD's accept policy: runs in its thread, before the connection exists. */
static enum MHD_Result
http_accept_cb(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
	struct http *h = cls;
	struct http_conn *p, *victim = NULL;
	enum MHD_Result ok = MHD_YES;
	int mine;

	http_thread_lower();
	if (http_addr_len(addr) == 0 || addrlen < http_addr_len(addr))
		return MHD_NO;
	pthread_mutex_lock(&h->mu);
	mine = http_addr_count(h, addr);
	if (mine >= h->cfg->http_max_connections_per_ip) {
		h->drops[DROP_PER_IP]++;
		ok = MHD_NO;
	} else if (h->nlive >= h->cfg->http_max_connections) {
		/*
		 * Full.  A client from a quieter address takes the place of
		 * the oldest connection still waiting for its head from the
		 * busiest address: a handful of hosts holding every slot with
		 * half-sent requests cannot keep the MES or a watchdog out,
		 * and a connection being answered is never cut.
		 */
		for (p = h->conns; p != NULL; p = p->next) {
			if (p->dying || !p->waiting || p->naddr <= mine)
				continue;
			if (victim == NULL || p->naddr > victim->naddr ||
			    (p->naddr == victim->naddr &&
			    p->since_ms < victim->since_ms))
				victim = p;
		}
		if (victim != NULL) {
			http_conn_kill(h, victim, DROP_TAKEN_OVER);
		} else {
			h->drops[DROP_FULL]++;
			ok = MHD_NO;
		}
	}
	pthread_mutex_unlock(&h->mu);
	return ok;
}

/* MHD's STARTED and CLOSED notifications for every connection. */
static void
http_conn_cb(void *cls, struct MHD_Connection *c, void **socket_context,
    enum MHD_ConnectionNotificationCode code)
{
	struct http *h = cls;
	struct http_conn *hc = *socket_context;
	const union MHD_ConnectionInfo *fd, *ad;
	size_t alen;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		fd = MHD_get_connection_info(c,
		    MHD_CONNECTION_INFO_CONNECTION_FD);
		ad = MHD_get_connection_info(c,
		    MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		if (fd == NULL)
			return;
		alen = ad != NULL && ad->client_addr != NULL ?
		    http_addr_len(ad->client_addr) : 0;
		if (alen == 0 || (hc = calloc(1, sizeof(*hc))) == NULL) {
			/* Untracked connections would escape every limit:
			 * end this one (the access handler refuses it). */
			(void)shutdown(fd->connect_fd, SHUT_RDWR);
			return;
		}
		hc->fd = fd->connect_fd;
		memcpy(&hc->addr, ad->client_addr, alen);
		hc->waiting = 1;
		hc->since_ms = http_mono_ms();
		pthread_mutex_lock(&h->mu);
		hc->next = h->conns;
		if (h->conns != NULL)
			h->conns->prev = hc;
		h->conns = hc;
		h->nlive++;
		http_addr_adjust(h, hc, 1);
		pthread_mutex_unlock(&h->mu);
		*socket_context = hc;
		return;
	}
	if (code != MHD_CONNECTION_NOTIFY_CLOSED || hc == NULL)
		return;
	pthread_mutex_lock(&h->mu);
	if (!hc->dying) {
		http_addr_adjust(h, hc, -1);
		h->nlive--;
	}
	if (hc->held) {		/* closed while held: not resumed */
		hc->held = 0;
		h->nheld--;
	}
	if (hc->prev != NULL)
		hc->prev->next = hc->next;
	else
		h->conns = hc->next;
	if (hc->next != NULL)
		hc->next->prev = hc->prev;
	pthread_mutex_unlock(&h->mu);
	*socket_context = NULL;
	free(hc);
}

/*
 * MHD's URI log callback: the request target exactly as sent, before MHD
 * splits and decodes it.  Kept for http_target_parse; NULL is returned so
 * the access handler still sees *con_cls == NULL on its first call.
 */
static void *
http_uri_cb(void *cls, const char *uri, struct MHD_Connection *c)
{
	struct http_conn *hc = http_conn_of(c);
	size_t n;

	(void)cls;
	if (hc == NULL || uri == NULL)
		return NULL;
	n = strnlen(uri, HTTP_TARGET_MAX + 1);
	hc->target_over = n > HTTP_TARGET_MAX;
	hc->target_len = hc->target_over ? 0 : n;
	memcpy(hc->target, uri, hc->target_len);
	hc->target[hc->target_len] = '\0';
	return NULL;
}

/* An answer went out: a kept-alive connection waits for its next head. */
static void
http_done_cb(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct http *h = cls;
	struct http_conn *hc = http_conn_of(c);

	(void)con_cls;
	(void)toe;
	if (hc == NULL)
		return;
	pthread_mutex_lock(&h->mu);
	hc->waiting = 1;
	hc->since_ms = http_mono_ms();
	pthread_mutex_unlock(&h->mu);
}

/* Under mu: a held request goes back to MHD, to be answered 429. */
static void
http_conn_release(struct http *h, struct http_conn *p)
{
	p->held = 0;
	p->held_done = 1;
	h->nheld--;
	MHD_resume_connection(p->mc);
}

/*
 * The warden: closes connections past their header deadline, releases
 * held requests whose time has come, and once
 * per HTTP_LOG_INTERVAL_MS logs one line saying what the limits did.
 */
static void *
http_warden(void *arg)
{
	struct http *h = arg;
	struct http_conn *p;
	struct timespec ts;
	char line[768];
	size_t off;
	uint64_t d[DROP__COUNT], supp;
	int64_t now;
	int i, any;

	http_thread_lower();
	pthread_mutex_lock(&h->mu);
	while (!h->stopping) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += HTTP_WARDEN_TICK_MS * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		(void)pthread_cond_timedwait(&h->cv, &h->mu, &ts);
		if (h->stopping)
			break;
		now = http_mono_ms();
		for (p = h->conns; p != NULL; p = p->next) {
			if (p->held && now >= p->held_until)
				http_conn_release(h, p);
			if (!p->dying && p->waiting &&
			    now - p->since_ms > HTTP_HEADER_TIMEOUT_MS)
				http_conn_kill(h, p, DROP_HEADER_TIMEOUT);
		}
		if (now - h->log_at_ms < HTTP_LOG_INTERVAL_MS)
			continue;
		any = 0;
		for (i = 0; i < DROP__COUNT; i++) {
			d[i] = h->drops[i] - h->drops_logged[i];
			h->drops_logged[i] = h->drops[i];
			any |= d[i] != 0;
		}
		supp = h->mhd_suppressed;
		h->mhd_suppressed = 0;
		h->mhd_lines = 0;
		h->log_at_ms = now;
		if (!any && supp == 0)
			continue;
		off = (size_t)snprintf(line, sizeof(line), "connections in "
		    "the last %d s:", HTTP_LOG_INTERVAL_MS / 1000);
		for (i = 0; i < DROP__COUNT && off < sizeof(line); i++)
			if (d[i] != 0)
				off += (size_t)snprintf(line + off,
				    sizeof(line) - off, " %" PRIu64 " %s;",
				    d[i], http_drops[i].log);
		if (supp != 0 && off < sizeof(line))
			(void)snprintf(line + off, sizeof(line) - off,
			    " %" PRIu64 " libmicrohttpd messages not shown;",
			    supp);
		/* Not under the mutex: stderr may be a slow terminal. */
		pthread_mutex_unlock(&h->mu);
		log_warn("http: %s", line);
		pthread_mutex_lock(&h->mu);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

/*
 * When this process started, in Unix seconds: /proc/self/stat's start
 * time (field 22, clock ticks after boot) plus /proc/stat's btime; the
 * server's own start when /proc cannot say.
 */
static double
http_process_start(void)
{
	char line[1024], *p, *end;
	unsigned long long ticks = 0, btime = 0;
	long hz = sysconf(_SC_CLK_TCK);
	FILE *f;
	int i, ok = 0;

	if ((f = fopen("/proc/self/stat", "r")) != NULL) {
		/* The command name may hold spaces and ')': fields start
		 * after the last ')'. */
		if (fgets(line, sizeof(line), f) != NULL &&
		    (p = strrchr(line, ')')) != NULL) {
			p++;
			/* Field 3 is the state letter; 22 is 19 further. */
			for (i = 3; i < 22 && p != NULL; i++)
				p = strchr(p + 1, ' ');
			if (p != NULL) {
				errno = 0;
				ticks = strtoull(p + 1, &end, 10);
				ok = errno == 0 && end != p + 1;
			}
		}
		fclose(f);
	}
	if (ok && (f = fopen("/proc/stat", "r")) != NULL) {
		ok = 0;
		while (fgets(line, sizeof(line), f) != NULL) {
			if (strncmp(line, "btime ", 6) != 0)
				continue;
			errno = 0;
			btime = strtoull(line + 6, &end, 10);
			ok = errno == 0 && end != line + 6;
			break;
		}
		fclose(f);
	}
	if (!ok || hz <= 0)
		return (double)http_now_ms() / 1000.0;
	return (double)btime + (double)ticks / (double)hz;
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
	if ((h->token = secret_alloc(HTTP_TOKEN_MAX)) == NULL) {
		snprintf(err, errsz, "%s: %s", path, kl_strerror(KL_ERR_NOMEM));
		r = KL_ERR_NOMEM;
		goto out;
	}
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
	/* MHD is stopped: every CLOSED was notified, the list is empty,
	 * and no connection holds the cached responses any more. */
	if (h->status.ok != NULL)
		MHD_destroy_response(h->status.ok);
	if (h->status.unchanged != NULL)
		MHD_destroy_response(h->status.unchanged);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	secret_free(h->token, HTTP_TOKEN_MAX);
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
	pthread_condattr_t ca;
	/* epoll on Linux: no FD_SETSIZE ceiling under a flood. */
	unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG |
	    MHD_ALLOW_SUSPEND_RESUME;
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
	h->ship = o->ship;
	h->start_time_s = http_process_start();
	h->log_at_ms = http_mono_ms();
	pthread_mutex_init(&h->mu, NULL);
	/* The warden's waits run on the monotonic clock, like its deadlines. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cv, &ca);
	pthread_condattr_destroy(&ca);
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

	/*
	 * http_accept_cb enforces max_connections and the per-address
	 * limit; MHD's own limit is only a backstop with room for the
	 * connections shut down but not yet closed.  TLS options last: MHD
	 * ignores them unless MHD_USE_TLS is set, and MHD_OPTION_END before
	 * them ends the list for plain HTTP.
	 */
	h->d = MHD_start_daemon(flags, (uint16_t)cfg->http_port,
	    http_accept_cb, h, http_access, h,
	    MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, (void *)h,
	    MHD_OPTION_SOCK_ADDR, sa,
	    MHD_OPTION_NOTIFY_CONNECTION, http_conn_cb, (void *)h,
	    MHD_OPTION_NOTIFY_COMPLETED, http_done_cb, (void *)h,
	    MHD_OPTION_URI_LOG_CALLBACK, http_uri_cb, (void *)h,
	    MHD_OPTION_CONNECTION_LIMIT,
	    (unsigned int)cfg->http_max_connections * 2,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)HTTP_CONN_TIMEOUT_S,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
	    tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END,
	    (const char *)h->tls_cert,
	    MHD_OPTION_HTTPS_MEM_KEY, (const char *)h->tls_key,
	    MHD_OPTION_HTTPS_PRIORITIES, HTTP_TLS_PRIORITIES,
	    MHD_OPTION_END);
	if (h->d == NULL) {
		snprintf(err, errsz, "http: cannot listen on %s port %d%s "
		    "(address in use, or bad TLS files)", cfg->http_bind,
		    cfg->http_port, tls ? " with TLS" : "");
		r = KL_ERR_IO;
		goto out;
	}
	if (pthread_create(&h->warden, NULL, http_warden, h) != 0) {
		snprintf(err, errsz, "http: cannot start the connection "
		    "warden thread");
		MHD_stop_daemon(h->d);
		h->d = NULL;
		r = KL_ERR_NOMEM;
		goto out;
	}
	h->warden_started = 1;
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
	if (h->warden_started) {
		struct http_conn *p;

		pthread_mutex_lock(&h->mu);
		h->stopping = 1;
		pthread_cond_signal(&h->cv);
		/* MHD stops only with no connection suspended. */
		for (p = h->conns; p != NULL; p = p->next)
			if (p->held)
				http_conn_release(h, p);
		pthread_mutex_unlock(&h->mu);
		pthread_join(h->warden, NULL);
	}
	/* Waits for the polling thread: no handler runs after this. */
	if (h->d != NULL)
		MHD_stop_daemon(h->d);
	http_free(h);
}
