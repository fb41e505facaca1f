/*
 * serial.c: the termios transport (link_ops, see link.h).
 *
 * Raw 8N1, no flow control, the requested baud.  The fd is non-blocking and
 * every read and write waits in poll() for at most the caller's timeout, so
 * a board that stops answering can never hang a slot.  A pty from the
 * virtual jig is opened exactly like /dev/ttyACM0.
 */
#include "station/link/serial.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

struct serial_ctx {
	int fd;
	int drained;	/* the last read() emptied the tty (or nothing was
			 * read yet since a write): wait before reading */
};

struct serial_baud {
	int baud;
	speed_t speed;
};

/* Every rate termios names (no custom divisors); config.c accepts exactly
 * these, through serial_baud_supported(). */
static const struct serial_baud serial_bauds[] = {
	{ 1200, B1200 }, { 2400, B2400 }, { 4800, B4800 },
	{ 9600, B9600 }, { 19200, B19200 }, { 38400, B38400 },
	{ 57600, B57600 }, { 115200, B115200 }, { 230400, B230400 },
	{ 460800, B460800 }, { 500000, B500000 }, { 576000, B576000 },
	{ 921600, B921600 }, { 1000000, B1000000 }, { 1152000, B1152000 },
	{ 1500000, B1500000 }, { 2000000, B2000000 }, { 2500000, B2500000 },
	{ 3000000, B3000000 }, { 3500000, B3500000 }, { 4000000, B4000000 },
};

static int
serial_speed(int baud, speed_t *out)
{
	size_t i;

	for (i = 0; i < sizeof(serial_bauds) / sizeof(serial_bauds[0]); i++) {
		if (serial_bauds[i].baud == baud) {
			*out = serial_bauds[i].speed;
			return 0;
		}
	}
	return KL_ERR_INVALID;
}

int
serial_baud_supported(int baud)
{
	speed_t s;

	return serial_speed(baud, &s) == 0;
}

static int
serial_open(const char *path, const struct link_params *p, void **ctx)
{
	struct serial_ctx *s = NULL;
	struct termios tio;
	speed_t speed = B0;	/* set below whenever it is used */
	int fd = -1, r = KL_ERR_INTERNAL;

	if (p != NULL && p->baud != 0 && serial_speed(p->baud, &speed) != 0) {
		log_error("%s: unsupported baud rate %d", path, p->baud);
		return KL_ERR_INVALID;
	}
	fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		log_error("open %s: %s", path, strerror(errno));
		r = errno == ENOENT ? KL_ERR_NOT_FOUND : KL_ERR_IO;
		goto out;
	}
	if (tcgetattr(fd, &tio) != 0) {
		log_error("%s: not a terminal: %s", path, strerror(errno));
		r = KL_ERR_IO;
		goto out;
	}
	cfmakeraw(&tio);
	tio.c_cflag |= CLOCAL | CREAD;
	tio.c_cflag &= ~(CSTOPB | CRTSCTS);
	/* VMIN 1, not 0: with VMIN 0 and VTIME 0 a tty read() returns 0 when
	 * no byte is waiting, even on a non-blocking fd, which reads as
	 * hang-up.  With VMIN 1 an empty line gives EAGAIN and 0 means the
	 * line really hung up; O_NONBLOCK keeps read() from blocking. */
	tio.c_cc[VMIN] = 1;
	tio.c_cc[VTIME] = 0;
	if (p != NULL && p->baud != 0) {
		cfsetispeed(&tio, speed);
		cfsetospeed(&tio, speed);
	}
	if (tcsetattr(fd, TCSANOW, &tio) != 0) {
		log_error("%s: tcsetattr: %s", path, strerror(errno));
		r = KL_ERR_IO;
		goto out;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	s->fd = fd;
	fd = -1;
	*ctx = s;
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	return r;
}

static int64_t
serial_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events; 1 ready, KL_ERR_TIMEOUT, KL_ERR_CLOSED, KL_ERR_IO. */
static int
serial_wait(int fd, short events, int64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int64_t left;
	int n;

	for (;;) {
		left = deadline - serial_now_ms();
		if (left < 0)
			left = 0;
		n = poll(&pfd, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return KL_ERR_IO;
		if (n == 0)
			return KL_ERR_TIMEOUT;
		if (pfd.revents & events)
			return 1;
		if (pfd.revents & (POLLHUP | POLLERR | POLLNVAL))
			return KL_ERR_CLOSED;
	}
}

static int
serial_read(void *ctx, void *p, size_t n, int timeout_ms)
{
	struct serial_ctx *s = ctx;
	int64_t deadline = serial_now_ms() + timeout_ms;
	ssize_t got;
	int r;

	for (;;) {
		/* After a request, or a read that emptied the tty, nothing
		 * is there yet: wait first rather than pay for a read()
		 * that says so. */
		if (s->drained && (r = serial_wait(s->fd, POLLIN, deadline)) != 1)
			return r;
		got = read(s->fd, p, n);
		if (got > 0) {
			s->drained = (size_t)got < n;
			return (int)got;
		}
		if (got == 0 || (got < 0 && errno == EIO))
			return KL_ERR_CLOSED;
		if (errno != EAGAIN && errno != EINTR)
			return KL_ERR_IO;
		s->drained = 1;
	}
}

static int
serial_write(void *ctx, const void *p, size_t n, int timeout_ms)
{
	struct serial_ctx *s = ctx;
	int64_t deadline = serial_now_ms() + timeout_ms;
	const uint8_t *b = p;
	ssize_t put;
	int r;

	while (n > 0) {
		put = write(s->fd, b, n);
		if (put > 0) {
			b += put;
			n -= (size_t)put;
			continue;
		}
		if (put < 0 && errno == EIO)
			return KL_ERR_CLOSED;
		if (put < 0 && errno != EAGAIN && errno != EINTR)
			return KL_ERR_IO;
		if ((r = serial_wait(s->fd, POLLOUT, deadline)) != 1)
			return r;
	}
	s->drained = 1;		/* the answer takes the board a while */
	return 0;
}

static void
serial_flush(void *ctx)
{
	struct serial_ctx *s = ctx;

	tcflush(s->fd, TCIOFLUSH);
}

static void
serial_close(void *ctx)
{
	struct serial_ctx *s = ctx;

	if (s == NULL)
		return;
	close(s->fd);
	free(s);
}

const struct link_ops serial_link_ops = {
	.name = "serial",
	.open = serial_open,
	.read = serial_read,
	.write = serial_write,
	.close = serial_close,
	.flush = serial_flush,
};
