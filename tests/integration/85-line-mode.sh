#!/usr/bin/env bash
# Continuous line mode: every board is provisioned once as it arrives; a
# board that stays in its slot is not done again; a board that fails is
# not retried by itself, and once its board is replaced (the jig powers the
# dead agent up again, as a fresh board in the slot) the slot moves on.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 3 --fault-slot 2 --fault exit-before-commit
conf_set "$T/station.conf" link timeout_ms 800
conf_set "$T/station.conf" link attempts 2
line_start "$T"
"$KL" batch --line --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err" &
st=$!

wait_for() {	# wait_for COUNT PATTERN
	local i
	for ((i = 0; i < 200; i++)); do
		[ "$(grep -c "$2" "$T/out.jsonl" || true)" -ge "$1" ] && return 0
		sleep 0.1
	done
	fail "timed out waiting for $1 x $2"
}
wait_for 2 '"event":"passed"'
wait_for 1 '"event":"failed"'
# Three more probe rounds: nobody is done twice.
sleep 3.5
[ "$(grep -c '"event":"passed"' "$T/out.jsonl")" = 2 ] || fail "a board was provisioned twice"
[ "$(grep -c '"event":"failed"' "$T/out.jsonl")" = 1 ] || fail "the failed board was retried by itself"

# A fresh board in slot 2: a board.conf with a new serial and no fault,
# then the jig powers the slot's agent up again.
b2=$(board_dir 2)
sed -i 's/^serial = .*/serial = KL900002/; s/^fault = .*/fault = none/' "$b2/board.conf"
kill -HUP "$(cat "$T/jig.pid")"
wait_for 3 '"event":"passed"'
grep '"event":"passed"' "$T/out.jsonl" | grep -q '"serial":"KL900002"' ||
	fail "the new board in slot 2 was not provisioned"

kill -TERM "$st"
set +e
wait "$st"
rc=$?
set -e
[ $rc -eq 1 ] || fail "line stopped with exit $rc, expected 1 (one board failed)"
s=$(summary "$T/out.jsonl")
[ "$(jq .passed <<<"$s")" = 3 ] && [ "$(jq .failed <<<"$s")" = 1 ] || fail "summary $s"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
echo "PASS line-mode"
