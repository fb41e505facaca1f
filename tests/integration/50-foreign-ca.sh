#!/usr/bin/env bash
# The CA signs with a key that is not the fleet root's: the certificate is
# audited as issued, refused by validation, and never reaches the board.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2
# A rogue CA: a PEM key on disk (development flag), not under the fleet root.
openssl req -new -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/ca/rogue.key" -subj "/CN=Rogue CA" -days 30 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign" -out "$T/ca/rogue.pem" 2>/dev/null
station_owns "$T/ca/rogue.key"
conf_set "$T/station.conf" ca issuer_cert ca/rogue.pem
sed -i 's/^key_id = 10$/dev_key_pem = ca\/rogue.key\ndev_allow_pem_key = yes/' "$T/station.conf"
line_start "$T"
set +e
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err.log"
rc=$?
set -e
[ $rc -eq 1 ] || fail "batch exited $rc, expected 1"
grep -qi "development" "$T/err.log" || fail "no warning about a PEM CA key"
[ "$(grep -c '"error":"cert_invalid"' "$T/out.jsonl")" = 2 ] ||
	fail "certificates from a foreign CA were not refused"
grep -q "fleet CA" "$T/out.jsonl" || fail "reason does not name the fleet CA"
for i in 1 2; do
	imp=$(board_dir $i)/rootfs/var/sota/import
	[ -z "$(ls -A "$imp")" ] || fail "board $i got files: $(ls -A "$imp")"
done
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='issued'")" = 2 ] ||
	fail "issued certificates not audited"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='validate' AND outcome='refused'")" = 2 ] ||
	fail "refusals not audited"
echo "PASS foreign-ca"
