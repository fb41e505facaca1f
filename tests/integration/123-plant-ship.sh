#!/usr/bin/env bash
# Audit shipping on a real PostgreSQL 15 server (docs/plant.md, "Audit
# shipping"): after a batch the plant store holds exactly the local rows
# and keyline audit verify --plant passes; a station SIGKILLed while its
# rows wait to ship (the server would not take them) ships the rest after
# a restart, no gap and no duplicate; the server refuses a row that does
# not chain, or another row under a seq it holds; a hand-edited plant row
# is caught by verify with the row named; a plant store that disagrees
# with the local log stops the station at start-up.
. "$(dirname "$0")/lib.sh"
. "$top/scripts/pg.sh"

pg_start "$T/pg"
umask 077
echo "station-secret-$$" >"$T/station.pw"
station_owns "$T/station.pw"
echo "*:*:*:keyline_station:station-secret-$$" >"$T/pgpass"
umask 022
init() {
	"$KL" plant init --admin "$PG_ADMIN" --station-role keyline_station \
	    --password-file "$T/station.pw" >"$T/init.out" 2>&1 ||
		fail "plant init: $(cat "$T/init.out")"
}
init
q() { pg_psql "$PG_ADMIN" "$1"; }
ST="host=$PG_DIR port=$PG_PORT dbname=keyline user=keyline_station"
station_sql() { PGPASSFILE=$T/pgpass pg_psql "$ST" "$1"; }

line_setup "$T" 6 --first 500 >/dev/null
# Board 6 holds its first KEYGEN until the test lets go: the station is
# still running (its rows waiting) when it is killed.
sed -i 's/^fault = none$/fault = pause-before:KEYGEN/' "$(board_dir 6)/board.conf"
grep -q '^fault = pause-before:KEYGEN$' "$(board_dir 6)/board.conf" || fail "fault not set"
line_start "$T"
cp "$T/station.pw" "$T/registry.pw"
chmod 600 "$T/registry.pw"
station_owns "$T/registry.pw"
printf '\n[registry]\nconninfo = host=%s port=%s dbname=keyline user=keyline_station\npassword_file = registry.pw\n' \
    "$PG_DIR" "$PG_PORT" >>"$T/station.conf"
SID=$(sed -n 's/^id = //p' "$T/station.conf")

local_rows() { sqlite3 "$T/audit.db" "SELECT id || ' ' || row_hash FROM events ORDER BY id"; }
plant_rows() { q "SELECT seq || ' ' || row_hash FROM audit_rows WHERE station = '$SID' ORDER BY seq"; }
same_rows() {
	local l p
	l=$(local_rows)
	p=$(plant_rows)
	[ -n "$l" ] || fail "$1: no local rows"
	[ "$l" = "$p" ] || fail "$1: plant rows differ from local rows:
$(diff <(echo "$l") <(echo "$p") | head -5)"
}
verify_ok() {
	"$KL" audit verify --plant "$PG_ADMIN" --db "$T/audit.db" >"$T/v.out" 2>"$T/v.err" ||
		fail "$1: verify --plant failed: $(cat "$T/v.err")"
	grep -q "^plant audit chains ok: 1 stations, $(local_rows | wc -l) rows$" "$T/v.out" ||
		fail "$1: verify --plant: $(cat "$T/v.out")"
	grep -q "^local head in the plant store: station $SID row $(local_rows | wc -l)$" "$T/v.out" ||
		fail "$1: local head: $(cat "$T/v.out")"
}

# 1. A batch: every local row in the plant store, in order, once.
"$KL" batch --config "$T/station.conf" --count 2 >"$T/b1.jsonl" 2>"$T/b1.err" ||
	fail "first batch: $(tail -3 "$T/b1.err")"
grep -q "audit shipping: every row is in the plant store (station $SID, rows 1\.\.$(local_rows | wc -l))" "$T/b1.err" ||
	fail "the station did not say it shipped every row: $(grep shipping "$T/b1.err")"
same_rows "after the first batch"
verify_ok "after the first batch"
# The station role may verify too, with its password file (mode 600).
"$KL" audit verify --plant "$ST" --password-file "$T/station.pw" --station "$SID" \
    >"$T/v2.out" 2>&1 || fail "verify as the station role: $(cat "$T/v2.out")"
chmod 644 "$T/station.pw"
rc=0; "$KL" audit verify --plant "$ST" --password-file "$T/station.pw" >"$T/v3.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "must be mode 600" "$T/v3.out" ||
	fail "a password file of mode 644 was taken (exit $rc): $(cat "$T/v3.out")"
chmod 600 "$T/station.pw"
rc=0; "$KL" audit verify --plant "$ST password=x" >"$T/v3.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "no password here" "$T/v3.out" ||
	fail "a password in --plant was taken (exit $rc): $(cat "$T/v3.out")"
shipped1=$(plant_rows | wc -l)

# 2. The server will not take rows (INSERT revoked): they wait locally,
# with a warning; the station is SIGKILLed mid-batch; with the grant back
# (plant init restores it) a restarted station ships them all, no gap,
# no duplicate.
q "REVOKE INSERT ON audit_rows FROM keyline_station" >/dev/null
bg_start "$KL" batch --config "$T/station.conf" >"$T/b2.jsonl" 2>"$T/b2.err"
pb=$!
wait_for -p "$pb" 30 "a board to pass" grep -q '"event":"passed"' "$T/b2.jsonl"
wait_for -p "$pb" 30 "board 6 to pause before KEYGEN" test -e "$(board_dir 6)/.paused"
kill -KILL "$pb"
wait "$pb" 2>/dev/null || true
rm -f "$(board_dir 6)/.paused"
grep -q "audit shipping: .*permission denied.*rows wait in the local log" "$T/b2.err" ||
	fail "no warning that rows wait: $(grep -i shipping "$T/b2.err")"
[ "$(plant_rows | wc -l)" = "$shipped1" ] || fail "rows were shipped without INSERT"
[ "$(local_rows | wc -l)" -gt "$shipped1" ] || fail "no rows waited locally"
init
"$KL" batch --config "$T/station.conf" >"$T/b3.jsonl" 2>"$T/b3.err" || true
grep -q "audit shipping: station $SID, the plant store holds rows 1\.\.$shipped1," "$T/b3.err" ||
	fail "the restarted station did not start from the plant store's last row: $(grep shipping "$T/b3.err")"
same_rows "after the SIGKILL and the restart"
verify_ok "after the SIGKILL and the restart"
[ "$(q "SELECT count(*) = count(DISTINCT seq) FROM audit_rows")" = t ] || fail "duplicate seqs"

# 3. The server keeps each station's rows one chain, whoever inserts.
last=$(plant_rows | wc -l)
head=$(q "SELECT row_hash FROM audit_rows WHERE station = '$SID' AND seq = $last")
cols="station, seq, time, slot, prev_hash, row_hash"
refused_sql() {
	if station_sql "$1" >"$T/out" 2>"$T/err"; then
		fail "the station role was allowed: $1"
	fi
	grep -Eq -- "$2" "$T/err" || fail "$1: expected /$2/, got: $(cat "$T/err")"
}
refused_sql "INSERT INTO audit_rows ($cols) VALUES ('$SID', $((last + 2)),
    't', 0, '$head', repeat('a', 64))" "station $SID row $((last + 2)) does not chain: the plant store's last row of that station is $last"
refused_sql "INSERT INTO audit_rows ($cols) VALUES ('$SID', $((last + 1)),
    't', 0, repeat('b', 64), repeat('a', 64))" "row $((last + 1)) does not chain: its prev_hash b+ is not the row_hash of row $last"
refused_sql "INSERT INTO audit_rows ($cols) VALUES ('$SID', 3,
    't', 0, repeat('b', 64), repeat('a', 64))" "station $SID row 3 is already in the plant store with other contents"
refused_sql "INSERT INTO audit_rows ($cols) VALUES ('new-station', 1,
    't', 0, repeat('b', 64), repeat('a', 64))" "row 1 does not chain: its prev_hash"
# The very same row again is a resend: skipped, not an error.
station_sql "INSERT INTO audit_rows SELECT * FROM audit_rows WHERE station = '$SID' AND seq = 3" \
    >/dev/null 2>"$T/err" || fail "a resent row was refused: $(cat "$T/err")"
refused_sql "UPDATE audit_rows SET error = 'x'" "permission denied for table audit_rows"
refused_sql "DELETE FROM audit_rows" "permission denied for table audit_rows"
refused_sql "TRUNCATE audit_rows" "permission denied for table audit_rows"
if q "DELETE FROM audit_rows" >/dev/null 2>"$T/err"; then fail "the owner deleted audit rows"; fi
grep -q "audit_rows is append-only" "$T/err" || fail "owner's DELETE: $(cat "$T/err")"
same_rows "after the refused inserts"

# 4. A plant row edited by hand (the owner switches the trigger off) is
# caught by verify, which names the row.
q "ALTER TABLE audit_rows DISABLE TRIGGER audit_rows_append_only;
   UPDATE audit_rows SET device_id = 'forged' WHERE station = '$SID' AND seq = 5;
   ALTER TABLE audit_rows ENABLE TRIGGER audit_rows_append_only" >/dev/null
rc=0; "$KL" audit verify --plant "$PG_ADMIN" >"$T/v4.out" 2>"$T/v4.err" || rc=$?
[ "$rc" = 1 ] || fail "verify --plant after a forged row: exit $rc: $(cat "$T/v4.out" "$T/v4.err")"
grep -q "^plant audit chain broken: station $SID row 5: row hash does not match its contents$" "$T/v4.err" ||
	fail "verify did not name the forged row: $(cat "$T/v4.err")"

# 5. A plant store whose head of this station differs from the local
# log's row stops the station at start-up, before any board.
q "ALTER TABLE audit_rows DISABLE TRIGGER audit_rows_append_only;
   UPDATE audit_rows SET row_hash = repeat('c', 64) WHERE station = '$SID' AND seq = $last;
   ALTER TABLE audit_rows ENABLE TRIGGER audit_rows_append_only" >/dev/null
rc=0; "$KL" batch --config "$T/station.conf" >"$T/b4.jsonl" 2>"$T/b4.err" || rc=$?
[ "$rc" = 2 ] || fail "a station whose plant store disagrees started: exit $rc"
grep -q "audit shipping: row $last of station $SID differs between the local log" "$T/b4.err" ||
	fail "start-up refusal: $(tail -3 "$T/b4.err")"
rc=0; "$KL" audit verify --plant "$PG_ADMIN" --station "$SID" >/dev/null 2>"$T/v5.err" || rc=$?
[ "$rc" = 1 ] || fail "verify --station after a forged head: exit $rc"

echo "PASS plant-ship"
