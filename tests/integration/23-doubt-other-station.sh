#!/usr/bin/env bash
# Two stations share one audit log.  Station 1 dies in the middle of a
# board; station 2 sees that attempt in doubt but recent, and refuses the
# board as possibly still in flight there instead of issuing a second
# certificate.  Station 1, started again, resolves its own attempt.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 1
b=$(board_dir 1)
sed -i 's/^fault = .*/fault = pause-before:PUT_FILE/' "$b/board.conf"
line_start "$T"
sed 's/^id = station-01$/id = station-02/' "$T/station.conf" >"$T/station2.conf"
grep -q '^id = station-02$' "$T/station2.conf" || fail "no second station.conf"

"$KL" batch --config "$T/station.conf" >"$T/one.jsonl" 2>&1 &
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
"$KL" batch --config "$T/station2.conf" >"$T/two.jsonl" 2>"$T/two.err"
rc=$?
set -e
[ $rc = 1 ] || fail "station 2: exit $rc, expected 1"
grep '"event":"in_doubt"' "$T/two.jsonl" | grep -q station-01 ||
	fail "station 2 did not list station 1's attempt in doubt at start-up"
grep '"event":"failed"' "$T/two.jsonl" | grep -q "may still be running there" ||
	fail "station 2 did not refuse a board station 1 may still be provisioning"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='issued'")" = 1 ] ||
	fail "a second certificate was issued"

"$KL" batch --config "$T/station.conf" >"$T/three.jsonl" ||
	fail "station 1 started again could not resolve its own attempt"
sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE station='station-01' AND step='recover' AND outcome='not_provisioned' AND error LIKE '%revoke it%'" |
	grep -qx 1 || fail "the unused certificate is not named for revocation"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
echo "PASS doubt-other-station"
