#!/usr/bin/env bash
# A remote CFSSL fleet CA goes away in the middle of a batch and comes
# back: every board waits ("waiting for CA", audited), then completes;
# no board gets two certificates; the audit chain still verifies.
. "$(dirname "$0")/lib.sh"

N=8
# Slow key generation: the boards reach the CA step after the server is
# gone.
line_setup "$T" $N --keygen-ms 1500

# The fleet CA lives in a CFSSL server the test makes and runs.
mkdir -p "$T/cfssl"
(cd "$T/cfssl" &&
	echo '{"CN":"CFSSL Fleet Root","key":{"algo":"ecdsa","size":256}}' >csr.json &&
	cfssl gencert -initca csr.json 2>/dev/null | cfssljson -bare ca) ||
	fail "cfssl gencert -initca"
key=$(openssl rand -hex 32)
umask 077
echo "$key" >"$T/cfssl/auth.key"
umask 022
station_owns "$T/cfssl/auth.key"
cat >"$T/cfssl/config.json" <<CONF
{"signing":{"default":{"auth_key":"k1","expiry":"8760h",
  "usages":["digital signature","client auth"]}},
 "auth_keys":{"k1":{"type":"standard","key":"$key"}}}
CONF
port=$((20000 + $$ % 20000))
while (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do
	port=$((port + 1))
done

cfssl_pid=
cfssl_start() {
	cfssl serve -address 127.0.0.1 -port $port -ca "$T/cfssl/ca.pem" \
	    -ca-key "$T/cfssl/ca-key.pem" -config "$T/cfssl/config.json" \
	    >>"$T/cfssl/serve.log" 2>&1 &
	cfssl_pid=$!
	for _ in $(seq 100); do
		(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0
		sleep 0.1
	done
	fail "cfssl serve did not come up (see $T/cfssl/serve.log)"
}
cfssl_stop() {
	kill "$cfssl_pid" 2>/dev/null || true
	wait "$cfssl_pid" 2>/dev/null || true
	cfssl_pid=
}
trap 'cfssl_stop; line_cleanup "$T"; rm -rf "$T"' EXIT

c=$T/station.conf
conf_set "$c" ca backend cfssl
conf_set "$c" ca fleet_root cfssl/ca.pem
sed -i '/^key_id = /d' "$c"
sed -i "/^\[ca\]\$/a url = http://127.0.0.1:$port\nauth_key_file = cfssl/auth.key\nrequest_timeout_ms = 1000\nretry_base_ms = 200\nretry_max_ms = 800\nwait_deadline_s = 60" "$c"

cfssl_start
line_start "$T"
"$KL" batch --config "$c" >"$T/out.jsonl" 2>"$T/err.log" &
batch=$!
sleep 0.3
cfssl_stop
# The CA stays down until every board has met the outage (its wait is in
# the audit log), however slow the machine, and at least 4 s.
sleep 4
for ((i = 0; i < 600; i++)); do
	[ "$(sqlite3 "$T/audit.db" "SELECT count(DISTINCT device_id) FROM events WHERE step='ca' AND outcome='waiting'" 2>/dev/null || echo 0)" -ge $N ] && break
	kill -0 $batch 2>/dev/null || break
	sleep 0.1
done
kill -0 $batch 2>/dev/null || fail "the batch ended while the CA was down"
cfssl_start
set +e
wait $batch
rc=$?
set -e
[ $rc -eq 0 ] || { cat "$T/err.log" >&2; tail -n 5 "$T/out.jsonl" >&2; fail "batch exited $rc"; }
summary "$T/out.jsonl" | grep -q "\"passed\":$N" || fail "not every board passed: $(summary "$T/out.jsonl")"

db=$T/audit.db
q() { sqlite3 "$db" "$1"; }
[ "$(q "SELECT count(DISTINCT device_id) FROM events WHERE step='done' AND outcome='passed'")" = $N ] ||
	fail "not $N boards done: $(q "SELECT step,outcome,count(*) FROM events GROUP BY 1,2" | tr '\n' ' ')"
[ "$(q "SELECT count(*) FROM events WHERE step='issued'")" = $N ] ||
	fail "issued rows: $(q "SELECT count(*) FROM events WHERE step='issued'"), expected $N"
[ "$(q "SELECT count(*) FROM (SELECT device_id FROM events WHERE step='issued' GROUP BY device_id HAVING count(*) > 1)")" = 0 ] ||
	fail "a board got two certificates"
[ "$(q "SELECT count(DISTINCT cert_serial) FROM events WHERE step='issued'")" = $N ] ||
	fail "certificate serials are not unique"
waits=$(q "SELECT count(*) FROM events WHERE step='ca' AND outcome='waiting'")
# Key generation takes 1.5 s and the server is stopped at 0.3 s: every
# board meets the outage, and each wait is audited.
[ "$(q "SELECT count(DISTINCT device_id) FROM events WHERE step='ca' AND outcome='waiting'")" = $N ] ||
	fail "not every board's wait for the CA is in the audit log ($waits waiting rows)"
q "SELECT DISTINCT ca FROM events WHERE step='issued'" | grep -q "^cfssl:127.0.0.1:$port" ||
	fail "issued rows do not name the CFSSL CA"
grep -q "waiting for the CA" "$T/out.jsonl" || fail "batch output does not show the wait"
grep -q "CA answered after" "$T/out.jsonl" || fail "batch output does not show the resumption"
# Each board's CSR is on record before it went out, once per board; a
# board that waited says its unanswered requests may have left
# certificates at the CA, in the row of the one it got.
[ "$(q "SELECT count(DISTINCT device_id) FROM events WHERE step='ca' AND outcome='requested'")" = $N ] ||
	fail "CA requests are not recorded for every board"
[ "$(q "SELECT count(*) FROM events i JOIN events w ON w.device_id = i.device_id
    AND w.step = 'ca' AND w.outcome = 'waiting'
    WHERE i.step = 'issued' AND i.error LIKE '%earlier requests got no certificate back%'")" = "$waits" ] ||
	fail "an issued row after a wait does not mention the unanswered requests"
# Certificates on the boards chain to the CFSSL fleet root.
for i in $(seq $N); do
	imp=$(board_dir $i)/rootfs/var/sota/import
	openssl verify -CAfile "$T/cfssl/ca.pem" "$imp/client.pem" >/dev/null ||
		fail "board $i: client.pem does not verify against the CFSSL root"
done
# No secret in any log or in the audit log.
! grep -rq "$key" "$T/err.log" "$T/out.jsonl" || fail "the HMAC key leaked into the output"
! sqlite3 "$db" .dump | grep -q "$key" || fail "the HMAC key is in the audit log"
"$KL" audit verify --db "$db" >/dev/null || fail "audit verify"
echo "PASS ca-cfssl-outage ($waits waits)"
