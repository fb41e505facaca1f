#!/usr/bin/env bash
# Continuous line mode: every board is provisioned once as it arrives; a
# board that stays in its slot is not done again; a board that fails is
# not retried by itself, whether it stays in its slot (slot 4: its
# signature does not verify) or dies there (slot 2: the agent exits before
# COMMIT), and once the dead board is replaced (the jig powers the dead
# agent up again, as a fresh board in the slot) the slot moves on.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 4 --fault-slot 2 --fault exit-before-commit
sed -i 's/^fault = .*/fault = bad-signature/' "$(board_dir 4)/board.conf"
conf_set "$T/station.conf" link timeout_ms 800
conf_set "$T/station.conf" link attempts 2
line_start_traced "$T"
# --verbose: the station logs each HELLO to the dead board it sends again.
bg_start "$KL" batch --line --verbose --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err"
st=$!

wait_for -p "$st" 40 "2 boards passed" at_least 2 '"event":"passed"' "$T/out.jsonl"
wait_for -p "$st" 40 "2 boards failed" at_least 2 '"event":"failed"' "$T/out.jsonl"
# The station has looked again: the boards still in their slots (the two
# that passed, the one that failed) each answered two more probes, and
# the dead board's slot was probed again.
dead=$(unanswered_probes "$T/err" 2)
wait_probes "$T" 2 "$(basename "$(board_dir 1)")" "$(basename "$(board_dir 3)")" \
    "$(basename "$(board_dir 4)")"
wait_for -p "$st" 10 "a probe of slot 2" eval '[ "$(unanswered_probes "$T/err" 2)" -gt "$dead" ]'
[ "$(count '"event":"passed"' "$T/out.jsonl")" = 2 ] || fail "a board was provisioned twice"
[ "$(count '"event":"failed"' "$T/out.jsonl")" = 2 ] || fail "a failed board was retried by itself"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='identify'")" = 4 ] ||
	fail "a board was started again"

# A fresh board in slot 2: a board.conf with a new serial and no fault,
# then the jig powers the slot's agent up again.
b2=$(board_dir 2)
sed -i 's/^serial = .*/serial = KL900002/; s/^fault = .*/fault = none/' "$b2/board.conf"
kill -HUP "$(cat "$T/jig.pid")"
wait_for -p "$st" 40 "the new board in slot 2 to pass" at_least 3 '"event":"passed"' "$T/out.jsonl"
grep '"event":"passed"' "$T/out.jsonl" | grep -q '"serial":"KL900002"' ||
	fail "the new board in slot 2 was not provisioned"

kill -TERM "$st"
set +e
wait "$st"
rc=$?
set -e
[ $rc -eq 1 ] || fail "line stopped with exit $rc, expected 1 (boards failed)"
s=$(summary "$T/out.jsonl")
[ "$(jq .passed <<<"$s")" = 3 ] && [ "$(jq .failed <<<"$s")" = 2 ] || fail "summary $s"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
echo "PASS line-mode"
