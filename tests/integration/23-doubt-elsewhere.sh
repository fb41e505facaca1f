#!/usr/bin/env bash
# Attempts in doubt seen from elsewhere.  Two stations share one audit
# log: station 1 dies in the middle of a board; station 2 sees that
# attempt in doubt but recent, and refuses the board as possibly still in
# flight there instead of issuing a second certificate; station 1,
# started again, resolves its own attempt.  Then a board whose COMMIT
# went unanswered comes back in another slot: its certificate may be on
# some other board, so it is refused; back in its own slot it carries on.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2
# A board that died on COMMIT should cost two seconds, not twenty.
conf_set "$T/station.conf" link timeout_ms 1000
conf_set "$T/station.conf" link attempts 2
b=$(board_dir 1)
sed -i 's/^fault = .*/fault = pause-before:PUT_FILE/' "$b/board.conf"
# Stopped after the CA issued and before anything is committed: a request
# between the two exists only in protocol version 1 (version 2 sends
# PUT_FILE with KEYGEN, and the certificate with COMMIT).
board_protocol_max "$b" 1
line_start "$T"
sed 's/^id = station-01$/id = station-02/' "$T/station.conf" >"$T/station2.conf"
grep -q '^id = station-02$' "$T/station2.conf" || fail "no second station.conf"

"$KL" batch --config "$T/station.conf" --count 1 >"$T/one.jsonl" 2>&1 &
st=$!
for ((i = 0; i < 600; i++)); do
	[ -e "$b/.paused" ] && break
	sleep 0.05
done
[ -e "$b/.paused" ] || fail "the board never reached PUT_FILE"
kill -KILL "$st"
wait "$st" 2>/dev/null || true
rm -f "$b/.paused"

set +e
"$KL" batch --config "$T/station2.conf" --count 1 >"$T/two.jsonl" 2>"$T/two.err"
rc=$?
set -e
[ $rc = 1 ] || fail "station 2: exit $rc, expected 1"
grep '"event":"in_doubt"' "$T/two.jsonl" | grep -q station-01 ||
	fail "station 2 did not list station 1's attempt in doubt at start-up"
grep '"event":"failed"' "$T/two.jsonl" | grep -q "may still be running there" ||
	fail "station 2 did not refuse a board station 1 may still be provisioning"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='issued'")" = 1 ] ||
	fail "a second certificate was issued"

"$KL" batch --config "$T/station.conf" --count 1 >"$T/three.jsonl" ||
	fail "station 1 started again could not resolve its own attempt"
sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE station='station-01' AND step='recover' AND outcome='not_provisioned' AND error LIKE '%revoke it%'" |
	grep -qx 1 || fail "the unused certificate is not named for revocation"

# Board 2's agent dies on COMMIT: no answer, the attempt is in doubt.
b2=$(board_dir 2)
line_stop "$T"
sed -i 's/^fault = .*/fault = none/' "$b/board.conf"
sed -i 's/^fault = .*/fault = exit-before-commit/' "$b2/board.conf"
line_start "$T"
"$KL" batch --config "$T/station.conf" >"$T/four.jsonl" 2>&1 &&
	fail "a board that died on COMMIT passed"
grep '"event":"failed"' "$T/four.jsonl" | grep -q "finds out which when it sees the board again" ||
	fail "the unanswered COMMIT is not reported as in doubt"
# The boards swap slots (boards.list is in slot order).
line_stop "$T"
sed -i 's/^fault = .*/fault = none/' "$b2/board.conf"
tac "$T/boards.list" >"$T/boards.swapped" && mv "$T/boards.swapped" "$T/boards.list"
line_start "$T"
set +e
"$KL" batch --config "$T/station.conf" >"$T/five.jsonl" 2>&1
rc=$?
set -e
[ $rc = 1 ] || fail "board 2 in another slot: exit $rc, expected 1"
grep '"event":"failed"' "$T/five.jsonl" | grep '"slot":1' | grep '"error":"duplicate"' |
	grep -q "may have committed its certificate on a board" ||
	fail "board 2 in slot 1 not refused for the certificate its COMMIT may have placed"
# Back in its own slot, it is the same board: its COMMIT did not take.
line_stop "$T"
tac "$T/boards.list" >"$T/boards.swapped" && mv "$T/boards.swapped" "$T/boards.list"
line_start "$T"
"$KL" batch --config "$T/station.conf" >"$T/six.jsonl" ||
	fail "board 2 back in its own slot: exit $?"
grep '"event":"passed"' "$T/six.jsonl" | grep -q '"slot":2' ||
	fail "board 2 did not pass in its own slot"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
echo "PASS doubt-other-station"
