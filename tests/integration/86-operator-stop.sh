#!/usr/bin/env bash
# The operator stops the line while boards are generating keys (a slow
# secure element): every in-flight board is rolled back and audited as
# cancelled at once, not after its timeout, and no board gets files.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 3 --keygen-ms 20000
line_start_traced "$T"
bg_start "$KL" batch --line --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err"
st=$!
wait_for -p "$st" 20 "3 boards in keygen" at_least 3 '"step":"keygen"' "$T/out.jsonl"
# ... and every board is generating its key (the agents log KEYGEN).
wait_for -p "$st" 20 "3 agents in KEYGEN" at_least 3 '^keyline-agent\[[^]]*\]: debug: KEYGEN seq' "$T/jig.log"
t0=$(date +%s%N)
kill -INT "$st"
set +e
wait "$st"
rc=$?
set -e
ms=$((($(date +%s%N) - t0) / 1000000))
[ $rc -eq 1 ] || fail "exit $rc after a stop with boards in flight, expected 1"
[ "$ms" -lt 5000 ] || fail "stop took $ms ms: it waited for the board instead of cancelling"
[ "$(grep '"event":"failed"' "$T/out.jsonl" | grep -c '"error":"cancelled"')" = 3 ] ||
	fail "in-flight boards not reported as cancelled"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE outcome='failed' AND (error LIKE '%stopped by the operator%' OR error LIKE '%cancelled%')")" -ge 3 ] ||
	fail "cancellations not audited"
for i in 1 2 3; do
	[ -z "$(ls -A "$(board_dir $i)/rootfs/var/sota/import")" ] || fail "board $i got files"
done
echo "PASS operator-stop"
