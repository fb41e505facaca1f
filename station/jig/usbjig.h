/*
 * usbjig.h: a real jig on USB (docs/usb-jig.md).
 *
 * Boards reach the station as USB devices: the board's own CDC-ACM gadget
 * or a USB-to-UART adapter (FTDI, CP210x), usually behind hubs in the jig.
 * This module finds the devices whose VID:PID is in [jig] usb_ids, names
 * them by port path ("1-2.3", as the kernel names them in sysfs), maps the
 * path to a slot ([slots] N = usb:1-2.3), finds the tty that belongs to
 * each through sysfs, watches hotplug, and power-cycles a slot through the
 * hub it sits on (USB hub class requests, as uhubctl does).
 *
 * It plugs into the engine as a struct engine_jig_ops.  Static slots
 * (N = /dev/ttyS1) resolve to their configured path, so one jig can mix
 * both kinds.
 */
#ifndef KL_USBJIG_H
#define KL_USBJIG_H

#include <stddef.h>
#include <stdint.h>

#include "station/config/config.h"

struct engine;
struct engine_jig_ops;
struct usbjig;

/* One matching USB device as scan found it. */
struct usbjig_dev {
	int bus;
	char port[CONFIG_USB_PORT_MAX];	/* "1-2.3" */
	uint16_t vid, pid;
	char serial[128];	/* sysfs serial, printable ASCII ('?' for any
				 * other byte), "" if the device has none */
	char tty[64];		/* "/dev/ttyACM0", "" if no tty (yet) */
	int slot;		/* configured slot on that port, 0 if none */
};

/*
 * Start libusb for the jig in cfg (borrowed: it must outlive the jig).
 * No thread runs until usbjig_watch / usbjig_set_engine.  0, or
 * KL_ERR_NOMEM / KL_ERR_IO (libusb could not start; its code is logged)
 * with why in err.  Close with usbjig_close.
 */
int usbjig_open(struct usbjig **out, const struct config *cfg, char *err,
    size_t errsz);

/* Stops the hotplug thread if any, then frees.  NULL is fine. */
void usbjig_close(struct usbjig *j);

/*
 * Every USB device that matches [jig] usb_ids, sorted by bus and port
 * path (root hubs never match).  0 with *out (caller free()s; NULL when
 * *nout is 0) and *nout, or KL_ERR_NOMEM / KL_ERR_IO.
 */
int usbjig_scan(struct usbjig *j, struct usbjig_dev **out, int *nout);

/*
 * The device path of slot n now: the configured path of a static slot;
 * for a USB slot the tty of the matching device on its port.  0, or
 * KL_ERR_NOT_FOUND (no such slot, nothing matching on the port, no tty
 * bound yet), KL_ERR_PATH (path does not fit).  Reads sysfs only, so it
 * is cheap and safe from any thread.
 */
int usbjig_resolve(struct usbjig *j, int n, char *path, size_t pathsz);

/*
 * Switch slot n's hub port off for [jig] power_off_ms, then on.  0, or
 * KL_ERR_UNSUPPORTED (power = none, a static slot, a hub without per-port
 * power switching), KL_ERR_NOT_FOUND (the hub is not there), KL_ERR_IO /
 * KL_ERR_TIMEOUT (a request failed; libusb's code is logged).  Blocks for
 * power_off_ms.
 */
int usbjig_power_cycle(struct usbjig *j, int n);

/*
 * The tty of the device at port path port ("1-2.3"), from sysfs: the tty
 * of its lowest-numbered interface that has one (ttyACM* of cdc_acm under
 * <if>/tty/, ttyUSB* of usb-serial drivers under <if>/).  0 with
 * "/dev/NAME" in tty, or KL_ERR_NOT_FOUND / KL_ERR_PATH.
 */
int usbjig_tty_of(const char *port, char *tty, size_t ttysz);

/*
 * Called from the hotplug thread when a matching device arrives on (arrived
 * = 1) or leaves (0) the port of a configured slot.  An arrival is reported
 * once its tty is there, or after 3 s without one.
 */
typedef void (*usbjig_notify_fn)(void *arg, int slot, int arrived);

/*
 * Start the hotplug thread calling fn(arg, ...); fn NULL stops it (and
 * returns once no call of fn is running).  0, KL_ERR_UNSUPPORTED (libusb
 * has no hotplug here: the engine's probe every second still finds
 * boards), KL_ERR_IO.
 */
int usbjig_watch(struct usbjig *j, usbjig_notify_fn fn, void *arg);

/*
 * Hotplug kicks engine e (engine_kick) for the slot that changed; e NULL
 * stops that.  e is borrowed: call usbjig_set_engine(j, NULL) or
 * usbjig_close before engine_free.  Errors as usbjig_watch.
 */
int usbjig_set_engine(struct usbjig *j, struct engine *e);

/* The engine's view of this jig; valid until usbjig_close. */
const struct engine_jig_ops *usbjig_ops(struct usbjig *j);

/* True when cfg has a USB slot or usb_ids, i.e. a jig worth opening. */
int usbjig_configured(const struct config *cfg);

#endif
