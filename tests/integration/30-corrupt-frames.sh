#!/usr/bin/env bash
# A noisy cable: the jig flips a bit in a byte with probability 1/2000 both ways.
# Every board still passes, through retries the summary counts.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 4
conf_set "$T/station.conf" link timeout_ms 1500
conf_set "$T/station.conf" link attempts 8
line_start "$T" --corrupt-every 2000
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl" ||
	{ grep failed "$T/out.jsonl"; fail "batch failed on a noisy line"; }
s=$(summary "$T/out.jsonl")
[ "$(jq .passed <<<"$s")" = 4 ] || fail "summary: $s"
[ "$(jq .retries <<<"$s")" -gt 0 ] || fail "no retries counted: $s"
for i in 1 2 3 4; do
	imp=$(board_dir $i)/rootfs/var/sota/import
	openssl verify -CAfile "$T/ca/fleet-root.pem" "$imp/client.pem" >/dev/null ||
		fail "board $i: bad client.pem after retries"
done
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
echo "PASS corrupt-frames"
