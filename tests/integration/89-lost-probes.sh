#!/usr/bin/env bash
# Line mode: probes of a finished board that go unanswered (fault
# lose-probes:N, each probe's HELLO and its resend unanswered) are not a
# board taken out until three in a row are.  Board 1 loses two probes and
# answers again: it is not started again.  Board 2 loses three: the slot
# takes it for gone, and the board that then answers is started as a new
# one (and found already provisioned).  Waits on what the agents record
# in .probes and on the audit log, never on fixed sleeps.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2
b1=$(board_dir 1)
b2=$(board_dir 2)
id1="$(sed -n 's/^model *= *//p' "$b1/board.conf")-$(basename "$b1")"
id2="$(sed -n 's/^model *= *//p' "$b2/board.conf")-$(basename "$b2")"
sed -i 's/^fault = .*/fault = lose-probes:2/' "$b1/board.conf"
sed -i 's/^fault = .*/fault = lose-probes:3/' "$b2/board.conf"
line_start "$T"
"$KL" batch --line --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err" &
st=$!
trap 'kill -TERM $st 2>/dev/null || true; wait $st 2>/dev/null || true; line_cleanup "$T"; rm -rf "$T"' EXIT

# What the agent in board dir $1 recorded: probes (seqs) it left
# unanswered, HELLOs it answered after them.
lost() { cat "$1/.probes" 2>/dev/null | awk '$1 == "lost" { print $2 }' | sort -u | wc -l; }
answered() { cat "$1/.probes" 2>/dev/null | awk '$1 == "answered"' | wc -l; }
identified() { sqlite3 -readonly "$T/audit.db" "SELECT count(*) FROM events WHERE device_id='$1' AND step='identify'" 2>/dev/null || echo 0; }
# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds.
wait_for() {
	local secs=$1 what=$2 i
	shift 2
	for ((i = 0; i < secs * 10; i++)); do
		"$@" && return 0
		kill -0 $st 2>/dev/null || { tail "$T/err" >&2; fail "the station is gone while waiting for $what"; }
		sleep 0.1
	done
	fail "no $what in $secs s: board 1 lost $(lost "$b1") probes, answered $(answered "$b1"); board 2 lost $(lost "$b2"), answered $(answered "$b2")"
}

# A lost probe costs two 1 s attempts; the next comes a second later.
b1_done() { [ "$(lost "$b1")" -ge 2 ] && [ "$(answered "$b1")" -ge 3 ]; }
b2_again() { [ "$(identified "$id2")" -ge 2 ]; }
wait_for 60 "board 1 losing two probes and answering three" b1_done
wait_for 60 "board 2 started again after three lost probes" b2_again
[ "$(lost "$b1")" = 2 ] || fail "board 1 lost $(lost "$b1") probes, not 2"
[ "$(lost "$b2")" = 3 ] || fail "board 2 lost $(lost "$b2") probes, not 3"
# Board 1 answered three probes after its losses: a slot that took it for
# gone would have started it again on the first of them, and written its
# identify row before the board saw the next probe.
[ "$(identified "$id1")" = 1 ] ||
	fail "board 1 was started again after two lost probes ($(identified "$id1") identify rows)"
kill -TERM $st
wait $st || { tail "$T/err" >&2; fail "the station exited $? after SIGTERM"; }
[ "$(grep -c '"event":"passed"' "$T/out.jsonl")" = 2 ] || fail "not both boards passed once"
grep '"event":"already_provisioned"' "$T/out.jsonl" | grep -q "\"device_id\":\"$id2\"" ||
	{ grep -v '"event":"step"' "$T/out.jsonl" | tail -n 5 >&2; fail "board 2, back after three lost probes, was not found already provisioned"; }
! grep '"event":"already_provisioned"' "$T/out.jsonl" | grep -q "\"device_id\":\"$id1\"" ||
	fail "board 1 was started again"
! grep -q '"event":"failed"' "$T/out.jsonl" || fail "a board failed"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='issued'")" = 2 ] ||
	fail "a board got a second certificate"
echo "PASS lost-probes"
