#!/usr/bin/env bash
# [registry] offline = local (docs/plant.md): with the registry down,
# boards are provisioned on the station's own duplicate check and queued in
# its audit log; when the registry is back each queued device is
# reconciled, and a device ID two stations provisioned meanwhile is a
# conflict, on the server (device_conflicts, mes_conflicts, history) and on
# both stations (audit rows, status API, /metrics, events).  Station A
# loses the server mid-batch; station B starts while it is down and is
# SIGKILLed with its queue; a station in offline = wait refuses to start.
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

nth_board() {
	echo "$1/boards/$(sed -n "${2}p" "$1/boards.list")"
}

# A line of three boards from serial FIRST, offline = local, with the
# status API; boards listed in PAUSED wait before HELLO.
local_line() {
	local dir=$1 first=$2 paused=$3 n
	mkdir -p "$dir"
	line_setup "$dir" 3 --first "$first" >/dev/null
	on_exit_line "$dir"
	sed -i "s/^id = .*/id = station-$(basename "$dir")/" "$dir/station.conf"
	for n in $paused; do
		sed -i 's/^fault = none$/fault = pause-before:HELLO/' "$(nth_board "$dir" "$n")/board.conf"
	done
	cp "$T/station.pw" "$dir/registry.pw"
	chmod 600 "$dir/registry.pw"
	station_owns "$dir/registry.pw"
	conf_set "$dir/station.conf" link timeout_ms 30000
	printf '\n[registry]\nconninfo = host=%s port=%s dbname=keyline user=keyline_station\npassword_file = registry.pw\noffline = local\n' \
	    "$PG_DIR" "$PG_PORT" >>"$dir/station.conf"
	api_token "$dir/api.token"
	printf '\n[http]\nenabled = yes\nport = %s\ntoken_file = api.token\n' \
	    "$(free_port)" >>"$dir/station.conf"
	line_start "$dir"
}

api() {
	local dir=$1 port
	port=$(sed -n 's/^port = //p' "$dir/station.conf")
	curl -sf -H "Authorization: Bearer $(cat "$dir/api.token")" \
	    "http://127.0.0.1:$port$2"
}

reg() {
	api "$1" /api/v1/status | jq -e "$2" >/dev/null
}

rows() {
	sqlite3 "$1/audit.db" "SELECT count(*) FROM events WHERE step = 'registry' AND outcome = '$2'${3:-}"
}

# A board elsewhere is being provisioned as KL000701 (a live claim of
# another station): what A makes of it offline waits for that outcome.
q "INSERT INTO devices (device_id, state, station, slot, board_serial, lease_until)
    VALUES ('keyline-virtual-KL000701', 'claimed', 'station-x', 9, 'X1', now() + interval '1 hour')" >/dev/null

# 1. Station A loses the server mid-batch: board 1 is claimed and passes
# online; boards 2 and 3 (KL000701, KL000702) wait before HELLO, the
# server stops, they pass on the local check and are queued.
local_line "$T/a" 700 "2 3"
bg_start "$KL" batch --config "$T/a/station.conf" >"$T/a1.jsonl" 2>"$T/a1.err"
pa=$!
wait_for -p "$pa" -l "$T/a1.err" 30 "board 1 to pass" \
    grep -q '"event":"passed".*KL000700' "$T/a1.jsonl"
pg_down
rm -f "$(nth_board "$T/a" 2)/.paused" "$(nth_board "$T/a" 3)/.paused"
wait "$pa" || fail "A's batch failed with the registry down: $(grep failed "$T/a1.jsonl")"
[ "$(rows "$T/a" offline)" = 2 ] || fail "A: not 2 'registry offline' rows"
[ "$(rows "$T/a" queued)" = 2 ] || fail "A: not 2 'registry queued' rows"
grep -q 'devices provisioned offline wait in the audit log' "$T/a1.err" ||
	fail "A did not say what waits at its close: $(tail -5 "$T/a1.err")"
# The queued row comes before the pass.
[ "$(sqlite3 "$T/a/audit.db" "SELECT group_concat(step || '/' || outcome, ' ') FROM (SELECT step, outcome FROM events WHERE device_id = 'keyline-virtual-KL000702' AND step IN ('registry', 'done') ORDER BY id)")" = "registry/offline registry/queued done/passed" ] ||
	fail "A: KL000702's rows are not offline, queued, passed"

# 2. A station in offline = wait does not start without its registry.
sed '/^offline = local$/d; /^\[http\]/,$d' "$T/a/station.conf" >"$T/a/wait.conf"
set +e
"$KL" batch --config "$T/a/wait.conf" >/dev/null 2>"$T/w.err"
rc=$?
set -e
[ $rc -eq 2 ] || fail "offline = wait started without its registry (exit $rc)"
grep -q 'cannot connect to the registry' "$T/w.err" || fail "no clear reason: $(cat "$T/w.err")"

# 3. Station B starts while the server is down (line mode), provisions
# KL000702..704 on its own check; SIGKILLed, its queue survives in the log.
local_line "$T/b" 702 ""
bg_start "$KL" batch --line --config "$T/b/station.conf" >"$T/b1.jsonl" 2>"$T/b1.err"
pb=$!
wait_for -p "$pb" -l "$T/b1.err" 60 "B's 3 boards to pass" at_least 3 '"event":"passed"' "$T/b1.jsonl"
grep -q 'offline = local: boards go on' "$T/b1.err" || fail "B did not say it started without its registry"
wait_for -p "$pb" -l "$T/b1.err" 10 "B's API to show 3 queued" \
    reg "$T/b" '.registry.offline_mode == "local" and .registry.offline and .registry.queued == 3'
api "$T/b" /metrics >"$T/b.metrics"
grep -q '^keyline_registry_queued 3$' "$T/b.metrics" || fail "B's metrics lack the queue"
kill -KILL "$pb"
wait "$pb" 2>/dev/null || true
bg_start "$KL" batch --line --config "$T/b/station.conf" >"$T/b2.jsonl" 2>"$T/b2.err"
pb=$!
wait_for -p "$pb" -l "$T/b2.err" 30 "B's API to come back with its queue" \
    reg "$T/b" '.registry.queued == 3 and .registry.conflicts == 0'

# 4. A comes back in line mode, still without the server: its two queued
# devices are there too.
bg_start "$KL" batch --line --config "$T/a/station.conf" >"$T/a2.jsonl" 2>"$T/a2.err"
pa=$!
wait_for -p "$pa" -l "$T/a2.err" 30 "A's API to show 2 queued" reg "$T/a" '.registry.queued == 2'

# 5. The server is back: everything is reconciled but KL000701, still
# under station-x's live claim; KL000702, provisioned by both, is one
# conflict, reported on both stations.  station-x's board fails before
# its certificate (its claim is given back): A's KL000701 goes in.
pg_up
wait_for -l "$T/b2.err" 40 "b to reconcile and see the conflict" \
    reg "$T/b" '.registry.queued == 0 and .registry.conflicts == 1 and (.registry.offline | not)'
wait_for -l "$T/a2.err" 40 "a to see the conflict, KL000701 waiting" \
    reg "$T/a" '.registry.queued == 1 and .registry.conflicts == 1 and (.registry.offline | not)'
sleep 2.5	# more than one round: KL000701 stays queued under the live claim
reg "$T/a" '.registry.queued == 1' || fail "A's KL000701 was taken past a live claim"
[ "$(q "SELECT state || ' ' || station FROM devices WHERE device_id = 'keyline-virtual-KL000701'")" = "claimed station-x" ] ||
	fail "the live claim on KL000701 changed"
q "UPDATE devices SET state = 'released', lease_until = NULL WHERE device_id = 'keyline-virtual-KL000701'" >/dev/null
wait_for -l "$T/a2.err" 20 "a to reconcile KL000701 once the claim is given back" \
    reg "$T/a" '.registry.queued == 0 and .registry.conflicts == 1'
[ "$(q "SELECT made_station FROM devices WHERE device_id = 'keyline-virtual-KL000701'")" = station-a ] ||
	fail "KL000701 is not A's in the registry"
[ "$(q "SELECT count(*) FROM device_conflicts")" = 1 ] || fail "not one conflict on the server"
[ "$(q "SELECT device_id FROM mes_conflicts")" = keyline-virtual-KL000702 ] ||
	fail "mes_conflicts does not show KL000702"
[ "$(q "SELECT count(*) FROM devices WHERE state = 'provisioned' AND device_id LIKE 'keyline-virtual-KL0007%'")" = 5 ] ||
	fail "the registry does not hold the 5 devices"
[ "$(q "SELECT count(*) FROM device_history WHERE event = 'conflict' AND device_id = 'keyline-virtual-KL000702'")" = 1 ] ||
	fail "no conflict in the device history"
# The side the registry gave the device to, and the other: both certificates.
holder=$(q "SELECT holder_station FROM device_conflicts")
loser=$(q "SELECT station FROM device_conflicts")
[ "$holder" != "$loser" ] || fail "the conflict names one station twice"
[ "$(q "SELECT made_station FROM devices WHERE device_id = 'keyline-virtual-KL000702'")" = "$holder" ] ||
	fail "the registry does not give KL000702 to $holder"
for s in a b; do
	[ "$(rows "$T/$s" conflict " AND device_id = 'keyline-virtual-KL000702'")" = 1 ] ||
		fail "$s has no conflict row for KL000702"
	sqlite3 "$T/$s/audit.db" "SELECT error FROM events WHERE outcome = 'conflict'" |
		grep -q "^plant conflict #[0-9]*: device keyline-virtual-KL000702 has two certificates" ||
		fail "$s's conflict row lacks its words"
	reg "$T/$s" '.registry.recent_conflicts[0].device_id == "keyline-virtual-KL000702"' ||
		fail "$s's API does not list the conflict"
	api "$T/$s" /metrics >"$T/$s.metrics"
	grep -q "^keyline_registry_conflicts 1$" "$T/$s.metrics" ||
		fail "$s's metrics lack the conflict: $(grep registry "$T/$s.metrics")"
	grep -q '"event":"registry_conflict".*KL000702' "$T/${s}2.jsonl" ||
		fail "$s emitted no conflict event"
done
# Reconciled: A's KL000701, B's KL000703 and KL000704, and KL000702 on
# the side that got there first.
[ $(( $(rows "$T/a" reconciled) + $(rows "$T/b" reconciled) )) = 4 ] ||
	fail "not 4 devices reconciled"
# The history says where each pass was made while the registry was away.
q "SELECT detail FROM device_history WHERE device_id = 'keyline-virtual-KL000703' AND event = 'provisioned'" |
	grep -q 'made while the registry was unreachable' || fail "the history does not say KL000703 was made offline"

# 6. Again, after a restart: nothing is reported twice.
kill -TERM "$pb"
wait "$pb" || fail "B stopped with an error"
bg_start "$KL" batch --line --config "$T/b/station.conf" >"$T/b3.jsonl" 2>"$T/b3.err"
pb=$!
wait_for -p "$pb" -l "$T/b3.err" 30 "B's API after restart" reg "$T/b" '.registry.conflicts == 1 and .registry.queued == 0'
# A negative check: over more than one poll (2 s) of the registry.
sleep 2.5
[ "$(rows "$T/b" conflict)" = 1 ] || fail "B wrote the conflict again after a restart"
[ "$(q "SELECT count(*) FROM device_conflicts")" = 1 ] || fail "a second conflict on the server"
wait_for 20 "every row to be shipped" reg "$T/b" '.registry.shipping.rows_waiting == 0'
kill -TERM "$pb" "$pa"
wait "$pb" || fail "B stopped with an error"
wait "$pa" || fail "A stopped with an error"

"$KL" audit verify --plant "$PG_ADMIN" >"$T/verify.out" 2>&1 || fail "plant verify: $(cat "$T/verify.out")"
for s in a b; do
	"$KL" audit verify --plant "$PG_ADMIN" --station "station-$s" --db "$T/$s/audit.db" >/dev/null 2>&1 ||
		fail "$s's local head is not in the plant store"
done
echo "PASS plant-offline-local"
