#!/usr/bin/env bash
# Version 2 sends the PUT_FILE of root.crt and gateway.url behind KEYGEN
# (docs/protocol.md, "Pipelining"), and the board runs it whatever became
# of KEYGEN's exchange.  Here KEYGEN's answer never comes in time: the
# board pauses before KEYGEN (fault pause-before:KEYGEN) past the
# station's keygen_timeout_ms with one attempt, then carries on, so it
# runs KEYGEN, stages both files and only then reads the station's ABORT.
# The board must fail with words naming KEYGEN and keep no staged file:
# the ABORT that follows any failed pipeline throws them away.  (A station
# that sent ABORT only once KEYGEN was answered left .root.crt.keyline-tmp
# and .gateway.url.keyline-tmp behind, as a noisy line showed in 30.)
. "$(dirname "$0")/lib.sh"

line_setup "$T" 1
b=$(cd "$T/boards" && echo "$T/boards/$(ls | head -n 1)")
imp=$b/rootfs/var/sota/import
board_protocol_max "$b" 2
sed -i "s/^fault = .*/fault = pause-before:KEYGEN/" "$b/board.conf"
conf_set "$T/station.conf" link attempts 1
conf_set "$T/station.conf" link keygen_timeout_ms 1000
conf_set "$T/station.conf" link timeout_ms 20000
# A power cycle would throw the staged files away itself.
conf_add "$T/station.conf" jig power_retry no
line_start "$T"
bg_start "$KL" batch --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err.log"
st=$!
wait_for -p "$st" -l "$T/err.log" 30 "the board to pause before KEYGEN" test -e "$b/.paused"
# The station gives up on KEYGEN after 1 s and sends ABORT, which waits
# for up to 20 s behind the paused KEYGEN and the PUT_FILE.
sleep 3
kill -0 "$st" 2>/dev/null || fail "the station did not wait for its ABORT: $(tail -n 3 "$T/out.jsonl")"
rm -f "$b/.paused"
set +e
wait "$st"
rc=$?
set -e
[ $rc -eq 1 ] || fail "batch exited $rc, expected 1 (the board failed): $(cat "$T/err.log")"
grep '"event":"failed"' "$T/out.jsonl" | grep -q 'KEYGEN exchange failed: no answer' ||
	fail "the failure does not name KEYGEN's silence: $(grep failed "$T/out.jsonl")"
left=$(ls -A "$imp" 2>/dev/null | tr '\n' ' ')
[ -z "$left" ] || fail "files left on the board after a failed pipeline: $left"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
line_stop "$T"
echo "PASS pipeline-abort"
