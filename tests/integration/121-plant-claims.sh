#!/usr/bin/env bash
# Three stations share one plant registry on a real PostgreSQL 15 server
# (docs/plant.md): a device ID is provisioned once plant-wide, whichever
# station sees it first, also when two stations present the same IDs at
# the same moment; a refusal says where and when; --reprovision works
# plant-wide and is recorded centrally; a claim left by a station that
# was killed blocks the device until its lease runs out, then another
# station takes it over.
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

# A line of N boards with serials from FIRST, for station ID, sharing the
# registry as the station role (password from its mode-600 file).
plant_line() {
	local dir=$1 n=$2 first=$3 id=$4
	mkdir -p "$dir"
	line_setup "$dir" "$n" --first "$first" >/dev/null
	[ "$dir" = "$T" ] || on_exit_line "$dir"
	sed -i "s/^id = .*/id = $id/" "$dir/station.conf"
	cp "$T/station.pw" "$dir/registry.pw"
	chmod 600 "$dir/registry.pw"
	station_owns "$dir/registry.pw"
	printf '\n[registry]\nconninfo = host=%s port=%s dbname=keyline user=keyline_station\npassword_file = registry.pw\nlease_s = %s\n' \
	    "$PG_DIR" "$PG_PORT" "${5:-900}" >>"$dir/station.conf"
	if [ -n "${6:-}" ]; then
		sed -i "s/^fault = none\$/fault = $6/" "$dir"/boards/*/board.conf
		grep -q "^fault = $6\$" "$dir"/boards/*/board.conf ||
			fail "fault $6 not set"
	fi
	line_start "$dir"
}

# One value from the registry, as its administrator.
q() {
	pg_psql "$PG_ADMIN" "$1"
}

passed_ids() {
	jq -r 'select(.event == "passed") | .device_id' "$@" | sort
}

# 1. The same four device IDs on two stations at the same moment: each
# is provisioned exactly once, by one of them; the other refuses it with
# where and when.
plant_line "$T/a" 4 200 station-a
plant_line "$T/b" 4 200 station-b
bg_start "$KL" batch --config "$T/a/station.conf" >"$T/a.jsonl" 2>"$T/a.err"
pa=$!
"$KL" batch --config "$T/b/station.conf" >"$T/b.jsonl" 2>"$T/b.err" || true
wait "$pa" || true
grep -q "registry: connected (station station-a" "$T/a.err" ||
	fail "station a did not use the registry: $(tail -3 "$T/a.err")"
[ "$(passed_ids "$T/a.jsonl" "$T/b.jsonl" | wc -l)" = 4 ] ||
	fail "not 4 passes across both stations: $(passed_ids "$T/a.jsonl" "$T/b.jsonl" | tr '\n' ' ')"
[ "$(passed_ids "$T/a.jsonl" "$T/b.jsonl" | uniq -d)" = "" ] ||
	fail "a device ID passed on both stations"
refused=$(jq -r 'select(.event == "failed") | .message' "$T/a.jsonl" "$T/b.jsonl")
[ "$(grep -c "per the plant registry" <<<"$refused")" = 4 ] ||
	fail "the other station's 4 boards were not refused by the registry: $refused"
grep -q "by station station-[ab], slot [0-9], " <<<"$refused" ||
	fail "a refusal does not say where: $refused"
certs=$(q "SELECT count(*) FROM devices WHERE state = 'provisioned' AND device_id LIKE 'keyline-virtual-KL00020%'")
[ "$certs" = 4 ] || fail "registry holds $certs provisioned devices, want 4"

# 2. A third station whose IDs overlap: 202 and 203 were made elsewhere,
# 204 and 205 are new.
plant_line "$T/c" 4 202 station-c
"$KL" batch --config "$T/c/station.conf" >"$T/c.jsonl" 2>"$T/c.err" || true
[ "$(passed_ids "$T/c.jsonl" | tr '\n' ' ')" = \
    "keyline-virtual-KL000204 keyline-virtual-KL000205 " ] ||
	fail "station c passed $(passed_ids "$T/c.jsonl" | tr '\n' ' ')"
jq -r 'select(.event == "failed") | .message' "$T/c.jsonl" |
	grep -q "KL000202 provisioned by station station-[ab], slot [0-9], at 20[0-9-]*T[0-9:]*Z (certificate serial [0-9a-f]*), per the plant registry" ||
	fail "station c's refusal of 202 lacks where and when: $(cat "$T/c.jsonl")"

# 3. Re-provisioning on request works plant-wide and is recorded centrally:
# the station that lost device 200 takes it over.
winner=$(q "SELECT station FROM devices WHERE device_id = 'keyline-virtual-KL000200'")
loser=a
[ "$winner" = station-a ] && loser=b
"$KL" batch --config "$T/$loser/station.conf" --count 1 \
    --reprovision keyline-virtual-KL000200 >"$T/re.jsonl" 2>"$T/re.err" ||
	fail "re-provisioning on station $loser failed: $(grep failed "$T/re.jsonl")"
[ "$(q "SELECT station || ' ' || reprovisions FROM devices WHERE device_id = 'keyline-virtual-KL000200'")" = "station-$loser 1" ] ||
	fail "registry does not show the re-provisioning by station-$loser"
q "SELECT event FROM device_history WHERE device_id = 'keyline-virtual-KL000200' ORDER BY id" |
	tr '\n' ' ' | grep -q "^claim provisioned reprovision provisioned $" ||
	fail "history of 200: $(q "SELECT station, event FROM device_history WHERE device_id = 'keyline-virtual-KL000200' ORDER BY id" | tr '\n' ' ')"

# 4. A station killed after its claim (board paused before KEYGEN) leaves
# a claim with a 10 s lease: another station is refused while it lives,
# and takes the device over once it has run out.
# Station e's line is set up first: its keys and jig take seconds on a
# loaded machine, which must not come out of d's 10 s lease.
plant_line "$T/e" 1 300 station-e
plant_line "$T/d" 1 300 station-d 10 pause-before:KEYGEN
bg_start "$KL" batch --config "$T/d/station.conf" >"$T/d.jsonl" 2>"$T/d.err"
pd=$!
wait_for -p "$pd" 20 "station d's board to pause before KEYGEN" \
    test -e "$(ls -d "$T"/d/boards/*)/.paused"
kill -KILL "$pd"
wait "$pd" 2>/dev/null || true
[ "$(q "SELECT state || ' ' || station FROM devices WHERE device_id = 'keyline-virtual-KL000300'")" = "claimed station-d" ] ||
	fail "station d's claim is not in the registry"
"$KL" batch --config "$T/e/station.conf" >"$T/e1.jsonl" 2>"$T/e1.err" &&
	fail "station e provisioned a device station d still holds"
jq -r 'select(.event == "failed") | .message' "$T/e1.jsonl" |
	grep -q "being provisioned by station station-d, slot 1, since .* (board KL000300)" ||
	fail "station e's refusal does not name the live claim: $(cat "$T/e1.jsonl")"
lease_gone() {
	[ "$(q "SELECT lease_until < now() FROM devices WHERE device_id = 'keyline-virtual-KL000300'")" = t ]
}
wait_for 20 "station d's lease to run out" lease_gone
"$KL" batch --config "$T/e/station.conf" >"$T/e2.jsonl" 2>"$T/e2.err" ||
	fail "station e could not take over the expired claim: $(grep failed "$T/e2.jsonl")"
[ "$(q "SELECT state || ' ' || station FROM devices WHERE device_id = 'keyline-virtual-KL000300'")" = "provisioned station-e" ] ||
	fail "registry does not show station e's takeover"

# 5. What was made stays as made: no role, the owner included, rewrites a
# provisioned device's certificate record outside a claim becoming
# provisioned; the MES views show each device once with where it was made.
if q "UPDATE devices SET cert_serial = 'forged' WHERE device_id = 'keyline-virtual-KL000201'" 2>"$T/guard.err"; then
	fail "a provisioned device's certificate record was rewritten"
fi
grep -q "certificate record changes only when a claim becomes provisioned" "$T/guard.err" ||
	fail "the guard's refusal is unclear: $(cat "$T/guard.err")"
[ "$(q "SELECT count(*) FROM mes_devices")" = "$(q "SELECT count(*) FROM devices WHERE state = 'provisioned'")" ] ||
	fail "mes_devices does not list every provisioned device"
[ "$(q "SELECT station FROM mes_devices WHERE device_id = 'keyline-virtual-KL000300'")" = station-e ] ||
	fail "mes_devices does not say station e made 300"
[ "$(q "SELECT sum(provisioned) FROM mes_station_yield")" = "$(q "SELECT count(*) FROM device_history WHERE event = 'provisioned'")" ] ||
	fail "mes_station_yield does not add up"

echo "PASS plant-claims"
