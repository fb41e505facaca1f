/*
 * checkpoint.c: the audit checkpoint signer, a helper process holding its
 * own session on the station token (see checkpoint.h for why a process).
 *
 * Wire between station and helper, over a SOCK_STREAM socket pair:
 *   station -> helper: u32 length (1..CKPT_MSG_MAX), the message
 *   helper -> station: i32 status (0 or a KL_ERR_*), u32 length
 *                      (0..CKPT_SIG_MAX), the signature
 * all integers little-endian.  The helper first sends one i32: 0 when it
 * holds the key, else the error.  It exits when the socket closes, or
 * when the station dies (PR_SET_PDEATHSIG).
 */
#include "station/checkpoint.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "hsm/hsm.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"

/* A checkpoint message is a few hundred bytes. */
#define CKPT_MSG_MAX 4096
#define CKPT_SIG_MAX 1024
#define CKPT_TIMEOUT_MS 10000

struct checkpoint_signer {
	pthread_mutex_t lock;
	int fd;
	pid_t pid;
	EVP_PKEY *pub;		/* the certificate's key */
};

static void
ckpt_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t
ckpt_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

/* All n bytes, or KL_ERR_IO / KL_ERR_CLOSED; timeout_ms < 0 waits. */
static int
ckpt_read(int fd, void *buf, size_t n, int timeout_ms)
{
	struct pollfd pfd;
	uint8_t *p = buf;
	ssize_t k;
	int pr;

	while (n > 0) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		pr = poll(&pfd, 1, timeout_ms);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return KL_ERR_IO;
		if (pr == 0)
			return KL_ERR_TIMEOUT;
		k = read(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return KL_ERR_IO;
		if (k == 0)
			return KL_ERR_CLOSED;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int
ckpt_write(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	ssize_t k;

	while (n > 0) {
		k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return KL_ERR_CLOSED;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int
ckpt_reply(int fd, int status, const uint8_t *sig, size_t sig_len)
{
	uint8_t hdr[8];

	ckpt_put32(hdr, (uint32_t)status);
	ckpt_put32(hdr + 4, (uint32_t)sig_len);
	if (ckpt_write(fd, hdr, sizeof(hdr)) != 0)
		return KL_ERR_CLOSED;
	return sig_len > 0 ? ckpt_write(fd, sig, sig_len) : 0;
}

/* The helper's whole life; never returns. */
static void __attribute__((noreturn))
ckpt_helper(int fd, pid_t parent, const char *module, const char *label,
    char *pin, const uint8_t *id, size_t id_len)
{
	struct hsm *h = NULL;
	uint8_t hdr[4], *msg = NULL, *sig = NULL;
	size_t sig_len = 0;
	uint32_t len;
	int r;

	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(0);
	/* The station may have set SIGINT/SIGTERM handlers that write to its
	 * own pipes; the helper only stops when its socket closes. */
	(void)signal(SIGINT, SIG_IGN);
	(void)signal(SIGTERM, SIG_DFL);
	r = hsm_open(&h, module, label, pin);
	buf_wipe(pin, strlen(pin));
	if (r == 0) {
		/* The key must be there now, not at the first checkpoint. */
		EVP_PKEY *k = NULL;

		r = hsm_get_private_key(h, id, id_len, &k);
		EVP_PKEY_free(k);
	}
	ckpt_put32(hdr, (uint32_t)r);
	if (ckpt_write(fd, hdr, 4) != 0 || r != 0)
		goto out;
	if ((msg = malloc(CKPT_MSG_MAX)) == NULL)
		goto out;
	for (;;) {
		if (ckpt_read(fd, hdr, 4, -1) != 0)
			break;
		len = ckpt_get32(hdr);
		if (len == 0 || len > CKPT_MSG_MAX ||
		    ckpt_read(fd, msg, len, CKPT_TIMEOUT_MS) != 0)
			break;
		r = hsm_sign(h, id, id_len, msg, len, &sig, &sig_len);
		if (r == 0 && (sig_len == 0 || sig_len > CKPT_SIG_MAX))
			r = KL_ERR_CRYPTO;
		if (ckpt_reply(fd, r, r == 0 ? sig : NULL, r == 0 ? sig_len :
		    0) != 0)
			break;
		OPENSSL_free(sig);
		sig = NULL;
	}
 out:
	OPENSSL_free(sig);
	free(msg);
	hsm_close(h);
	_exit(0);
}

static EVP_PKEY *
ckpt_load_cert_key(const char *path, char *err, size_t errsz)
{
	EVP_PKEY *k = NULL;
	X509 *x = NULL;
	FILE *fp;

	if ((fp = fopen(path, "r")) == NULL) {
		snprintf(err, errsz, "cannot open %s: %s", path,
		    strerror(errno));
		return NULL;
	}
	x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	if (x == NULL || (k = X509_get_pubkey(x)) == NULL) {
		ERR_clear_error();
		snprintf(err, errsz, "%s is not a PEM certificate", path);
	}
	X509_free(x);
	return k;
}

int
checkpoint_signer_new(struct checkpoint_signer **out, const char *module,
    const char *token_label, const char *pin, const char *key_id_hex,
    const char *cert_path, char *err, size_t errsz)
{
	struct checkpoint_signer *s = NULL;
	uint8_t id[64], hdr[4], *sig = NULL;
	size_t id_len = 0, sig_len = 0, n;
	char pinbuf[256];
	int sv[2] = { -1, -1 }, r = KL_ERR_INTERNAL, st;
	pid_t parent = getpid(), pid;

	if (out == NULL || module == NULL || pin == NULL ||
	    key_id_hex == NULL || cert_path == NULL)
		return KL_ERR_INVALID;
	if (hsm_id_from_hex(key_id_hex, id, sizeof(id), &id_len) != 0) {
		snprintf(err, errsz, "checkpoint_key_id '%s' is not hex",
		    key_id_hex);
		return KL_ERR_CONFIG;
	}
	if ((n = strlen(pin)) >= sizeof(pinbuf)) {
		snprintf(err, errsz, "PIN too long");
		return KL_ERR_CONFIG;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return KL_ERR_NOMEM;
	s->fd = -1;
	s->pid = -1;
	if (pthread_mutex_init(&s->lock, NULL) != 0) {
		free(s);
		return KL_ERR_INTERNAL;
	}
	if ((s->pub = ckpt_load_cert_key(cert_path, err, errsz)) == NULL) {
		r = KL_ERR_CONFIG;
		goto out;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		snprintf(err, errsz, "socketpair: %s", strerror(errno));
		r = KL_ERR_IO;
		goto out;
	}
	/* Copied before the fork: the caller's PIN may sit on pages that a
	 * child does not get. */
	memcpy(pinbuf, pin, n + 1);
	fflush(NULL);
	if ((pid = fork()) < 0) {
		snprintf(err, errsz, "fork: %s", strerror(errno));
		r = KL_ERR_IO;
		goto out;
	}
	if (pid == 0) {
		close(sv[0]);
		ckpt_helper(sv[1], parent, module, token_label, pinbuf, id,
		    id_len);
	}
	s->pid = pid;
	close(sv[1]);
	sv[1] = -1;
	s->fd = sv[0];
	sv[0] = -1;
	/* hsm_open on a network HSM may take a while: no timeout here. */
	if ((r = ckpt_read(s->fd, hdr, 4, -1)) != 0) {
		snprintf(err, errsz, "the checkpoint signer died at start-up");
		goto out;
	}
	if ((st = (int)ckpt_get32(hdr)) != 0) {
		r = st;
		snprintf(err, errsz, "no checkpoint key %s in the station "
		    "token: %s", key_id_hex, kl_strerror(st));
		goto out;
	}
	/* The key and the certificate must belong together, or every
	 * checkpoint would fail verification later, unnoticed until then. */
	if ((r = checkpoint_sign(s, (const uint8_t *)"keyline-checkpoint-test",
	    23, &sig, &sig_len)) != 0) {
		snprintf(err, errsz, "checkpoint key %s does not sign for the "
		    "certificate %s: %s", key_id_hex, cert_path,
		    kl_strerror(r));
		r = KL_ERR_CONFIG;
		goto out;
	}
	*out = s;
	s = NULL;
	r = 0;
 out:
	buf_wipe(pinbuf, sizeof(pinbuf));
	free(sig);
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	checkpoint_signer_free(s);
	return r;
}

int
checkpoint_sign(void *arg, const uint8_t *msg, size_t len, uint8_t **sig,
    size_t *sig_len)
{
	struct checkpoint_signer *s = arg;
	EVP_MD_CTX *md = NULL;
	uint8_t hdr[8], *out = NULL;
	uint32_t n = 0;
	int r, st;

	if (s == NULL || msg == NULL || len == 0 || len > CKPT_MSG_MAX ||
	    sig == NULL || sig_len == NULL)
		return KL_ERR_INVALID;
	pthread_mutex_lock(&s->lock);
	ckpt_put32(hdr, (uint32_t)len);
	if ((r = ckpt_write(s->fd, hdr, 4)) != 0 ||
	    (r = ckpt_write(s->fd, msg, len)) != 0 ||
	    (r = ckpt_read(s->fd, hdr, 8, CKPT_TIMEOUT_MS)) != 0) {
		log_error("checkpoint: the signer process does not answer: %s",
		    kl_strerror(r));
		goto out;
	}
	st = (int)ckpt_get32(hdr);
	n = ckpt_get32(hdr + 4);
	if (st != 0) {
		log_error("checkpoint: signing in the token failed: %s",
		    kl_strerror(st));
		r = st < 0 ? st : KL_ERR_HSM;
		goto out;
	}
	if (n == 0 || n > CKPT_SIG_MAX) {
		r = KL_ERR_PROTO;
		goto out;
	}
	if ((out = malloc(n)) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	if ((r = ckpt_read(s->fd, out, n, CKPT_TIMEOUT_MS)) != 0)
		goto out;
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, s->pub) != 1 ||
	    EVP_DigestVerify(md, out, n, msg, len) != 1) {
		ERR_clear_error();
		log_error("checkpoint: the token's signature does not verify "
		    "with checkpoint_cert: key and certificate do not match");
		r = KL_ERR_CRYPTO;
		goto out;
	}
	*sig = out;
	*sig_len = n;
	out = NULL;
	r = 0;
 out:
	pthread_mutex_unlock(&s->lock);
	EVP_MD_CTX_free(md);
	free(out);
	return r;
}

void
checkpoint_signer_free(struct checkpoint_signer *s)
{
	if (s == NULL)
		return;
	if (s->fd >= 0)
		close(s->fd);	/* the helper sees EOF and exits */
	if (s->pid > 0)
		while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
			;
	EVP_PKEY_free(s->pub);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
