/*
 * http.h: the read-only HTTP status API for the plant's MES
 * (libmicrohttpd; docs/http-api.md).
 *
 * Started beside the console or batch mode when station.conf has
 * [http] enabled = yes.  It only reads: engine snapshots and the audit
 * log; nothing can change state through it.  Its threads never hold the
 * engine's lock longer than a snapshot copy.
 */
#ifndef KL_HTTP_H
#define KL_HTTP_H

#include <stddef.h>

struct engine;
struct audit;
struct config;

struct http_opts {
	struct engine *engine;		/* borrowed, outlives the server */
	struct audit *audit;		/* borrowed, outlives the server */
	const struct config *cfg;	/* borrowed: [station] and [http] */
	struct ship *ship;		/* borrowed; NULL without audit
					 * shipping to a plant store */
};

struct http;
struct ship;

/*
 * Bind and start serving.  0 and *out (stop with http_stop), or
 * KL_ERR_CONFIG / KL_ERR_IO with the reason in err (bind failed, token
 * file unreadable or empty, TLS files bad).
 */
int http_start(struct http **out, const struct http_opts *o, char *err,
    size_t errsz);
/* Stop serving and free; accepts NULL. */
void http_stop(struct http *h);

#endif
