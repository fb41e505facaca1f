#!/usr/bin/env bash
# The plant store refuses a running station's rows (docs/plant.md, "Audit
# shipping"): someone put another row under the sequence the station
# ships next.  The refusal is loud (the status API and /metrics say so)
# and the station stops provisioning: the next board fails before anything
# is sent to it, saying why.
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
q() { pg_psql "$PG_ADMIN" "$1"; }

# Boards 2 and 3 hold their first HELLO until the test lets them go, so
# the line starts with one board and takes the others when told.
line_setup "$T" 3 --first 700 >/dev/null
for i in 2 3; do
	sed -i 's/^fault = none$/fault = pause-before:HELLO/' "$(board_dir $i)/board.conf"
	grep -q '^fault = pause-before:HELLO$' "$(board_dir $i)/board.conf" || fail "fault not set"
done
cp "$T/station.pw" "$T/registry.pw"
chmod 600 "$T/registry.pw"
station_owns "$T/registry.pw"
PORT=$(free_port) || fail "no free port"
api_token "$T/api.token"
printf '\n[registry]\nconninfo = host=%s port=%s dbname=keyline user=keyline_station\npassword_file = registry.pw\n\n[http]\nenabled = yes\nport = %s\ntoken_file = api.token\n' \
    "$PG_DIR" "$PG_PORT" "$PORT" >>"$T/station.conf"
SID=$(sed -n 's/^id = //p' "$T/station.conf")
api() { curl -sf -H "Authorization: Bearer $(cat "$T/api.token")" "http://127.0.0.1:$PORT$1"; }
line_start "$T"

bg_start "$KL" batch --line --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/station.err"
st=$!
wait_for -p "$st" -l "$T/station.err" 30 "board 1 to pass" \
    grep -q '"event":"passed".*KL000700' "$T/out.jsonl"
all_shipped() {
	[ "$(q "SELECT count(*) FROM audit_rows WHERE station = '$SID'")" = \
	    "$(sqlite3 "$T/audit.db" 'SELECT count(*) FROM events')" ]
}
wait_for -p "$st" 20 "the station's rows to reach the plant store" all_shipped

# Someone writes the station's next row into the plant store (the owner,
# triggers off): the station's own next row can no longer go there.
next=$(( $(sqlite3 "$T/audit.db" 'SELECT max(id) FROM events') + 1 ))
q "ALTER TABLE audit_rows DISABLE TRIGGER USER;
   INSERT INTO audit_rows (station, seq, time, slot, step, outcome, prev_hash, row_hash)
   VALUES ('$SID', $next, '2026-01-01T00:00:00.000Z', 9, 'forged', 'ok',
           repeat('0', 64), repeat('f', 64));
   ALTER TABLE audit_rows ENABLE TRIGGER USER;" >/dev/null

# Board 2 comes: its rows are the station's next, and are refused.
rm -f "$(board_dir 2)/.paused"
refused() { api /api/v1/status | jq -e '.registry.shipping.refused' >/dev/null; }
wait_for -p "$st" -l "$T/station.err" 30 "the station to see its rows refused" refused
api /metrics | grep -q '^keyline_audit_ship_refused 1$' || fail "/metrics does not say refused"
grep -qi "refused" "$T/station.err" || fail "the refusal is not in the station's log"

# Board 3 comes: it fails before anything is sent to it.
before=$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step = 'identify' AND board_serial = 'KL000702'")
rm -f "$(board_dir 3)/.paused"
wait_for -p "$st" -l "$T/station.err" 30 "board 3 to be stopped" \
    grep -q '"event":"failed".*station stopped provisioning' "$T/out.jsonl"
grep '"event":"failed".*station stopped provisioning' "$T/out.jsonl" | head -1 |
	jq -r .message | grep -q "plant store refused" ||
	fail "the failure does not name the plant store: $(grep failed "$T/out.jsonl")"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step = 'identify' AND board_serial = 'KL000702'")" = "$before" ] ||
	fail "board 3 was spoken to after the refusal"
[ ! -s "$(board_dir 3)/rootfs/var/sota/import/client.pem" ] || fail "board 3 got credentials"
kill -TERM "$st"
wait "$st" 2>/dev/null || true
echo "PASS plant-refusal"
