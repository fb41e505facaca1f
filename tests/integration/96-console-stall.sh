#!/usr/bin/env bash
# A stalled terminal (an SSH link that died, a frozen terminal emulator)
# must not slow provisioning.  The console runs on a pty that nobody reads
# (tests/tools/ttystall); resizes make it repaint until its drawing thread
# is stuck in write(2), checked in /proc.  Only then do 4 boards arrive:
# they are all provisioned while the write is still stuck.  Then the
# terminal is read again, and 'q' quits the console cleanly.
. "$(dirname "$0")/lib.sh"

STALL=$KEYLINE_BIN/../tools/ttystall
[ -x "$STALL" ] || fail "no $STALL (make san builds it)"

line_setup "$T" 4
# The slots are empty until the jig starts: the console probes them.
TERM=xterm "$STALL" "$T/blocked" "$T/release" q -- \
    "$KL" console --config "$T/station.conf" --start 2>"$T/stall.err" &
sp=$!
for ((i = 0; i < 700; i++)); do
	[ -s "$T/blocked" ] && break
	kill -0 $sp 2>/dev/null || break
	sleep 0.1
done
[ -s "$T/blocked" ] || { cat "$T/stall.err" >&2; fail "the console never blocked on its terminal"; }

line_start "$T"
passed() { sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='done' AND outcome='passed'"; }
for ((i = 0; i < 600; i++)); do
	[ "$(passed)" = 4 ] && break
	sleep 0.1
done
[ "$(passed)" = 4 ] || fail "$(passed) of 4 boards passed behind a stalled terminal"

touch "$T/release"
set +e
wait $sp
rc=$?
set -e
cat "$T/stall.err" >&2
grep -qx "still-blocked yes" "$T/blocked" ||
	fail "the console's write was not stuck any more when the boards were done"
[ $rc -eq 0 ] || fail "the console exited $rc after the terminal came back"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
echo "PASS console-stall"
