/*
 * vjig.c: the station's side of keyline-jig's control socket (vjig.h).
 *
 * One datagram out, one answer back ("ok" or "error <words>") once the
 * board has power again: at most the off time plus VJIG_ANSWER_MS.
 */
#include "station/jig/vjig.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "station/config/config.h"
#include "station/engine/engine.h"
#include "common/err.h"
#include "common/log.h"

#define VJIG_ANSWER_MS 2000

struct vjig {
	const struct config *cfg;	/* borrowed */
	struct engine_jig_ops ops;
};

static int
vjig_power_cycle(void *ctx, int n)
{
	struct vjig *v = ctx;
	struct sockaddr_un to, me;
	struct pollfd pfd;
	char msg[64], ans[128];
	ssize_t got;
	int fd, r = KL_ERR_IO;

	memset(&to, 0, sizeof(to));
	to.sun_family = AF_UNIX;
	if (snprintf(to.sun_path, sizeof(to.sun_path), "%s",
	    v->cfg->jig_control) >= (int)sizeof(to.sun_path)) {
		log_error("[jig] control: path too long for a socket");
		return KL_ERR_PATH;
	}
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return KL_ERR_IO;
	/* Autobind to an abstract address so the jig can answer. */
	memset(&me, 0, sizeof(me));
	me.sun_family = AF_UNIX;
	if (bind(fd, (struct sockaddr *)&me, sizeof(sa_family_t)) != 0)
		goto out;
	snprintf(msg, sizeof(msg), "power-cycle %d %d", n,
	    v->cfg->jig_power_off_ms);
	if (sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&to,
	    sizeof(to)) < 0) {
		log_error("power-cycle slot %d: %s: %s", n, to.sun_path,
		    strerror(errno));
		r = errno == ENOENT || errno == ECONNREFUSED ?
		    KL_ERR_UNAVAILABLE : KL_ERR_IO;
		goto out;
	}
	pfd.fd = fd;
	pfd.events = POLLIN;
	if (poll(&pfd, 1, v->cfg->jig_power_off_ms + VJIG_ANSWER_MS) != 1 ||
	    (got = recv(fd, ans, sizeof(ans) - 1, 0)) <= 0) {
		log_error("power-cycle slot %d: the jig did not answer", n);
		r = KL_ERR_TIMEOUT;
		goto out;
	}
	ans[got] = '\0';
	if (strncmp(ans, "ok", 2) != 0) {
		log_error("power-cycle slot %d: jig says: %.100s", n, ans);
		r = KL_ERR_REMOTE;
		goto out;
	}
	r = 0;
out:
	close(fd);
	return r;
}

int
vjig_open(struct vjig **out, const struct config *cfg)
{
	struct vjig *v;

	if ((v = calloc(1, sizeof(*v))) == NULL)
		return KL_ERR_NOMEM;
	v->cfg = cfg;
	v->ops.resolve = NULL;
	v->ops.power_cycle = vjig_power_cycle;
	v->ops.ctx = v;
	*out = v;
	return 0;
}

void
vjig_close(struct vjig *v)
{
	free(v);
}

const struct engine_jig_ops *
vjig_ops(struct vjig *v)
{
	return &v->ops;
}
