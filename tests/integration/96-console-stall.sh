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
TERM=xterm bg_start "$STALL" "$T/blocked" "$T/release" q -- \
    "$KL" console --config "$T/station.conf" --start 2>"$T/stall.err"
sp=$!
wait_for -p "$sp" -l "$T/stall.err" 70 "the console to block on its terminal" test -s "$T/blocked"

line_start "$T"
passed() { sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='done' AND outcome='passed'"; }
wait_for -p "$sp" 60 "4 boards to pass behind a stalled terminal" eval '[ "$(passed)" = 4 ]'

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
