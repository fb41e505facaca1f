#!/usr/bin/env bash
# Line mode on a noisy cable: a lost or corrupted probe is not a board
# taken out, so no board that passed is ever started again (which would
# be refused as a duplicate, or with --reprovision get a second
# certificate).
. "$(dirname "$0")/lib.sh"

line_setup "$T" 4
line_start "$T" --corrupt-every 1500
"$KL" batch --line --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err" &
st=$!
for ((i = 0; i < 300; i++)); do
	[ "$(grep -c '"event":"passed"' "$T/out.jsonl" || true)" -ge 4 ] && break
	sleep 0.1
done
# Let the slots probe their finished boards through the noise for a while.
sleep 12
kill -0 "$st" || { tail "$T/err" >&2; fail "the station is gone"; }
kill -TERM "$st"
wait "$st" || { tail "$T/err" >&2; fail "the station exited $? after SIGTERM"; }
passes=$(grep -c '"event":"passed"' "$T/out.jsonl" || true)
if [ "$passes" != 4 ]; then
	grep -v '"event":"step"' "$T/out.jsonl" | tail -n 20 >&2 || true
	fail "$passes boards passed, not 4"
fi
if grep '"event":"failed"' "$T/out.jsonl" | grep -q duplicate; then
	fail "a finished board was started again on a noisy line"
fi
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='identify'")" = 4 ] ||
	fail "boards identified more than once"
echo "PASS line-noise"
