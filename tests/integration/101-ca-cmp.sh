#!/usr/bin/env bash
# The station enrolls through CMP (p10cr, MAC protection) against
# `openssl cmp` as a mock CA.  The mock answers every request with one
# fixed certificate: under the fleet root, but for another key and CN.
# Every board must be refused at the certConf, audited with the
# certificate's serial, and left without files.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2
pin=$(line_pin_file "$T")
# The fixed answer: a certificate the fleet CA (in the station token)
# signs for a key that no board holds.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/other.key" -subj "/CN=someone-else" -out "$T/other.csr" 2>/dev/null
printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=critical,clientAuth\n' >"$T/ext"
SOFTHSM2_CONF=$T/station/softhsm2.conf openssl x509 -req -in "$T/other.csr" \
    -engine pkcs11 -CAkeyform engine -CA "$T/ca/fleet-root.pem" \
    -CAkey "pkcs11:token=keyline-station;id=%10;type=private" \
    -passin "file:$pin" -days 30 -set_serial 0x4b4c0001 -extfile "$T/ext" \
    -out "$T/other.pem" </dev/null 2>/dev/null || fail "could not make the fixed answer"

secret=$(openssl rand -hex 16)
printf '%s' "$secret" >/dev/shm/keyline-cmp-$$.secret
trap 'rm -f /dev/shm/keyline-cmp-$$.secret; line_cleanup "$T"; rm -rf "$T"' EXIT
for try in 1 2 3 4 5; do
	port=$((20000 + RANDOM % 30000))
	openssl cmp -port "$port" -srv_ref keyline -srv_secret "pass:$secret" \
	    -rsp_cert "$T/other.pem" >"$T/cmp.log" 2>&1 &
	srv=$!
	sleep 0.5
	kill -0 "$srv" 2>/dev/null && break
done

# The station: backend cmp instead of the local CA key.
sed -i '/^issuer_cert = /d; /^key_id = /d; /^pin_file = /d; /^module = /d; /^module_env = /d; /^token_label = /d' "$T/station.conf"
sed -i "s|^backend = local|backend = cmp\nurl = http://127.0.0.1:$port/pkix/\ncmp_ref = keyline\ncmp_secret_file = /dev/shm/keyline-cmp-$$.secret\nrequest_timeout_ms = 3000|" "$T/station.conf"
line_start "$T"
set +e
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err"
rc=$?
set -e
kill "$srv" 2>/dev/null || true
[ $rc -eq 1 ] || { cat "$T/err"; fail "batch exited $rc, expected 1"; }
[ "$(grep '"event":"failed"' "$T/out.jsonl" | grep -c '"error":"cert_invalid"')" = 2 ] ||
	{ cat "$T/out.jsonl" "$T/err"; fail "the foreign certificate was not refused for both boards"; }
for i in 1 2; do
	[ -z "$(ls -A "$(board_dir $i)/rootfs/var/sota/import")" ] ||
		fail "board $i got files"
done
[ "$(sqlite3 "$T/audit.db" "SELECT count(DISTINCT board_serial) FROM events WHERE step='ca' AND outcome='failed' AND error LIKE '%4b4c0001%'")" = 2 ] ||
	{ sqlite3 "$T/audit.db" "SELECT step, outcome, error FROM events"; fail "refusals not audited with the serial"; }
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='issued'")" = 0 ] ||
	fail "a refused certificate was recorded as issued"
if grep -qF "$secret" "$T/out.jsonl" "$T/err" "$T/audit.db"; then
	fail "the CMP secret leaked"
fi
echo "PASS ca-cmp"
