/*
 * usbjig.c: USB jig discovery, slot mapping, hotplug and per-port power
 * (see usbjig.h, docs/usb-jig.md).
 *
 * Two sources, each for what it does best:
 * - libusb for enumeration (port numbers, bus), hotplug events and the hub
 *   class control requests that switch port power;
 * - sysfs (/sys/bus/usb/devices/<port>) for the serial string and the tty
 *   a driver bound, which libusb cannot see.  resolve() reads sysfs only:
 *   the engine calls it every second per idle slot, and a walk of a few
 *   small files is cheaper than a libusb enumeration, needs no access to
 *   the device node and never disturbs the driver that owns the tty.
 *
 * libusb codes are logged where they enter and mapped to KL_ERR_*.
 */
#include "station/jig/usbjig.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libusb.h>

#include "station/engine/engine.h"
#include "common/err.h"
#include "common/log.h"

#define USBJIG_SYSFS "/sys/bus/usb/devices"
/* A USB device is at most 7 tiers below its root hub. */
#define USBJIG_MAX_DEPTH 7
/* How long an arrival waits for its tty before it is reported anyway. */
#define USBJIG_TTY_WAIT_MS 3000
#define USBJIG_CTRL_TIMEOUT_MS 1000

/* USB 2.0 11.24.2 / USB 3.2 10.16.2: hub class requests. */
#define HUB_REQ_CLEAR_FEATURE 0x01
#define HUB_REQ_SET_FEATURE 0x03
#define HUB_REQ_GET_DESCRIPTOR 0x06
#define HUB_FEAT_PORT_POWER 8
#define HUB_DT_USB2 0x29
#define HUB_DT_USB3 0x2a
/* wHubCharacteristics bits 1:0, logical power switching mode. */
#define HUB_LPSM_MASK 0x0003
#define HUB_LPSM_GANGED 0x0000
#define HUB_LPSM_PER_PORT 0x0001

struct usbjig {
	const struct config *cfg;	/* borrowed */
	libusb_context *ctx;
	struct engine_jig_ops ops;

	/* Hotplug thread. */
	pthread_mutex_t mu;		/* guards fn/arg/running/stop */
	pthread_t thread;
	int running;
	volatile int stop;		/* read by libusb in the thread */
	usbjig_notify_fn fn;
	void *arg;
	libusb_hotplug_callback_handle cb;
	/* Arrivals waiting for their tty, by slot number; touched only in
	 * the hotplug thread (libusb calls back in the thread that handles
	 * events). */
	int64_t pending[CONFIG_MAX_SLOTS + 1];	/* deadline, 0 = none */
};

static int
usbjig_err(int lr, const char *what)
{
	log_error("usbjig: %s: %s (libusb %d)", what, libusb_error_name(lr),
	    lr);
	switch (lr) {
	case LIBUSB_ERROR_NO_MEM:
		return KL_ERR_NOMEM;
	case LIBUSB_ERROR_NO_DEVICE:
	case LIBUSB_ERROR_NOT_FOUND:
		return KL_ERR_NOT_FOUND;
	case LIBUSB_ERROR_TIMEOUT:
		return KL_ERR_TIMEOUT;
	case LIBUSB_ERROR_NOT_SUPPORTED:
		return KL_ERR_UNSUPPORTED;
	default:
		return KL_ERR_IO;
	}
}

static int64_t
usbjig_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const struct config_slot *
usbjig_slot(const struct config *cfg, int n)
{
	int i;

	for (i = 0; i < cfg->nslots; i++)
		if (cfg->slots[i].number == n)
			return &cfg->slots[i];
	return NULL;
}

static int
usbjig_slot_of_port(const struct config *cfg, const char *port)
{
	int i;

	for (i = 0; i < cfg->nslots; i++)
		if (cfg->slots[i].usb_port[0] != '\0' &&
		    strcmp(cfg->slots[i].usb_port, port) == 0)
			return cfg->slots[i].number;
	return 0;
}

static int
usbjig_id_wanted(const struct config *cfg, uint16_t vid, uint16_t pid)
{
	int i;

	for (i = 0; i < cfg->jig_usb_ids.n; i++)
		if (cfg->jig_usb_ids.id[i].vid == vid &&
		    cfg->jig_usb_ids.id[i].pid == pid)
			return 1;
	return 0;
}

int
usbjig_configured(const struct config *cfg)
{
	int i;

	if (cfg->jig_usb_ids.n > 0)
		return 1;
	for (i = 0; i < cfg->nslots; i++)
		if (cfg->slots[i].usb_port[0] != '\0')
			return 1;
	return 0;
}

/* ---- sysfs ------------------------------------------------------------- */

/* Plain names only: a sysfs entry name becomes part of a path. */
static int
usbjig_plain_name(const char *s, size_t max)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		char c = s[i];

		if (i >= max || !((c >= 'a' && c <= 'z') ||
		    (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '_' || c == '-' || c == '.' || c == ':'))
			return 0;
	}
	return i > 0 && s[0] != '.';
}

/*
 * Read a sysfs attribute as text, at most outsz - 1 bytes, trailing
 * newline dropped.  Bytes other than printable ASCII become '?' so a
 * device's strings can go to a terminal or JSON.  0 or KL_ERR_NOT_FOUND.
 */
static int
usbjig_attr(const char *port, const char *attr, char *out, size_t outsz)
{
	char path[256];
	ssize_t n;
	size_t i;
	int fd;

	if (snprintf(path, sizeof(path), "%s/%s/%s", USBJIG_SYSFS, port,
	    attr) >= (int)sizeof(path))
		return KL_ERR_NOT_FOUND;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return KL_ERR_NOT_FOUND;
	do {
		n = read(fd, out, outsz - 1);
	} while (n < 0 && errno == EINTR);
	close(fd);
	if (n < 0)
		return KL_ERR_NOT_FOUND;
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\0'))
		n--;
	out[n] = '\0';
	for (i = 0; i < (size_t)n; i++)
		if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e)
			out[i] = '?';
	return 0;
}

static int
usbjig_attr_hex16(const char *port, const char *attr, uint16_t *out)
{
	char buf[16], *end;
	unsigned long v;

	if (usbjig_attr(port, attr, buf, sizeof(buf)) != 0 || buf[0] == '\0')
		return KL_ERR_NOT_FOUND;
	errno = 0;
	v = strtoul(buf, &end, 16);
	if (errno != 0 || *end != '\0' || v > 0xffff)
		return KL_ERR_NOT_FOUND;
	*out = (uint16_t)v;
	return 0;
}

/* The tty under interface directory ifdir: <if>/tty/ttyACM0 (cdc_acm) or
 * <if>/ttyUSB0 (usb-serial: ftdi_sio, cp210x, ...). */
static int
usbjig_tty_in(const char *ifdir, char *name, size_t namesz)
{
	static const char *const sub[] = { "/tty", "" };
	char path[512];
	size_t i;

	for (i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
		struct dirent *de;
		DIR *d;

		snprintf(path, sizeof(path), "%s%s", ifdir, sub[i]);
		if ((d = opendir(path)) == NULL)
			continue;
		while ((de = readdir(d)) != NULL) {
			if (strncmp(de->d_name, "tty", 3) != 0 ||
			    strcmp(de->d_name, "tty") == 0 ||
			    !usbjig_plain_name(de->d_name, 32) ||
			    strlen(de->d_name) >= namesz)
				continue;
			/* Fits: checked against namesz above. */
			memcpy(name, de->d_name, strlen(de->d_name) + 1);
			closedir(d);
			return 0;
		}
		closedir(d);
	}
	return KL_ERR_NOT_FOUND;
}

int
usbjig_tty_of(const char *port, char *tty, size_t ttysz)
{
	char best[64] = "", name[64], ifdir[512];
	size_t plen = strlen(port);
	long best_if = -1;
	struct dirent *de;
	DIR *d;

	if (!usbjig_plain_name(port, CONFIG_USB_PORT_MAX))
		return KL_ERR_NOT_FOUND;
	if ((d = opendir(USBJIG_SYSFS)) == NULL)
		return KL_ERR_NOT_FOUND;
	while ((de = readdir(d)) != NULL) {
		const char *dot;
		char *end;
		long ifnum;

		/* Interfaces of this device: "<port>:<config>.<if>". */
		if (strncmp(de->d_name, port, plen) != 0 ||
		    de->d_name[plen] != ':' ||
		    !usbjig_plain_name(de->d_name, 64) ||
		    (dot = strchr(de->d_name + plen, '.')) == NULL)
			continue;
		ifnum = strtol(dot + 1, &end, 10);
		if (*end != '\0' || ifnum < 0 ||
		    (best_if >= 0 && ifnum >= best_if))
			continue;
		snprintf(ifdir, sizeof(ifdir), "%s/%s", USBJIG_SYSFS,
		    de->d_name);
		if (usbjig_tty_in(ifdir, name, sizeof(name)) != 0)
			continue;
		snprintf(best, sizeof(best), "%s", name);
		best_if = ifnum;
	}
	closedir(d);
	if (best_if < 0)
		return KL_ERR_NOT_FOUND;
	if (snprintf(tty, ttysz, "/dev/%s", best) >= (int)ttysz)
		return KL_ERR_PATH;
	return 0;
}

/* ---- libusb devices ---------------------------------------------------- */

/* "1-2.3" from the device's bus and port numbers; 0 or KL_ERR_NOT_FOUND
 * for a root hub (no port numbers). */
static int
usbjig_port_of(libusb_device *dev, char *out, size_t outsz)
{
	uint8_t pn[USBJIG_MAX_DEPTH];
	size_t len;
	int n, i;

	n = libusb_get_port_numbers(dev, pn, (int)sizeof(pn));
	if (n <= 0)
		return KL_ERR_NOT_FOUND;
	len = (size_t)snprintf(out, outsz, "%u", libusb_get_bus_number(dev));
	for (i = 0; i < n && len < outsz; i++)
		len += (size_t)snprintf(out + len, outsz - len, "%c%u",
		    i == 0 ? '-' : '.', pn[i]);
	return len < outsz ? 0 : KL_ERR_PATH;
}

static int
usbjig_dev_cmp(const void *a, const void *b)
{
	const struct usbjig_dev *x = a, *y = b;

	if (x->bus != y->bus)
		return x->bus < y->bus ? -1 : 1;
	/* "1-2.10" after "1-2.9". */
	return strverscmp(x->port, y->port);
}

int
usbjig_scan(struct usbjig *j, struct usbjig_dev **out, int *nout)
{
	libusb_device **list = NULL;
	struct usbjig_dev *devs = NULL;
	ssize_t n, i;
	int r = KL_ERR_INTERNAL, k = 0;

	if ((n = libusb_get_device_list(j->ctx, &list)) < 0) {
		r = usbjig_err((int)n, "listing USB devices");
		goto out;
	}
	if (n > 0 && (devs = calloc((size_t)n, sizeof(*devs))) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		struct libusb_device_descriptor dd;
		struct usbjig_dev *d = &devs[k];

		if (libusb_get_device_descriptor(list[i], &dd) != 0 ||
		    !usbjig_id_wanted(j->cfg, dd.idVendor, dd.idProduct) ||
		    usbjig_port_of(list[i], d->port, sizeof(d->port)) != 0)
			continue;
		d->bus = libusb_get_bus_number(list[i]);
		d->vid = dd.idVendor;
		d->pid = dd.idProduct;
		/* The kernel caches the serial string; reading it here needs
		 * no access to the device node. */
		if (usbjig_attr(d->port, "serial", d->serial,
		    sizeof(d->serial)) != 0)
			d->serial[0] = '\0';
		if (usbjig_tty_of(d->port, d->tty, sizeof(d->tty)) != 0)
			d->tty[0] = '\0';
		d->slot = usbjig_slot_of_port(j->cfg, d->port);
		k++;
	}
	if (k > 0)
		qsort(devs, (size_t)k, sizeof(*devs), usbjig_dev_cmp);
	if (k == 0) {
		free(devs);
		devs = NULL;
	}
	*out = devs;
	*nout = k;
	devs = NULL;
	r = 0;
out:
	free(devs);
	if (list != NULL)
		libusb_free_device_list(list, 1);
	return r;
}

int
usbjig_resolve(struct usbjig *j, int n, char *path, size_t pathsz)
{
	const struct config_slot *cs = usbjig_slot(j->cfg, n);
	uint16_t vid, pid;

	if (cs == NULL)
		return KL_ERR_NOT_FOUND;
	if (cs->usb_port[0] == '\0') {
		if (snprintf(path, pathsz, "%s", cs->device) >= (int)pathsz)
			return KL_ERR_PATH;
		return 0;
	}
	/* Something else plugged into a slot's port (a USB stick, a
	 * keyboard) is not a board: never open its tty. */
	if (usbjig_attr_hex16(cs->usb_port, "idVendor", &vid) != 0 ||
	    usbjig_attr_hex16(cs->usb_port, "idProduct", &pid) != 0 ||
	    !usbjig_id_wanted(j->cfg, vid, pid))
		return KL_ERR_NOT_FOUND;
	return usbjig_tty_of(cs->usb_port, path, pathsz);
}

/* ---- per-port power ---------------------------------------------------- */

/* The libusb device at bus + port numbers pn[0..npn) (npn 0: the root
 * hub); a new reference, or NULL. */
static libusb_device *
usbjig_find(struct usbjig *j, int bus, const uint8_t *pn, int npn)
{
	libusb_device **list = NULL, *found = NULL;
	ssize_t n, i;

	if ((n = libusb_get_device_list(j->ctx, &list)) < 0) {
		usbjig_err((int)n, "listing USB devices");
		return NULL;
	}
	for (i = 0; i < n && found == NULL; i++) {
		uint8_t p[USBJIG_MAX_DEPTH];
		int np;

		if (libusb_get_bus_number(list[i]) != bus)
			continue;
		np = libusb_get_port_numbers(list[i], p, (int)sizeof(p));
		if (np == npn && (npn == 0 || memcmp(p, pn, (size_t)npn) == 0))
			found = libusb_ref_device(list[i]);
	}
	libusb_free_device_list(list, 1);
	return found;
}

/* "1-2.3" into bus 1, hub ports {2}, port 3 on that hub. */
static int
usbjig_split_port(const char *port, int *bus, uint8_t *hub, int *nhub,
    int *hubport)
{
	uint8_t pn[USBJIG_MAX_DEPTH + 1];
	const char *p = port;
	int n = 0;
	char *end;
	long v;

	v = strtol(p, &end, 10);
	if (end == p || *end != '-' || v < 1 || v > 999)
		return KL_ERR_INVALID;
	*bus = (int)v;
	p = end + 1;
	for (;;) {
		v = strtol(p, &end, 10);
		if (end == p || v < 1 || v > 255 || n > USBJIG_MAX_DEPTH)
			return KL_ERR_INVALID;
		pn[n++] = (uint8_t)v;
		if (*end == '\0')
			break;
		if (*end != '.')
			return KL_ERR_INVALID;
		p = end + 1;
	}
	*nhub = n - 1;
	memcpy(hub, pn, (size_t)(n - 1));
	*hubport = pn[n - 1];
	return 0;
}

static void
usbjig_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int
usbjig_power_cycle(struct usbjig *j, int n)
{
	const struct config_slot *cs = usbjig_slot(j->cfg, n);
	uint8_t hubpn[USBJIG_MAX_DEPTH], desc[16];
	struct libusb_device_descriptor dd;
	libusb_device_handle *h = NULL;
	libusb_device *hub = NULL;
	int r = KL_ERR_INTERNAL, lr, bus, nhub, port, dt;
	uint16_t chars;

	if (cs == NULL)
		return KL_ERR_NOT_FOUND;
	if (cs->usb_port[0] == '\0' ||
	    j->cfg->jig_power != CONFIG_POWER_USB_HUB)
		return KL_ERR_UNSUPPORTED;
	if ((r = usbjig_split_port(cs->usb_port, &bus, hubpn, &nhub,
	    &port)) != 0)
		return r;
	if ((hub = usbjig_find(j, bus, hubpn, nhub)) == NULL) {
		log_error("usbjig: slot %d: no hub above port %s", n,
		    cs->usb_port);
		r = KL_ERR_NOT_FOUND;
		goto out;
	}
	if ((lr = libusb_get_device_descriptor(hub, &dd)) != 0) {
		r = usbjig_err(lr, "hub descriptor");
		goto out;
	}
	if (dd.bDeviceClass != LIBUSB_CLASS_HUB) {
		log_error("usbjig: slot %d: the device above port %s is not "
		    "a hub", n, cs->usb_port);
		r = KL_ERR_UNSUPPORTED;
		goto out;
	}
	if ((lr = libusb_open(hub, &h)) != 0) {
		/* ACCESS: see the udev rule in docs/usb-jig.md. */
		r = usbjig_err(lr, "opening the slot's hub");
		goto out;
	}
	/* Per-port switching must be there: a ganged hub would cut every
	 * slot on it, and one without switching ignores the request. */
	dt = dd.bcdUSB >= 0x0300 ? HUB_DT_USB3 : HUB_DT_USB2;
	lr = libusb_control_transfer(h, LIBUSB_ENDPOINT_IN |
	    LIBUSB_REQUEST_TYPE_CLASS | LIBUSB_RECIPIENT_DEVICE,
	    HUB_REQ_GET_DESCRIPTOR, (uint16_t)(dt << 8), 0, desc,
	    sizeof(desc), USBJIG_CTRL_TIMEOUT_MS);
	if (lr < 0) {
		r = usbjig_err(lr, "reading the hub descriptor");
		goto out;
	}
	/* bLength, type, bNbrPorts, wHubCharacteristics, ... */
	if (lr < 7 || desc[1] != dt) {
		log_error("usbjig: slot %d: malformed hub descriptor (%d "
		    "bytes)", n, lr);
		r = KL_ERR_PROTO;
		goto out;
	}
	if (port > desc[2]) {
		log_error("usbjig: slot %d: hub has %u ports, slot is on %d",
		    n, desc[2], port);
		r = KL_ERR_NOT_FOUND;
		goto out;
	}
	chars = (uint16_t)(desc[3] | desc[4] << 8);
	if ((chars & HUB_LPSM_MASK) != HUB_LPSM_PER_PORT) {
		log_warn("usbjig: slot %d: hub above %s has %s power "
		    "switching", n, cs->usb_port,
		    (chars & HUB_LPSM_MASK) == HUB_LPSM_GANGED ? "ganged" :
		    "no");
		r = KL_ERR_UNSUPPORTED;
		goto out;
	}
	lr = libusb_control_transfer(h, LIBUSB_ENDPOINT_OUT |
	    LIBUSB_REQUEST_TYPE_CLASS | LIBUSB_RECIPIENT_OTHER,
	    HUB_REQ_CLEAR_FEATURE, HUB_FEAT_PORT_POWER, (uint16_t)port, NULL,
	    0, USBJIG_CTRL_TIMEOUT_MS);
	if (lr < 0) {
		r = usbjig_err(lr, "switching the port off");
		goto out;
	}
	log_info("usbjig: slot %d: port %s off for %d ms", n, cs->usb_port,
	    j->cfg->jig_power_off_ms);
	usbjig_sleep_ms(j->cfg->jig_power_off_ms);
	lr = libusb_control_transfer(h, LIBUSB_ENDPOINT_OUT |
	    LIBUSB_REQUEST_TYPE_CLASS | LIBUSB_RECIPIENT_OTHER,
	    HUB_REQ_SET_FEATURE, HUB_FEAT_PORT_POWER, (uint16_t)port, NULL,
	    0, USBJIG_CTRL_TIMEOUT_MS);
	if (lr < 0) {
		r = usbjig_err(lr, "switching the port on again");
		goto out;
	}
	r = 0;
out:
	if (h != NULL)
		libusb_close(h);
	if (hub != NULL)
		libusb_unref_device(hub);
	return r;
}

/* ---- hotplug ----------------------------------------------------------- */

static int LIBUSB_CALL
usbjig_hotplug_cb(libusb_context *ctx, libusb_device *dev,
    libusb_hotplug_event ev, void *arg)
{
	struct usbjig *j = arg;
	struct libusb_device_descriptor dd;
	char port[CONFIG_USB_PORT_MAX];
	int slot;

	(void)ctx;
	if (libusb_get_device_descriptor(dev, &dd) != 0 ||
	    !usbjig_id_wanted(j->cfg, dd.idVendor, dd.idProduct) ||
	    usbjig_port_of(dev, port, sizeof(port)) != 0 ||
	    (slot = usbjig_slot_of_port(j->cfg, port)) == 0)
		return 0;
	if (ev == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED) {
		log_info("usbjig: slot %d: %04x:%04x plugged in at %s", slot,
		    dd.idVendor, dd.idProduct, port);
		/* Its driver binds the tty a moment later; report then. */
		j->pending[slot] = usbjig_now_ms() + USBJIG_TTY_WAIT_MS;
	} else {
		log_info("usbjig: slot %d: %04x:%04x pulled out of %s", slot,
		    dd.idVendor, dd.idProduct, port);
		j->pending[slot] = 0;
		j->fn(j->arg, slot, 0);
	}
	return 0;	/* stay registered */
}

static void
usbjig_pending(struct usbjig *j)
{
	int64_t now = usbjig_now_ms();
	char tty[64];
	int n;

	for (n = 1; n <= CONFIG_MAX_SLOTS; n++) {
		if (j->pending[n] == 0)
			continue;
		if (usbjig_resolve(j, n, tty, sizeof(tty)) == 0 ||
		    now >= j->pending[n]) {
			j->pending[n] = 0;
			j->fn(j->arg, n, 1);
		}
	}
}

static void *
usbjig_thread(void *arg)
{
	struct usbjig *j = arg;

	while (!j->stop) {
		struct timeval tv = { 0, 100000 };
		int lr;

		lr = libusb_handle_events_timeout_completed(j->ctx, &tv,
		    (int *)&j->stop);
		if (lr != 0 && lr != LIBUSB_ERROR_INTERRUPTED) {
			usbjig_err(lr, "handling USB events");
			usbjig_sleep_ms(100);
		}
		usbjig_pending(j);
	}
	return NULL;
}

static void
usbjig_unwatch(struct usbjig *j)
{
	if (!j->running)
		return;
	j->stop = 1;
	libusb_hotplug_deregister_callback(j->ctx, j->cb);
	libusb_interrupt_event_handler(j->ctx);
	pthread_join(j->thread, NULL);
	j->running = 0;
	j->fn = NULL;
	j->arg = NULL;
}

int
usbjig_watch(struct usbjig *j, usbjig_notify_fn fn, void *arg)
{
	int lr, r = 0;

	pthread_mutex_lock(&j->mu);
	usbjig_unwatch(j);
	if (fn == NULL)
		goto out;
	if (!libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG)) {
		r = KL_ERR_UNSUPPORTED;
		goto out;
	}
	memset(j->pending, 0, sizeof(j->pending));
	j->fn = fn;
	j->arg = arg;
	j->stop = 0;
	/* Every device: usb_ids has several pairs and a callback takes
	 * one; the callback filters. */
	lr = libusb_hotplug_register_callback(j->ctx,
	    LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED |
	    LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT, 0, LIBUSB_HOTPLUG_MATCH_ANY,
	    LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY,
	    usbjig_hotplug_cb, j, &j->cb);
	if (lr != 0) {
		r = usbjig_err(lr, "registering for hotplug");
		goto out;
	}
	if (pthread_create(&j->thread, NULL, usbjig_thread, j) != 0) {
		libusb_hotplug_deregister_callback(j->ctx, j->cb);
		log_error("usbjig: cannot start the hotplug thread");
		r = KL_ERR_NOMEM;
		goto out;
	}
	j->running = 1;
out:
	pthread_mutex_unlock(&j->mu);
	return r;
}

static void
usbjig_kick_engine(void *arg, int slot, int arrived)
{
	(void)arrived;
	/* Arrived: the idle slot probes now.  Left: the slot's link read
	 * fails on its own (the tty is gone); the kick only makes an idle
	 * slot notice at once. */
	engine_kick(arg, slot);
}

int
usbjig_set_engine(struct usbjig *j, struct engine *e)
{
	return usbjig_watch(j, e != NULL ? usbjig_kick_engine : NULL, e);
}

/* ---- engine ops, open, close ------------------------------------------- */

static int
usbjig_ops_resolve(void *ctx, int n, char *path, size_t pathsz)
{
	return usbjig_resolve(ctx, n, path, pathsz);
}

static int
usbjig_ops_power_cycle(void *ctx, int n)
{
	return usbjig_power_cycle(ctx, n);
}

const struct engine_jig_ops *
usbjig_ops(struct usbjig *j)
{
	return &j->ops;
}

int
usbjig_open(struct usbjig **out, const struct config *cfg, char *err,
    size_t errsz)
{
	struct usbjig *j;
	int lr;

	if ((j = calloc(1, sizeof(*j))) == NULL) {
		snprintf(err, errsz, "usbjig: %s", kl_strerror(KL_ERR_NOMEM));
		return KL_ERR_NOMEM;
	}
	j->cfg = cfg;
	j->ops.resolve = usbjig_ops_resolve;
	j->ops.power_cycle = usbjig_ops_power_cycle;
	j->ops.ctx = j;
	if ((lr = libusb_init(&j->ctx)) != 0) {
		snprintf(err, errsz, "usbjig: libusb cannot start: %s",
		    libusb_error_name(lr));
		free(j);
		return KL_ERR_IO;
	}
	pthread_mutex_init(&j->mu, NULL);
	*out = j;
	return 0;
}

void
usbjig_close(struct usbjig *j)
{
	if (j == NULL)
		return;
	pthread_mutex_lock(&j->mu);
	usbjig_unwatch(j);
	pthread_mutex_unlock(&j->mu);
	pthread_mutex_destroy(&j->mu);
	libusb_exit(j->ctx);
	free(j);
}
