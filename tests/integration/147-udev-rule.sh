#!/usr/bin/env bash
# packaging/udev/60-keyline.rules: udev parses it without a complaint
# (`udevadm verify` where udev has it, systemd 253 on; before that
# `udevadm test` in a private mount namespace whose /run/udev/rules.d
# holds the rule: it reads every rules file and names each bad line), and
# applied to the recorded jig (tests/umockdev/jig-hub.umockdev, under
# umockdev-run) it gives group keyline mode 0660 on the board's ttyACM,
# the FTDI's and the CP210x's ttyUSB and the hub's USB node (per-port
# power), and nothing on the keyboard.  The group itself comes with the
# package (sysusers.d): udev's "Unknown group 'keyline'" here is expected.
. "$(dirname "$0")/lib.sh"

RULE=$top/packaging/udev/60-keyline.rules
command -v udevadm >/dev/null || fail "udevadm missing (scripts/setup: udev)"
[ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null ||
	{ echo "SKIP udev-rule: needs root and mount namespaces"; exit 0; }

# rule_errors FILE: udev's complaints about FILE, one a line.
rule_errors() {
	local f=$1
	if udevadm verify --help >/dev/null 2>&1; then
		udevadm verify "$f" 2>&1 | grep -v "Unknown group 'keyline'" |
		    grep -i "$(basename "$f"):[0-9]" || true
		return
	fi
	# No device is opened (there is none at that path): nothing is
	# written outside the namespace's /run/udev.
	unshare -m sh -c 'mount -t tmpfs none /run/udev 2>/dev/null ||
	    { mkdir -p /run/udev && mount -t tmpfs none /run/udev; } &&
	    mkdir /run/udev/rules.d && cp "$1" /run/udev/rules.d/ &&
	    udevadm test --action=add /sys/devices/keyline-none 2>&1' sh "$f" |
	    grep -F "/$(basename "$f"):" | grep -v "Unknown group 'keyline'" || true
}

errs=$(rule_errors "$RULE")
[ -z "$errs" ] || fail "udev complains about the rule: $errs"
# The check must be able to fail: a key udev does not know, an assignment
# where a match was meant.
sed -e '0,/^SUBSYSTEM=="tty"/s//SUBSYSTEM="tty"/' \
    -e '$a SUBSYSTEM=="usb", ATTRZ{idVendor}=="05e3", GROUP="keyline"' \
    "$RULE" >"$T/99-broken.rules"
errs=$(rule_errors "$T/99-broken.rules")
[ "$(grep -c . <<<"$errs")" -ge 2 ] || fail "a broken rule passes the check: '$errs'"

# What it does on the recorded jig.  umockdev's records lack the USB
# nodes' MAJOR/MINOR, without which udev sets no mode: added to a copy.
command -v umockdev-run >/dev/null || fail "umockdev-run missing"
awk '/^E: DEVNUM=/ { n = $2; sub(/^DEVNUM=0*/, "", n); print
	print "E: MAJOR=189"; print "E: MINOR=" n; next } { print }' \
    "$top/tests/umockdev/jig-hub.umockdev" >"$T/jig.umockdev"
usb=/sys/devices/pci0000:00/0000:00:14.0/usb1
# A private /dev and /run/udev: udevadm test writes its links and its
# database there.
unshare -m sh -c '
	mount -t tmpfs none /run/udev && mkdir /run/udev/rules.d &&
	cp "$1" /run/udev/rules.d/ &&
	mount -t tmpfs none /dev && mknod -m 666 /dev/null c 1 3 &&
	mkdir /dev/pts &&
	mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts &&
	ln -s pts/ptmx /dev/ptmx &&
	umockdev-run -d "$2" -- sh -c "
	    for d in /sys/class/tty/ttyACM0 /sys/class/tty/ttyUSB0 \
		/sys/class/tty/ttyUSB1 $3/1-2 $3/1-1; do
		udevadm test --action=add \$d 2>&1
	    done"' sh "$RULE" "$T/jig.umockdev" "$usb" >"$T/applied" 2>&1 ||
	fail "udevadm test under umockdev: $(tail -n 5 "$T/applied")"
for dev in ttyACM0 ttyUSB0 ttyUSB1 1-2; do
	grep -qE "^$dev: .*/60-keyline.rules:[0-9]+ MODE 0660$" "$T/applied" ||
		fail "$dev: the rule sets no mode 0660: $(grep "^$dev:" "$T/applied" | head -n 5)"
	grep -qE "^$dev: .*/60-keyline.rules:[0-9]+ GROUP " "$T/applied" ||
		fail "$dev: the rule sets no group"
done
if grep -qE "^1-1: .*/60-keyline.rules" "$T/applied"; then
	fail "the rule touches the keyboard: $(grep '^1-1: .*60-keyline' "$T/applied")"
fi
# Every VID:PID of the documented jig (docs/usb-jig.md [jig] usb_ids)
# has its tty line.
for id in $(sed -n 's/^usb_ids = //p' "$top/docs/usb-jig.md" | tr -d ' ' | tr ',' ' '); do
	grep -E '^SUBSYSTEM=="tty"' "$RULE" |
	    grep -q "ATTRS{idVendor}==\"${id%:*}\", ATTRS{idProduct}==\"${id#*:}\".*GROUP=\"keyline\", MODE=\"0660\"" ||
		fail "no tty line for $id"
done
echo "PASS udev-rule"
