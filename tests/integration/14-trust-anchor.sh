#!/usr/bin/env bash
# Trust anchors and intermediates as the station's own validation judges
# them, decided at start-up:
#  - a fleet root made by a plain `openssl req -x509` (no keyUsage) is
#    accepted, and boards under it pass (OpenSSL 3.0's strict mode alone
#    would refuse every one of them after the CA signed);
#  - an intermediate that does not chain to the fleet root, or that is not
#    a CA, stops the station with exit 2 and the reason, and no board is
#    touched.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2
cp "$T/station.conf" "$T/good.conf"
export SOFTHSM2_CONF=$T/station/softhsm2.conf
key_uri="pkcs11:token=keyline-station;id=%10;type=private"
pin_file=$(line_pin_file "$T")

# The fleet CA's token key, a new root certificate without keyUsage: what
# `openssl req -x509` makes with Debian's default openssl.cnf.
openssl req -new -x509 -engine pkcs11 -keyform engine -key "$key_uri" \
    -passin "file:$pin_file" -sha256 -days 30 \
    -subj "/O=Keyline Test/CN=Fleet Root Without keyUsage" \
    -out "$T/ca/root-noku.pem" </dev/null 2>/dev/null
! openssl x509 -in "$T/ca/root-noku.pem" -noout -ext keyUsage 2>/dev/null |
    grep -q "Usage" || fail "the test root has keyUsage"
openssl x509 -in "$T/ca/root-noku.pem" -noout -ext basicConstraints |
    grep -q "CA:TRUE" || fail "the test root is not a CA"

# 1. Accepted at start-up, and every board under it passes validation.
conf_set "$T/station.conf" ca issuer_cert ca/root-noku.pem
conf_set "$T/station.conf" ca fleet_root ca/root-noku.pem
line_start "$T"
set +e
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err"
rc=$?
set -e
[ $rc -eq 0 ] || fail "boards under a root without keyUsage: exit $rc: $(grep -o '"reason":"[^"]*"' "$T/out.jsonl" | head -n 2) $(tail -n 3 "$T/err")"
[ "$(summary "$T/out.jsonl" | jq .passed)" = 2 ] || fail "not 2 passed: $(summary "$T/out.jsonl")"
for i in 1 2; do
	openssl verify -CAfile "$T/ca/root-noku.pem" \
	    "$(board_dir $i)/rootfs/var/sota/import/client.pem" >/dev/null ||
		fail "board $i's certificate does not verify under the root"
done
line_stop "$T"
cp "$T/good.conf" "$T/station.conf"

# expect_refusal WORDS: exit 2 with WORDS, nothing on stdout.
expect_refusal() {
	local words=$1 rc
	set +e
	"$KL" batch --config "$T/station.conf" >"$T/out" 2>"$T/err"
	rc=$?
	set -e
	[ $rc -eq 2 ] || fail "exit $rc, want 2: $(tail -n 3 "$T/err")"
	grep "keyline batch:" "$T/err" | grep -qF -- "$words" ||
		fail "the reason lacks '$words': $(cat "$T/err")"
	[ ! -s "$T/out" ] || fail "the station produced events: $(cat "$T/out")"
	grep "keyline batch:" "$T/err"
	cp "$T/good.conf" "$T/station.conf"
}

line_start "$T"
rows=$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events")

# 2. An intermediate under another root (here the OTA gateway's root, a
#    CA of its own): it would go into every client.pem and not chain.
sed -i 's|^fleet_root = .*|&\nintermediates = ca/gateway-root.pem|' "$T/station.conf"
expect_refusal "intermediate 'Stand-in OTA Gateway Root' would fail every board's validation: self-signed certificate in certificate chain"

# 3. An intermediate the fleet root signed, but not as a CA.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/ca/notca.key" -subj "/CN=Not A CA" -out "$T/ca/notca.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyCertSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >"$T/ca/notca.ext"
openssl x509 -req -in "$T/ca/notca.csr" -engine pkcs11 -CAkeyform engine \
    -CA "$T/ca/fleet-root.pem" -CAkey "$key_uri" -passin "file:$pin_file" \
    -set_serial 77 -days 30 -extfile "$T/ca/notca.ext" \
    -out "$T/ca/notca.pem" 2>/dev/null
openssl verify -CAfile "$T/ca/fleet-root.pem" "$T/ca/notca.pem" >/dev/null ||
	fail "the test intermediate is not signed by the fleet root"
sed -i 's|^fleet_root = .*|&\nintermediates = ca/notca.pem|' "$T/station.conf"
expect_refusal "intermediate 'Not A CA' is not a CA certificate (basicConstraints CA:TRUE missing)"

# Nothing reached a board, nothing was audited.
line_stop "$T"
grep "stopped:" "$T/jig.log" | tail -n 1 | grep -q " 0 bytes relayed" ||
	fail "the jig relayed bytes: $(grep "stopped:" "$T/jig.log" | tail -n 1)"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events")" = "$rows" ] ||
	fail "a refused configuration wrote audit rows"
echo "PASS trust-anchor"
