#!/usr/bin/env bash
# The plant registry goes away mid-batch (docs/plant.md, offline = wait):
# a board that needs it waits in "waiting_registry" with back-off and goes
# on when the server is back, for its claim and for the record of its
# pass; past [registry] wait_deadline_s it fails, before any certificate.
. "$(dirname "$0")/lib.sh"
. "$top/scripts/pg.sh"

pg_start "$T/pg"
umask 077
echo "station-secret-$$" >"$T/station.pw"
station_owns "$T/station.pw"
umask 022
"$KL" plant init --admin "$PG_ADMIN" --station-role keyline_station \
    --password-file "$T/station.pw" >"$T/init.out" 2>&1 ||
	fail "plant init: $(cat "$T/init.out")"

q() {
	pg_psql "$PG_ADMIN" "$1"
}

board2() {
	echo "$1/boards/$(sed -n 2p "$1/boards.list")"
}

# A line whose board 2 pauses before MESSAGE, with a link timeout
# long enough to hold the station there.
outage_line() {
	local dir=$1 first=$2 deadline=$3 msg=$4
	mkdir -p "$dir"
	line_setup "$dir" 2 --first "$first" >/dev/null
	on_exit_line "$dir"
	# One station ID per station: the plant store chains rows per ID.
	sed -i "s/^id = .*/id = station-$(basename "$dir")/" "$dir/station.conf"
	sed -i "s/^fault = none\$/fault = pause-before:$msg/" "$(board2 "$dir")/board.conf"
	grep -q "^fault = pause-before:$msg\$" "$(board2 "$dir")/board.conf" ||
		fail "fault not set"
	cp "$T/station.pw" "$dir/registry.pw"
	chmod 600 "$dir/registry.pw"
	station_owns "$dir/registry.pw"
	conf_set "$dir/station.conf" link timeout_ms 30000
	printf '\n[registry]\nconninfo = host=%s port=%s dbname=keyline user=keyline_station\npassword_file = registry.pw\nwait_deadline_s = %s\n' \
	    "$PG_DIR" "$PG_PORT" "$deadline" >>"$dir/station.conf"
	line_start "$dir"
}

paused() {
	test -e "$(board2 "$1")/.paused"
}

go_on() {
	rm -f "$(board2 "$1")/.paused"
}

# 1. The claim: board 2 is held before its HELLO, the server stops, board
# 2 goes on and waits for the registry; the server comes back; it passes.
outage_line "$T/a" 400 120 HELLO
bg_start "$KL" batch --config "$T/a/station.conf" >"$T/a.jsonl" 2>"$T/a.err"
pa=$!
wait_for -p "$pa" -l "$T/a.err" 30 "board 2 to pause before HELLO" paused "$T/a"
wait_for -p "$pa" -l "$T/a.err" 30 "board 1 to pass" \
    grep -q '"event":"passed".*KL000400' "$T/a.jsonl"
pg_down
go_on "$T/a"
wait_for -p "$pa" -l "$T/a.err" 30 "board 2 to wait for the registry" \
    grep -q 'waiting for the plant registry (claim)' "$T/a.jsonl"
"$KL" audit export --db "$T/a/audit.db" --format csv | grep -q ',registry,waiting,' ||
	fail "the wait is not in the audit log"
pg_up
wait "$pa" || fail "batch failed after the registry came back: $(grep failed "$T/a.jsonl")"
grep -q 'plant registry answered after' "$T/a.jsonl" || fail "the resumption was not said"
[ "$(q "SELECT count(*) FROM devices WHERE state = 'provisioned' AND device_id IN ('keyline-virtual-KL000400', 'keyline-virtual-KL000401')")" = 2 ] ||
	fail "the registry does not hold both boards"

# 2. The record of a pass: board 2 has its claim and is held before SIGN;
# the server stops; board 2 passes on the board but waits until the
# registry records it.
outage_line "$T/b" 500 120 SIGN
# The status API beside it: the registry's state while it is gone.
PORT=$(free_port) || fail "no free port"
api_token "$T/b/api.token"
printf '\n[http]\nenabled = yes\nport = %s\ntoken_file = api.token\n' "$PORT" >>"$T/b/station.conf"
api() {
	curl -sf -H "Authorization: Bearer $(cat "$T/b/api.token")" \
	    "http://127.0.0.1:$PORT$1"
}
bg_start "$KL" batch --config "$T/b/station.conf" >"$T/b.jsonl" 2>"$T/b.err"
pb=$!
wait_for -p "$pb" -l "$T/b.err" 30 "board 2 to pause before SIGN" paused "$T/b"
[ "$(q "SELECT state FROM devices WHERE device_id = 'keyline-virtual-KL000501'")" = claimed ] ||
	fail "board 2 has no claim before SIGN"
pg_down
go_on "$T/b"
wait_for -p "$pb" -l "$T/b.err" 30 "board 2 to wait to record its pass" \
    grep -q 'waiting for the plant registry (record of the pass)' "$T/b.jsonl"
# The shipper notices at its next poll (200 ms) that its rows cannot go.
outage_shown() {
	api /api/v1/status >"$T/status.json" &&
	    jq -e '.registry.configured and .registry.slots_waiting == 1 and
	    (.registry.shipping.rows_waiting > 0) and
	    (.registry.shipping.connected | not)' "$T/status.json" >/dev/null
}
wait_for -p "$pb" 10 "the status to show the registry outage" outage_shown
slots_state() {
	api /api/v1/slots | jq -e '.slots[1].state == "waiting_registry"' >/dev/null
}
slots_state || fail "slot 2 is not waiting_registry in the API"
api /metrics >"$T/metrics.txt" || fail "no metrics"
grep -q '^keyline_slots_waiting_registry 1$' "$T/metrics.txt" ||
	fail "metrics lack the waiting slot: $(grep registry "$T/metrics.txt")"
awk '$1 == "keyline_audit_rows_unshipped" && $2 > 0 { ok = 1 } END { exit !ok }' "$T/metrics.txt" ||
	fail "metrics do not show unshipped rows: $(grep unshipped "$T/metrics.txt")"
grep -q '"event":"passed".*KL000501' "$T/b.jsonl" &&
	fail "board 2 passed before the registry recorded it"
pg_up
wait "$pb" || fail "batch failed after the registry came back: $(grep failed "$T/b.jsonl")"
[ "$(q "SELECT state FROM devices WHERE device_id = 'keyline-virtual-KL000501'")" = provisioned ] ||
	fail "the pass is not in the registry"

# 3. Past the deadline: a 2 s wait for a server that stays down fails the
# board at its claim, with no certificate asked for.
outage_line "$T/c" 600 2 HELLO
bg_start "$KL" batch --config "$T/c/station.conf" >"$T/c.jsonl" 2>"$T/c.err"
pc=$!
wait_for -p "$pc" -l "$T/c.err" 30 "board 2 to pause before HELLO" paused "$T/c"
wait_for -p "$pc" -l "$T/c.err" 30 "board 1 to pass" \
    grep -q '"event":"passed".*KL000600' "$T/c.jsonl"
pg_down
go_on "$T/c"
if wait "$pc"; then
	fail "batch passed with the registry gone past the deadline"
fi
grep -q 'plant registry: gave up the claim after' "$T/c.jsonl" ||
	fail "giving up is not said: $(grep -v '"step"' "$T/c.jsonl")"
jq -r 'select(.event == "failed") | .message' "$T/c.jsonl" |
	grep -q "plant registry" ||
	fail "the failure does not name the registry: $(grep failed "$T/c.jsonl")"
"$KL" audit export --db "$T/c/audit.db" --format csv |
	grep 'KL000601' | grep -q ',ca,requested,' &&
	fail "a CSR went to the CA without a claim"
pg_up

echo "PASS plant-outage"
