#!/usr/bin/env bash
# The demo keeps the CA token PIN in a RAM-backed file under /dev/shm only
# while it runs: after it finishes, and after a demo stopped with SIGTERM
# half way, the file and its directory are gone.
. "$(dirname "$0")/lib.sh"

demo=$T/demo
mkdir -p "$demo"
pin_dir=$(dirname "$(line_pin_file "$demo")")
# Whatever happens here, not left behind by this test.
trap 'rm -rf "$pin_dir"; line_cleanup "$T"; rm -rf "$T"' EXIT

KEYLINE_DEMO_DIR=$demo KEYLINE_DEMO_BATCH=1 KEYLINE_DEMO_BOARDS=2 \
    "$top/scripts/demo" </dev/null >"$T/demo.out" 2>&1 ||
	{ tail -n 20 "$T/demo.out" >&2; fail "the demo failed"; }
grep -q '"event":"summary"' "$T/demo.out" || fail "the demo provisioned nothing"
[ "$(summary "$T/demo.out" | jq -r .passed)" = 2 ] ||
	fail "the demo did not pass its 2 boards: $(summary "$T/demo.out")"
[ ! -e "$pin_dir" ] || fail "the demo left its PIN file: $(ls -la "$pin_dir")"

# Stopped while the station runs: the trap still removes it.
mkdir -p "$demo"
KEYLINE_DEMO_DIR=$demo KEYLINE_DEMO_BATCH=1 KEYLINE_DEMO_BOARDS=2 \
    setsid "$top/scripts/demo" </dev/null >"$T/demo2.out" 2>&1 &
d=$!
for ((i = 0; i < 300; i++)); do
	grep -q '== provisioning' "$T/demo2.out" && break
	sleep 0.1
done
grep -q '== provisioning' "$T/demo2.out" || fail "the second demo did not start"
[ -e "$(line_pin_file "$demo")" ] || fail "no PIN file while the demo runs"
kill -TERM "$d"
wait "$d" || true
for ((i = 0; i < 100; i++)); do
	[ -e "$pin_dir" ] || break
	sleep 0.1
done
[ ! -e "$pin_dir" ] || fail "a demo stopped with SIGTERM left its PIN file"
echo "PASS demo-pin"
