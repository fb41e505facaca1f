#!/usr/bin/env bash
# The systemd side of the station without installing anything:
#  - keyline-line@.service passes systemd-analyze verify with nothing
#    printed (an unknown key is only a warning: a copy with a misspelt key
#    must be caught, or the check proves nothing), and its exposure score
#    (systemd-analyze security --offline) is the one docs/install.md gives;
#  - a line run the way the unit runs it tells the service manager
#    READY=1 once it runs, STATUS= with its counts, WATCHDOG=1 while
#    WATCHDOG_USEC asks for it, STOPPING=1 on SIGTERM (NOTIFY_SOCKET is a
#    socket of the test's);
#  - with stderr connected to the journal (JOURNAL_STREAM names it), a
#    board's outcome goes to the journal with KEYLINE_SLOT, KEYLINE_SERIAL
#    and KEYLINE_DEVICE_ID; with JOURNAL_STREAM naming another file, not.
#    Where no journald runs (a container, CI), the test binds its own
#    datagram socket at /run/systemd/journal/socket and removes it after;
#    where one runs, that part is skipped (the datagrams would be its).
. "$(dirname "$0")/lib.sh"

unit=$top/debian/keyline.keyline-line@.service
keyline_bin=$KEYLINE_BIN/keyline

# ---- the unit file ----------------------------------------------------------
mkdir "$T/units"
sed "s|^ExecStart=/usr/bin/keyline |ExecStart=$keyline_bin |" "$unit" \
    >"$T/units/keyline-line@t141.service"
grep -q "^ExecStart=$keyline_bin batch --line" "$T/units/keyline-line@t141.service" ||
	fail "the unit's ExecStart is not keyline batch --line"
# Man pages are checked where they are installed (140).
verify() {
	systemd-analyze verify --man=no "$1" >"$T/verify.out" 2>&1
}
verify "$T/units/keyline-line@t141.service" ||
	{ cat "$T/verify.out" >&2; fail "systemd-analyze verify failed"; }
[ ! -s "$T/verify.out" ] || { cat "$T/verify.out" >&2; fail "systemd-analyze verify printed warnings"; }
# Control: a misspelt key is reported (as a warning, exit 0).
mkdir "$T/bad"
sed 's/^ProtectSystem=strict/ProtectSystm=strict/' "$T/units/keyline-line@t141.service" \
    >"$T/bad/keyline-line@t141.service"
verify "$T/bad/keyline-line@t141.service" || true
grep -q "Unknown key 'ProtectSystm'" "$T/verify.out" ||
	{ cat "$T/verify.out" >&2; fail "control: a misspelt key went unnoticed"; }

for k in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
    ReadWritePaths=/var/lib/keyline CapabilityBoundingSet= \
    SystemCallFilter=@system-service MemoryDenyWriteExecute=yes \
    DevicePolicy=closed User=keyline Type=notify 'WatchdogSec=[0-9]' \
    'LoadCredential=ca-pin:' 'LoadCredential=api-token:' \
    'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK$'; do
	grep -q "^$k" "$unit" || fail "keyline-line@.service lacks $k"
done

systemd-analyze security --offline=true --no-pager \
    "$T/units/keyline-line@t141.service" >"$T/security" 2>&1 ||
	{ cat "$T/security" >&2; fail "systemd-analyze security --offline failed"; }
score=$(sed -n 's/.*Overall exposure level for keyline-line@t141.service: \([0-9.]*\) .*/\1/p' "$T/security")
[ -n "$score" ] || { cat "$T/security" >&2; fail "no exposure score"; }
echo "exposure score: $score"
grep -q "exposure level of $score " "$top/docs/install.md" ||
	fail "docs/install.md does not give the unit's exposure score $score"
# Control: the same unit without its sandbox scores worse.
grep -v '^\(NoNewPrivileges\|ProtectSystem\|CapabilityBoundingSet\|SystemCallFilter\|PrivateTmp\|ProtectHome\)=' \
    "$T/units/keyline-line@t141.service" >"$T/bad/keyline-line@t141.service"
systemd-analyze security --offline=true --no-pager "$T/bad/keyline-line@t141.service" \
    >"$T/security.bad" 2>&1 || true
bad=$(sed -n 's/.*Overall exposure level for keyline-line@t141.service: \([0-9.]*\) .*/\1/p' "$T/security.bad")
[ -n "$bad" ] && [ "$(echo "$bad > $score" | bc)" = 1 ] ||
	fail "control: the unsandboxed unit scores $bad, not worse than $score"

# ---- sd_notify and the journal ---------------------------------------------
line_setup "$T" 2
line_start "$T"
# socat -v writes each datagram it receives, after a header line.
dgram_listen() {
	rm -f "$1"
	socat -u -v "UNIX-RECV:$1" OPEN:/dev/null 2>"$2" &
	track_pid $!
	wait_for 10 "socket $1" test -S "$1"
	chmod 666 "$1"
}
dgram_listen "$T/notify.sock" "$T/notify.log"

journal=0
if [ ! -e /run/systemd/journal/socket ] && [ "$(id -u)" = 0 ]; then
	journal=1
	made_dir=0
	[ -d /run/systemd/journal ] || { mkdir -p /run/systemd/journal && made_dir=1; }
	on_exit 'rm -f /run/systemd/journal/socket; [ "$made_dir" = 0 ] || rmdir /run/systemd/journal /run/systemd 2>/dev/null'
	dgram_listen /run/systemd/journal/socket "$T/journal.log"
else
	echo "journald runs here (or not root): journal fields not checked"
fi

: >"$T/err"
stream=$(stat -c '%d:%i' "$T/err")
NOTIFY_SOCKET=$T/notify.sock WATCHDOG_USEC=400000 JOURNAL_STREAM=$stream \
    bg_start "$KL" batch --line --config "$T/station.conf" >"$T/out.jsonl" 2>>"$T/err"
st=$!
wait_for -p "$st" -l "$T/err" 60 "READY=1" grep -q 'READY=1' "$T/notify.log"
wait_for -p "$st" -l "$T/err" 60 "2 boards passed" at_least 2 '"event":"passed"' "$T/out.jsonl"
wait_for -p "$st" -l "$T/err" 10 "STATUS= with 2 passed" \
    grep -q 'STATUS=line running: 2 passed, 0 failed, 0 already provisioned, 0 in flight' "$T/notify.log"
# Every 200 ms at 400 ms: a few seconds bring many.
w0=$(grep -o 'WATCHDOG=1' "$T/notify.log" | wc -l)
wait_for -p "$st" 10 "5 more WATCHDOG=1" \
    bash -c "[ \$(grep -o 'WATCHDOG=1' '$T/notify.log' | wc -l) -ge $((w0 + 5)) ]"
grep -q 'STOPPING=1' "$T/notify.log" && fail "STOPPING=1 before the stop"
kill -TERM "$st"
wait "$st" || fail "the station exited $? after SIGTERM"
wait_for 5 "STOPPING=1" grep -q 'STOPPING=1' "$T/notify.log"
# READY comes once, before any STOPPING.
[ "$(grep -o 'READY=1' "$T/notify.log" | wc -l)" = 1 ] || fail "READY=1 more than once"

if [ "$journal" = 1 ]; then
	for i in 1 2; do
		serial=$(sed -n "${i}p" "$T/boards.list")
		devid=$(grep '"event":"passed"' "$T/out.jsonl" | grep "\"serial\":\"$serial\"" |
		    sed 's/.*"device_id":"\([^"]*\)".*/\1/')
		slot=$(grep '"event":"passed"' "$T/out.jsonl" | grep "\"serial\":\"$serial\"" |
		    sed 's/.*"slot":\([0-9]*\).*/\1/')
		[ -n "$devid" ] && [ -n "$slot" ] || fail "board $serial: no passed event"
		# One datagram: the message and its fields, in this order.
		grep -A6 "^MESSAGE=slot $slot: $devid passed (certificate serial " "$T/journal.log" >"$T/entry"
		for f in PRIORITY=6 SYSLOG_IDENTIFIER=keyline "KEYLINE_SLOT=$slot" \
		    "KEYLINE_SERIAL=$serial" "KEYLINE_DEVICE_ID=$devid"; do
			grep -qx "$f" "$T/entry" ||
				{ cat "$T/journal.log" >&2; fail "board $serial: no $f in its journal entry"; }
		done
	done
	grep -q 'passed' "$T/err" && fail "the boards' lines went to stderr as well"
	# JOURNAL_STREAM naming another file (a child of a service whose
	# stderr was redirected): stderr, not the journal.
	n0=$(wc -c <"$T/journal.log")
	JOURNAL_STREAM=$(stat -c '%d:%i' "$T/station.conf") \
	    "$KL" batch --config "$T/station.conf" >"$T/out2.jsonl" 2>"$T/err2" ||
		fail "second pass exited $?"
	[ "$(count '"event":"already_provisioned"' "$T/out2.jsonl")" = 2 ] ||
		fail "second pass: boards not already provisioned"
	[ "$(wc -c <"$T/journal.log")" = "$n0" ] ||
		fail "JOURNAL_STREAM of another file: lines went to the journal"
fi
echo "PASS systemd-units"
