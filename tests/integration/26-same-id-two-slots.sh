#!/usr/bin/env bash
# Two boards report the same serial (so the same device ID) at the same
# time, in two slots: one is provisioned, the other is refused; never
# two certificates for one device ID.  A slow secure element keeps both
# in flight together.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2 --keygen-ms 1500
b1=$(board_dir 1)
b2=$(board_dir 2)
sed -i "s/^serial = .*/serial = $(basename "$b1")/" "$b2/board.conf"
line_start "$T"
set +e
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl"
rc=$?
set -e
[ $rc = 1 ] || fail "two boards with one device ID: exit $rc, expected 1"
[ "$(grep -c '"event":"passed"' "$T/out.jsonl")" = 1 ] || fail "not exactly one board passed"
grep '"event":"failed"' "$T/out.jsonl" | grep '"error":"duplicate"' |
	grep -q "is being provisioned in another slot" ||
	fail "the second board was not refused while the first was in flight"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='issued'")" = 1 ] ||
	fail "two certificates for one device ID"
echo "PASS same-id-two-slots"
