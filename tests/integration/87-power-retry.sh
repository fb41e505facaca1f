#!/usr/bin/env bash
# A board whose secure element hangs in key generation: the station
# power-cycles its slot through the jig and tries once more, the board
# passes, and the power cycle is in the audit log.  Without power_retry
# the same board fails.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 3 --fault-slot 2 --fault hang-in-keygen-once
conf_set "$T/station.conf" link keygen_timeout_ms 1500
conf_set "$T/station.conf" link attempts 1
line_start "$T"
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl" ||
	{ grep -E 'failed|info' "$T/out.jsonl"; fail "batch failed"; }
[ "$(grep -c '"event":"passed"' "$T/out.jsonl")" = 3 ] || fail "not all passed"
grep '"event":"info"' "$T/out.jsonl" | grep '"slot":2' | grep -q "power-cycled the slot" ||
	fail "no power-cycle event for slot 2"
serial=$(basename "$(board_dir 2)")
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='power' AND board_serial='$serial'")" = 1 ] ||
	fail "power cycle not audited"
grep -q "slot 2: power cycle" "$T/jig.log" || fail "the jig saw no power cycle"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"

# The same fault with power_retry off: the board fails with a reason.
line_stop "$T"
rm -f "$(board_dir 2)/.fault-hang-fired"
conf_add "$T/station.conf" jig power_retry no
line_start "$T"
set +e
"$KL" batch --config "$T/station.conf" --reprovision "$(jq -r 'select(.event=="passed" and .slot==2) | .device_id' "$T/out.jsonl")" \
    >"$T/out2.jsonl"
rc=$?
set -e
[ $rc -eq 1 ] || fail "expected the hung board to fail without power_retry (exit $rc)"
grep '"event":"failed"' "$T/out2.jsonl" | grep '"slot":2' | grep -q '"error":"timeout"' ||
	fail "slot 2 did not fail with a timeout"
# Two power cycles of one slot at once: the first is answered when the
# board has power again, the second at once ("busy"), not never.
(printf 'power-cycle 1 1500' | socat -t 3 - UNIX-SENDTO:"$T/jig.sock",bind="$T/c1.sock" >"$T/a1") &
p1=$!
track_pid "$p1"
# The second only once the jig is cutting power for the first.
wait_for 10 "the jig to power slot 1 off" grep -q "slot 1: power cycle (1500 ms off)" "$T/jig.log"
printf 'power-cycle 1 1500' | socat -t 1 - UNIX-SENDTO:"$T/jig.sock",bind="$T/c2.sock" >"$T/a2"
wait $p1
[ "$(cat "$T/a1")" = ok ] || fail "first power cycle answered '$(cat "$T/a1")'"
grep -q '^error busy' "$T/a2" || fail "second power cycle answered '$(cat "$T/a2")'"
echo "PASS power-retry"
