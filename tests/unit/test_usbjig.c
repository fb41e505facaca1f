/*
 * test_usbjig.c: the USB jig against umockdev testbeds: the real libusb
 * and the real sysfs walk over recorded-format hubs, CDC-ACM boards, FTDI
 * and CP210x adapters (the .umockdev files in tests/umockdev).
 *
 * - enumeration, port paths, serials, tty lookup and slot mapping;
 * - hotplug: boards added and removed with uevents, the notify callback
 *   (what kicks the engine) sees them, an arrival waits for its tty;
 * - power: the hub's usbfs ioctls are answered here (umockdev's ioctl
 *   handler), so the test sees the exact control requests: the hub
 *   descriptor read, ClearPortFeature and SetPortFeature(PORT_POWER) on
 *   the slot's port, and nothing switched on a ganged hub.
 *
 * The binary re-executes itself under umockdev-wrapper (the preload
 * library that redirects /sys, /dev and netlink into the testbed), so
 * tests/run-unit can run it like any other test.  Run from the repository
 * root (fixtures are found at tests/umockdev/).
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/usbdevice_fs.h>
#include <sys/ioctl.h>

#include <umockdev.h>

#include <cmocka.h>

#include "station/config/config.h"
#include "station/engine/engine.h"
#include "common/err.h"
#include "station/jig/usbjig.h"

#define FIXTURES "tests/umockdev"
#define PCI "/sys/devices/pci0000:00/0000:00:14.0"
#define HUB_NODE "/dev/bus/usb/001/003"

/* ---- recorded control requests (power) ---------------------------------- */

#define MAX_SETUPS 16

struct power_mock {
	pthread_mutex_t mu;
	uint8_t setup[MAX_SETUPS][8];
	int nsetup;
	uint16_t hub_chars;	/* wHubCharacteristics answered */
	GList *flying;		/* UMockdevIoctlData of submitted URBs */
};

static struct power_mock pm = { .mu = PTHREAD_MUTEX_INITIALIZER };

struct fixture {
	UMockdevTestbed *tb;
	UMockdevIoctlBase *ioctl;
	char dir[64];
	char conf[128];
	struct config *cfg;
	struct usbjig *jig;
};

/* ---- hotplug notifications ---------------------------------------------- */

struct note {
	int slot, arrived;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct note n[32];
	int count;
} notes = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, { { 0,
    0 } }, 0 };

static void
on_notify(void *arg, int slot, int arrived)
{
	(void)arg;
	pthread_mutex_lock(&notes.mu);
	if (notes.count < 32) {
		notes.n[notes.count].slot = slot;
		notes.n[notes.count].arrived = arrived;
		notes.count++;
	}
	pthread_cond_broadcast(&notes.cond);
	pthread_mutex_unlock(&notes.mu);
}

/* Wait up to ms for at least want notifications; returns how many. */
static int
wait_notes(int want, int ms)
{
	struct timespec dl;
	int n;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += ms / 1000;
	dl.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&notes.mu);
	while (notes.count < want &&
	    pthread_cond_timedwait(&notes.cond, &notes.mu, &dl) == 0)
		;
	n = notes.count;
	pthread_mutex_unlock(&notes.mu);
	return n;
}

/* ---- fixture ------------------------------------------------------------ */

static const char conf_head[] =
    "[station]\nid = st-usb\naudit_db = audit.db\n"
    "[ca]\nissuer_cert = issuer.pem\nfleet_root = root.pem\nkey_id = 10\n"
    "pin_file = pin\n"
    "[ota]\ngateway_url = https://gw.example.com\nroot_crt = root.crt\n";

/* The keyboard (046d:c31c) on 1-1 is in no list: slot 4 must stay empty. */
static const char conf_jig[] =
    "[jig]\nusb_ids = 1d6b:0104, 0403:6001, 10c4:ea60\n"
    "power = usb-hub\npower_off_ms = 100\n"
    "[slots]\n1 = usb:1-2.1\n2 = usb:1-2.2\n3 = usb:1-2.3\n4 = usb:1-1\n"
    "9 = /dev/ttyS1\n";

static void
load_config(struct fixture *f, const char *jig)
{
	char err[512] = "";
	FILE *fp = fopen(f->conf, "w");

	assert_non_null(fp);
	fputs(conf_head, fp);
	fputs(jig, fp);
	assert_int_equal(fclose(fp), 0);
	if (config_load(f->conf, f->cfg, err, sizeof(err)) != 0)
		fail_msg("config: %s", err);
}

static void
add_file(struct fixture *f, const char *name)
{
	GError *e = NULL;
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", FIXTURES, name);
	if (!umockdev_testbed_add_from_file(f->tb, path, &e))
		fail_msg("%s: %s", path, e != NULL ? e->message : "?");
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char tmpl[] = "/tmp/test_usbjig.XXXXXX";

	if (f == NULL || mkdtemp(tmpl) == NULL ||
	    (f->cfg = malloc(sizeof(*f->cfg))) == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s", tmpl);
	snprintf(f->conf, sizeof(f->conf), "%s/station.conf", f->dir);
	/* Before libusb starts: it looks at sysfs once, at init. */
	f->tb = umockdev_testbed_new();
	if (f->tb == NULL)
		return -1;
	pthread_mutex_lock(&notes.mu);
	notes.count = 0;
	pthread_mutex_unlock(&notes.mu);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	usbjig_close(f->jig);
	if (f->ioctl != NULL) {
		umockdev_testbed_detach_ioctl(f->tb, HUB_NODE, NULL);
		g_object_unref(f->ioctl);
	}
	g_object_unref(f->tb);
	pthread_mutex_lock(&pm.mu);
	g_list_free_full(pm.flying, (GDestroyNotify)umockdev_ioctl_data_unref);
	pm.flying = NULL;
	pthread_mutex_unlock(&pm.mu);
	unlink(f->conf);
	rmdir(f->dir);
	free(f->cfg);
	free(f);
	return 0;
}

static void
open_jig(struct fixture *f)
{
	char err[256] = "";

	if (usbjig_open(&f->jig, f->cfg, err, sizeof(err)) != 0)
		fail_msg("usbjig_open: %s", err);
}

/* ---- enumeration, mapping, tty ------------------------------------------ */

static void
test_scan(void **state)
{
	struct fixture *f = *state;
	struct usbjig_dev *d = NULL;
	int n = -1;

	add_file(f, "jig-hub.umockdev");
	load_config(f, conf_jig);
	open_jig(f);
	assert_int_equal(usbjig_scan(f->jig, &d, &n), 0);
	/* Root hub, jig hub and keyboard are not in usb_ids. */
	assert_int_equal(n, 3);

	assert_int_equal(d[0].bus, 1);
	assert_string_equal(d[0].port, "1-2.1");
	assert_int_equal(d[0].vid, 0x1d6b);
	assert_int_equal(d[0].pid, 0x0104);
	assert_string_equal(d[0].serial, "KL000101");
	assert_string_equal(d[0].tty, "/dev/ttyACM0");
	assert_int_equal(d[0].slot, 1);

	assert_string_equal(d[1].port, "1-2.3");
	assert_int_equal(d[1].vid, 0x0403);
	assert_int_equal(d[1].pid, 0x6001);
	assert_string_equal(d[1].serial, "FT12AB34");
	assert_string_equal(d[1].tty, "/dev/ttyUSB0");
	assert_int_equal(d[1].slot, 3);

	/* In the list but on no configured port. */
	assert_string_equal(d[2].port, "1-2.4");
	assert_int_equal(d[2].vid, 0x10c4);
	assert_string_equal(d[2].tty, "/dev/ttyUSB1");
	assert_int_equal(d[2].slot, 0);
	free(d);
}

static void
test_resolve(void **state)
{
	struct fixture *f = *state;
	char path[64];

	add_file(f, "jig-hub.umockdev");
	load_config(f, conf_jig);
	open_jig(f);
	assert_int_equal(usbjig_resolve(f->jig, 1, path, sizeof(path)), 0);
	assert_string_equal(path, "/dev/ttyACM0");
	assert_int_equal(usbjig_resolve(f->jig, 3, path, sizeof(path)), 0);
	assert_string_equal(path, "/dev/ttyUSB0");
	/* Nothing on hub port 2. */
	assert_int_equal(usbjig_resolve(f->jig, 2, path, sizeof(path)),
	    KL_ERR_NOT_FOUND);
	/* A keyboard on a slot's port is not a board. */
	assert_int_equal(usbjig_resolve(f->jig, 4, path, sizeof(path)),
	    KL_ERR_NOT_FOUND);
	/* Static slots stay what the config says. */
	assert_int_equal(usbjig_resolve(f->jig, 9, path, sizeof(path)), 0);
	assert_string_equal(path, "/dev/ttyS1");
	assert_int_equal(usbjig_resolve(f->jig, 5, path, sizeof(path)),
	    KL_ERR_NOT_FOUND);
	/* Too small a buffer is an error, never a cut path. */
	assert_int_equal(usbjig_resolve(f->jig, 1, path, 8), KL_ERR_PATH);
	/* The engine's seam is the same function. */
	assert_int_equal(usbjig_ops(f->jig)->resolve(usbjig_ops(f->jig)->ctx,
	    3, path, sizeof(path)), 0);
	assert_string_equal(path, "/dev/ttyUSB0");
	usbjig_close(f->jig);
	f->jig = NULL;

	/* A tty on the slot's port is not enough: with only FTDI adapters
	 * as boards, the CDC-ACM device on 1-2.1 is never opened. */
	load_config(f, "[jig]\nusb_ids = 0403:6001\n"
	    "[slots]\n1 = usb:1-2.1\n3 = usb:1-2.3\n");
	open_jig(f);
	assert_int_equal(usbjig_resolve(f->jig, 1, path, sizeof(path)),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(usbjig_resolve(f->jig, 3, path, sizeof(path)), 0);
}

static void
test_tty_of(void **state)
{
	struct fixture *f = *state;
	char tty[64];

	add_file(f, "jig-hub.umockdev");
	assert_int_equal(usbjig_tty_of("1-2.1", tty, sizeof(tty)), 0);
	assert_string_equal(tty, "/dev/ttyACM0");
	assert_int_equal(usbjig_tty_of("1-2.4", tty, sizeof(tty)), 0);
	assert_string_equal(tty, "/dev/ttyUSB1");
	/* "1-2" is a prefix of "1-2.1": its own interfaces have no tty. */
	assert_int_equal(usbjig_tty_of("1-2", tty, sizeof(tty)),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(usbjig_tty_of("1-1", tty, sizeof(tty)),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(usbjig_tty_of("../1-2.1", tty, sizeof(tty)),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(usbjig_tty_of("", tty, sizeof(tty)),
	    KL_ERR_NOT_FOUND);
}

/* ---- hotplug ------------------------------------------------------------ */

/* board-acm.umockdev split in two: the USB device, then its interfaces and
 * tty (which the driver creates a moment after the device appears). */
static void
read_board(char **dev, char **rest)
{
	gchar *text = NULL;
	char *cut;

	assert_true(g_file_get_contents(FIXTURES "/board-acm.umockdev", &text,
	    NULL, NULL));
	cut = strstr(text, "\n\nP: ");
	assert_non_null(cut);
	*rest = g_strdup(cut + 2);
	cut[1] = '\0';
	*dev = text;
}

static void
test_hotplug(void **state)
{
	struct fixture *f = *state;
	char *dev = NULL, *rest = NULL, path[64];
	const char *sys = PCI "/usb1/1-2/1-2.1";

	add_file(f, "jig-empty.umockdev");
	load_config(f, conf_jig);
	open_jig(f);
	assert_int_equal(usbjig_resolve(f->jig, 1, path, sizeof(path)),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(usbjig_watch(f->jig, on_notify, NULL), 0);

	/* Plugged in: the device first, no tty yet: not reported. */
	read_board(&dev, &rest);
	assert_true(umockdev_testbed_add_from_string(f->tb, dev, NULL));
	umockdev_testbed_uevent(f->tb, sys, "add");
	assert_int_equal(wait_notes(1, 500), 0);
	/* The driver binds: now it is. */
	assert_true(umockdev_testbed_add_from_string(f->tb, rest, NULL));
	assert_int_equal(wait_notes(1, 2000), 1);
	assert_int_equal(notes.n[0].slot, 1);
	assert_int_equal(notes.n[0].arrived, 1);
	assert_int_equal(usbjig_resolve(f->jig, 1, path, sizeof(path)), 0);
	assert_string_equal(path, "/dev/ttyACM0");

	/* Pulled out: the kernel removes the tty and interfaces first. */
	umockdev_testbed_remove_device(f->tb, PCI
	    "/usb1/1-2/1-2.1/1-2.1:1.0/tty/ttyACM0");
	umockdev_testbed_remove_device(f->tb, PCI "/usb1/1-2/1-2.1/1-2.1:1.0");
	umockdev_testbed_remove_device(f->tb, PCI "/usb1/1-2/1-2.1/1-2.1:1.1");
	umockdev_testbed_uevent(f->tb, sys, "remove");
	umockdev_testbed_remove_device(f->tb, sys);
	assert_int_equal(wait_notes(2, 2000), 2);
	assert_int_equal(notes.n[1].slot, 1);
	assert_int_equal(notes.n[1].arrived, 0);
	assert_int_equal(usbjig_resolve(f->jig, 1, path, sizeof(path)),
	    KL_ERR_NOT_FOUND);

	/* Stopping the watch stops the reports. */
	assert_int_equal(usbjig_watch(f->jig, NULL, NULL), 0);
	/* (umockdev cannot create a removed tty node a second time: the
	 * device alone.) */
	assert_true(umockdev_testbed_add_from_string(f->tb, dev, NULL));
	umockdev_testbed_uevent(f->tb, sys, "add");
	assert_int_equal(wait_notes(3, 300), 2);
	g_free(dev);
	g_free(rest);
}

/* A board on a port that is no slot, and a device not in usb_ids on a
 * slot's port, never reach the engine. */
static void
test_hotplug_ignored(void **state)
{
	struct fixture *f = *state;
	char *dev = NULL, *rest = NULL;

	add_file(f, "jig-empty.umockdev");
	/* Slot 1 is on 1-2.1, but only FTDI adapters are boards here. */
	load_config(f, "[jig]\nusb_ids = 0403:6001\n"
	    "[slots]\n1 = usb:1-2.1\n");
	open_jig(f);
	assert_int_equal(usbjig_watch(f->jig, on_notify, NULL), 0);
	read_board(&dev, &rest);
	assert_true(umockdev_testbed_add_from_string(f->tb, dev, NULL));
	assert_true(umockdev_testbed_add_from_string(f->tb, rest, NULL));
	umockdev_testbed_uevent(f->tb, PCI "/usb1/1-2/1-2.1", "add");
	assert_int_equal(wait_notes(1, 700), 0);
	g_free(dev);
	g_free(rest);
}

/* ---- power: usbfs ioctls of the hub answered here ------------------------ */

static gboolean
hub_ioctl(UMockdevIoctlBase *base, UMockdevIoctlClient *client,
    gpointer data)
{
	UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(client);
	gulong req = umockdev_ioctl_client_get_request(client);

	(void)base;
	(void)data;
	switch (req) {
	case USBDEVFS_GET_CAPABILITIES: {
		UMockdevIoctlData *d = umockdev_ioctl_data_resolve(arg, 0,
		    sizeof(guint32), NULL);

		*(guint32 *)(void *)d->data = USBDEVFS_CAP_NO_PACKET_SIZE_LIM |
		    USBDEVFS_CAP_REAP_AFTER_DISCONNECT;
		umockdev_ioctl_data_unref(d);
		umockdev_ioctl_client_complete(client, 0, 0);
		return TRUE;
	}
	case USBDEVFS_SUBMITURB: {
		UMockdevIoctlData *u, *buf;
		struct usbdevfs_urb *urb;

		u = umockdev_ioctl_data_resolve(arg, 0, sizeof(*urb), NULL);
		urb = (struct usbdevfs_urb *)(void *)u->data;
		if (urb->type != USBDEVFS_URB_TYPE_CONTROL ||
		    urb->buffer_length < 8) {
			umockdev_ioctl_data_unref(u);
			umockdev_ioctl_client_complete(client, -1, EINVAL);
			return TRUE;
		}
		buf = umockdev_ioctl_data_resolve(u, offsetof(struct
		    usbdevfs_urb, buffer), (gsize)urb->buffer_length, NULL);
		pthread_mutex_lock(&pm.mu);
		if (pm.nsetup < MAX_SETUPS)
			memcpy(pm.setup[pm.nsetup++], buf->data, 8);
		urb->status = 0;
		urb->actual_length = 0;
		/* GET_DESCRIPTOR(hub): a 4-port hub with the switching mode
		 * under test. */
		if (buf->data[0] == 0xa0 && buf->data[1] == 0x06 &&
		    urb->buffer_length >= 8 + 9) {
			static const uint8_t hd[9] = { 9, 0x29, 4, 0, 0, 50,
			    100, 0, 0xff };

			memcpy(buf->data + 8, hd, sizeof(hd));
			buf->data[8 + 3] = (uint8_t)(pm.hub_chars & 0xff);
			buf->data[8 + 4] = (uint8_t)(pm.hub_chars >> 8);
			urb->actual_length = sizeof(hd);
		}
		pm.flying = g_list_append(pm.flying, u);
		pthread_mutex_unlock(&pm.mu);
		umockdev_ioctl_data_unref(buf);
		umockdev_ioctl_client_complete(client, 0, 0);
		return TRUE;
	}
	case USBDEVFS_REAPURB:
	case USBDEVFS_REAPURBNDELAY: {
		UMockdevIoctlData *u = NULL, *ptr;

		pthread_mutex_lock(&pm.mu);
		if (pm.flying != NULL) {
			u = pm.flying->data;
			pm.flying = g_list_delete_link(pm.flying, pm.flying);
		}
		pthread_mutex_unlock(&pm.mu);
		if (u == NULL) {
			umockdev_ioctl_client_complete(client, -1, EAGAIN);
			return TRUE;
		}
		ptr = umockdev_ioctl_data_resolve(arg, 0, sizeof(gpointer),
		    NULL);
		umockdev_ioctl_data_set_ptr(ptr, 0, u);
		umockdev_ioctl_data_unref(ptr);
		umockdev_ioctl_data_unref(u);
		umockdev_ioctl_client_complete(client, 0, 0);
		return TRUE;
	}
	case USBDEVFS_DISCARDURB:
		umockdev_ioctl_client_complete(client, -1, EINVAL);
		return TRUE;
	default:
		return FALSE;
	}
}

static void
power_setup(struct fixture *f, uint16_t chars)
{
	pthread_mutex_lock(&pm.mu);
	pm.nsetup = 0;
	pm.hub_chars = chars;
	pthread_mutex_unlock(&pm.mu);
	f->ioctl = umockdev_ioctl_base_new();
	g_signal_connect(f->ioctl, "handle-ioctl", G_CALLBACK(hub_ioctl),
	    NULL);
	/* Before the device exists, so its node is the emulated one. */
	assert_true(umockdev_testbed_attach_ioctl(f->tb, HUB_NODE, f->ioctl,
	    NULL));
	add_file(f, "jig-hub.umockdev");
}

static void
assert_setup(int i, const uint8_t want[8])
{
	char got[40], exp[40];
	int k;

	for (k = 0; k < 8; k++) {
		snprintf(got + 3 * k, 4, "%02x ", pm.setup[i][k]);
		snprintf(exp + 3 * k, 4, "%02x ", want[k]);
	}
	assert_string_equal(got, exp);
}

static void
test_power_cycle(void **state)
{
	/* bmRequestType bRequest wValue wIndex wLength, little endian. */
	static const uint8_t get_hub_desc[6] = { 0xa0, 0x06, 0x00, 0x29, 0,
	    0 };
	static const uint8_t port3_off[8] = { 0x23, 0x01, 0x08, 0, 0x03, 0,
	    0, 0 };
	static const uint8_t port3_on[8] = { 0x23, 0x03, 0x08, 0, 0x03, 0, 0,
	    0 };
	struct fixture *f = *state;
	struct timespec t0, t1;
	long ms;

	power_setup(f, 0x0001);		/* per-port power switching */
	load_config(f, conf_jig);
	open_jig(f);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(usbjig_ops(f->jig)->power_cycle(
	    usbjig_ops(f->jig)->ctx, 3), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) /
	    1000000;
	assert_true(ms >= 100);		/* power_off_ms */
	assert_int_equal(pm.nsetup, 3);
	assert_memory_equal(pm.setup[0], get_hub_desc, 6);
	assert_setup(1, port3_off);
	assert_setup(2, port3_on);
}

static void
test_power_refused(void **state)
{
	struct fixture *f = *state;

	/* Ganged: switching would cut every slot on the hub. */
	power_setup(f, 0x0000);
	load_config(f, conf_jig);
	open_jig(f);
	assert_int_equal(usbjig_power_cycle(f->jig, 3), KL_ERR_UNSUPPORTED);
	assert_int_equal(pm.nsetup, 1);		/* the descriptor only */
	pm.hub_chars = 0x0002;			/* no switching at all */
	assert_int_equal(usbjig_power_cycle(f->jig, 1), KL_ERR_UNSUPPORTED);
	assert_int_equal(pm.nsetup, 2);
	/* A static slot and an unknown one never touch the bus. */
	assert_int_equal(usbjig_power_cycle(f->jig, 9), KL_ERR_UNSUPPORTED);
	assert_int_equal(usbjig_power_cycle(f->jig, 77), KL_ERR_NOT_FOUND);
	/* The slot on the root hub: bus 1's root hub is not emulated here,
	 * its requests fail and that is an error, not a success. */
	assert_int_not_equal(usbjig_power_cycle(f->jig, 4), 0);
	assert_int_equal(pm.nsetup, 2);
	usbjig_close(f->jig);
	f->jig = NULL;

	/* power = none: nothing is switched. */
	load_config(f, "[jig]\nusb_ids = 0403:6001\n[slots]\n3 = usb:1-2.3\n");
	open_jig(f);
	assert_int_equal(usbjig_power_cycle(f->jig, 3), KL_ERR_UNSUPPORTED);
	assert_int_equal(pm.nsetup, 2);
}

/* Re-run under umockdev-wrapper unless already there. */
static void
wrap(char **argv)
{
	const char *pre = getenv("LD_PRELOAD");
	const char *asan = getenv("ASAN_OPTIONS");
	char opts[512];

	if (pre != NULL && strstr(pre, "libumockdev-preload") != NULL)
		return;
	/* The preload library comes before the ASan runtime; the order
	 * check is the only thing that objects. */
	snprintf(opts, sizeof(opts), "%s%sverify_asan_link_order=0",
	    asan != NULL ? asan : "", asan != NULL && asan[0] ? ":" : "");
	setenv("ASAN_OPTIONS", opts, 1);
	execvp("umockdev-wrapper", (char *[]){ "umockdev-wrapper", argv[0],
	    NULL });
	fprintf(stderr, "test_usbjig: umockdev-wrapper: %s (install "
	    "umockdev)\n", strerror(errno));
	exit(1);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_scan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tty_of, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hotplug, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_hotplug_ignored, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_power_cycle, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_power_refused, setup,
		    teardown),
	};

	(void)argc;
	wrap(argv);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
