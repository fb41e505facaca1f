#!/usr/bin/env bash
# The CA token PIN from the environment ([ca] pin_env): the station logs in
# with it, and its own environment block no longer holds the PIN while it
# runs (a child or /proc/PID/environ would otherwise see it).
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2
pin=$(cat "$(line_pin_file "$T")")
sed -i 's/^pin_file = .*/pin_env = KL_TEST_CA_PIN/' "$T/station.conf"
grep -q '^pin_env = KL_TEST_CA_PIN$' "$T/station.conf" || fail "no pin_env line"
line_start "$T"
KL_TEST_CA_PIN=$pin "$KL" batch --line --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err" &
st=$!
for ((i = 0; i < 300; i++)); do
	[ "$(grep -c '"event":"passed"' "$T/out.jsonl" || true)" -ge 2 ] && break
	sleep 0.1
done
[ "$(grep -c '"event":"passed"' "$T/out.jsonl" || true)" = 2 ] ||
	{ cat "$T/err" >&2; fail "the boards did not pass with the PIN from the environment"; }
kill -0 "$st" || fail "the station is gone"
# The variable may still be named; its value must be gone.
tr '\0' '\n' <"/proc/$st/environ" >"$T/environ"
grep -q "^KL_TEST_CA_PIN=$pin\$" "$T/environ" && fail "the PIN is still in the station's environment"
grep -qF "$pin" "/proc/$st/environ" && fail "the PIN's bytes are still in the environment block"
kill -TERM "$st"
wait "$st" || fail "the station exited $? after SIGTERM"
echo "PASS pin-env"
