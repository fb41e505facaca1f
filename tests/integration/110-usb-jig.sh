#!/usr/bin/env bash
# keyline jig scan over a recorded-format USB jig (umockdev-run): the real
# binary and the real libusb see a hub with a CDC-ACM board, an FTDI and a
# CP210x adapter and a keyboard; the JSON names bus, port path, serial,
# tty and slot of every matching device, and the USB slots left empty.
. "$(dirname "$0")/lib.sh"

command -v umockdev-run >/dev/null || fail "umockdev-run missing (scripts/setup)"
# umockdev's preload library comes before the ASan runtime.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
JIG=$top/tests/umockdev/jig-hub.umockdev

cat >"$T/station.conf" <<CONF
[station]
id = st-usb
audit_db = audit.db
[ca]
issuer_cert = issuer.pem
fleet_root = root.pem
key_id = 10
pin_file = pin
[ota]
gateway_url = https://gw.example.com
root_crt = root.crt
[jig]
usb_ids = 1d6b:0104, 0403:6001, 10c4:ea60
power = usb-hub
[slots]
1 = usb:1-2.1
2 = usb:1-2.2
5 = usb:1-2.3
9 = /dev/ttyS1
CONF

# umockdev-run as the station's user, as on a line PC: its testbed is
# private to whoever starts it.
scan() {
	as_station umockdev-run -d "$JIG" -- "$KL" jig scan \
	    --config "$T/station.conf" "$@"
}

scan --json >"$T/scan.json" || fail "jig scan --json failed"
jq -e . "$T/scan.json" >/dev/null || fail "not JSON: $(cat "$T/scan.json")"
[ "$(jq '.devices | length' "$T/scan.json")" = 3 ] ||
    fail "want 3 devices (not the hubs, not the keyboard): $(cat "$T/scan.json")"
jq -e '.devices[0] == {"bus":1,"port":"1-2.1","vid":"1d6b","pid":"0104",
    "serial":"KL000101","tty":"/dev/ttyACM0","slot":1}' "$T/scan.json" \
    >/dev/null || fail "CDC-ACM board: $(jq -c '.devices[0]' "$T/scan.json")"
jq -e '.devices[1] == {"bus":1,"port":"1-2.3","vid":"0403","pid":"6001",
    "serial":"FT12AB34","tty":"/dev/ttyUSB0","slot":5}' "$T/scan.json" \
    >/dev/null || fail "FTDI adapter: $(jq -c '.devices[1]' "$T/scan.json")"
jq -e '.devices[2] | .port == "1-2.4" and .tty == "/dev/ttyUSB1" and
    .slot == null' "$T/scan.json" >/dev/null ||
    fail "CP210x on no slot: $(jq -c '.devices[2]' "$T/scan.json")"
jq -e '.empty_slots == [{"slot":2,"port":"1-2.2"}]' "$T/scan.json" \
    >/dev/null || fail "empty slots: $(jq -c '.empty_slots' "$T/scan.json")"

# The table says the same.
scan >"$T/scan.txt" || fail "jig scan failed"
grep -Eq '^5 +1-2\.3 +0403:6001 +FT12AB34 +/dev/ttyUSB0$' "$T/scan.txt" ||
    fail "table: $(cat "$T/scan.txt")"
grep -Eq '^2 +1-2\.2 +\(empty\)$' "$T/scan.txt" || fail "table: $(cat "$T/scan.txt")"

# A static slot has no switchable power: exit 1 with the reason.
set +e
as_station umockdev-run -d "$JIG" -- "$KL" jig power --config "$T/station.conf" \
    --slot 9 >"$T/out" 2>"$T/err"
rc=$?
set -e
[ $rc -eq 1 ] || fail "power on a static slot: exit $rc, want 1"
grep -q "slot 9: power cycle" "$T/err" || fail "power: $(cat "$T/err")"

# A USB slot without usb_ids is a configuration error naming the key.
sed -i '/^usb_ids = /d' "$T/station.conf"
set +e
"$KL" jig scan --config "$T/station.conf" >"$T/out" 2>"$T/err"
rc=$?
set -e
[ $rc -eq 2 ] || fail "config error: exit $rc, want 2"
grep -qF "station.conf: [jig] usb_ids: required with usb: slots" "$T/err" ||
    fail "config error: $(cat "$T/err")"
echo "ok"
