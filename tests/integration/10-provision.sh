#!/usr/bin/env bash
# 8 virtual boards provisioned end to end, then everything checked from
# the outside with independent tools: openssl verify, pkcs11-tool on each
# board's token, a mutual-TLS handshake with the board's HSM key, and the
# audit chain (which must break when a row is altered by hand).
. "$(dirname "$0")/lib.sh"

line_setup "$T" 8
line_start "$T"
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl" ||
	fail "batch exited $? (expected 0)"
s=$(summary "$T/out.jsonl")
[ "$(jq .passed <<<"$s")" = 8 ] || fail "summary: $s"
[ "$(jq .failed <<<"$s")" = 0 ] || fail "summary: $s"
[ "$(grep -c '"event":"passed"' "$T/out.jsonl")" = 8 ] ||
	fail "expected 8 passed events"

for i in $(seq 1 8); do
	b=$(board_dir "$i")
	serial=$(basename "$b")
	imp=$b/rootfs/var/sota/import
	id="$(sed -n 's/^model *= *//p' "$b/board.conf")-$serial"
	# Exactly the three files, nothing staged left behind.
	[ "$(ls -A "$imp" | sort | tr '\n' ' ')" = "client.pem gateway.url root.crt " ] ||
		fail "$serial: import dir holds: $(ls -A "$imp")"
	openssl verify -CAfile "$T/ca/fleet-root.pem" "$imp/client.pem" >/dev/null ||
		fail "$serial: client.pem does not chain to the fleet root"
	cmp -s "$imp/root.crt" "$T/ca/gateway-root.pem" || fail "$serial: root.crt"
	[ "$(cat "$imp/gateway.url")" = "https://gateway.ota.example.com:8443" ] ||
		fail "$serial: gateway.url"
	subj=$(openssl x509 -in "$imp/client.pem" -noout -subject -nameopt RFC2253)
	[ "$subj" = "subject=CN=$id" ] || fail "$serial: subject $subj, want CN=$id"
	ext=$(openssl x509 -in "$imp/client.pem" -noout -ext keyUsage,extendedKeyUsage)
	grep -q "Digital Signature" <<<"$ext" || fail "$serial: keyUsage"
	grep -q "TLS Web Client Authentication" <<<"$ext" || fail "$serial: EKU"
	bits=$(openssl x509 -in "$imp/client.pem" -noout -serial | cut -d= -f2)
	[ ${#bits} -ge 16 ] || fail "$serial: serial $bits has fewer than 64 bits"

	pin=$(board_pin "$b")
	objs=$(board_p11 "$b" --login --pin "$pin" --list-objects 2>/dev/null)
	priv=$(awk '/^Private Key Object/ {p=1} p && /^ *ID:/ {print; exit}' <<<"$objs")
	[ "$(tr -d ' ' <<<"$priv")" = "ID:02" ] || fail "$serial: no private key at ID 02"
	access=$(awk '/^Private Key Object/ {p=1} p && /Access:/ {print; exit}' <<<"$objs")
	grep -q "sensitive" <<<"$access" && grep -q "never extractable" <<<"$access" ||
		fail "$serial: private key access is '$access'"
	if board_p11 "$b" --login --pin "$pin" --read-object --type privkey \
	    --id 02 -o "$T/priv.der" >/dev/null 2>&1 && [ -s "$T/priv.der" ]; then
		fail "$serial: the private key could be read out of the token"
	fi
	board_p11 "$b" --login --pin "$pin" --read-object --type pubkey --id 02 \
	    -o "$T/pub.der" >/dev/null 2>&1 || fail "$serial: no public key at 02"
	openssl pkey -pubin -inform DER -in "$T/pub.der" -outform DER -out "$T/pub.tok" 2>/dev/null ||
		fail "$serial: token public key does not parse"
	openssl x509 -in "$imp/client.pem" -noout -pubkey |
		openssl pkey -pubin -outform DER -out "$T/pub.crt"
	cmp -s "$T/pub.tok" "$T/pub.crt" ||
		fail "$serial: the token's public key is not the certificate's"
	board_p11 "$b" --read-object --type cert --id 01 -o "$T/cert.der" \
	    >/dev/null 2>&1 || fail "$serial: no certificate object at ID 01"
	openssl x509 -in "$imp/client.pem" -outform DER -out "$T/cert.crt"
	cmp -s "$T/cert.der" "$T/cert.crt" ||
		fail "$serial: certificate object differs from client.pem"
done

# Mutual TLS: a server under the gateway CA that demands a client
# certificate from the fleet CA; the client signs with board 1's HSM key.
b=$(board_dir 1)
imp=$b/rootfs/var/sota/import
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/srv.key" -subj "/CN=localhost" -out "$T/srv.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$T/srv.ext"
openssl x509 -req -in "$T/srv.csr" -CA "$T/ca/gateway-root.pem" \
    -CAkey "$T/ca/gateway-root.key" -CAcreateserial -days 1 \
    -extfile "$T/srv.ext" -out "$T/srv.pem" 2>/dev/null
# Beside the CA PIN on tmpfs, so line_cleanup removes it even on failure.
pinf=$(dirname "$(line_pin_file "$T")")/board.pin
board_pin "$b" >"$pinf"
# mtls KEY_BOARD: handshake presenting board 1's client.pem, signing with
# the HSM key of board KEY_BOARD; the page the server sends back names the
# client certificate it accepted.
mtls() {
	local kb=$1 port srv rc try
	# A random port may be taken: try another until the server stays up.
	for try in 1 2 3 4 5; do
		port=$((20000 + RANDOM % 30000))
		openssl s_server -accept "127.0.0.1:$port" -cert "$T/srv.pem" \
		    -key "$T/srv.key" -CAfile "$T/ca/fleet-root.pem" -Verify 2 \
		    -verify_return_error -naccept 1 -www >"$T/srv.log" 2>&1 &
		srv=$!
		sleep 0.5
		kill -0 "$srv" 2>/dev/null && break
	done
	set +e
	(printf 'GET / HTTP/1.0\r\n\r\n'; sleep 1) |
	    SOFTHSM2_CONF=$kb/softhsm2.conf openssl s_client \
	    -connect "127.0.0.1:$port" -servername localhost \
	    -engine pkcs11 -keyform engine \
	    -key "pkcs11:token=board-$(basename "$kb");id=%02;type=private" \
	    -pass "file:$pinf" -cert "$imp/client.pem" \
	    -CAfile "$imp/root.crt" -verify_return_error \
	    -verify_hostname localhost -quiet >"$T/cli.log" 2>&1
	rc=$?
	set -e
	kill "$srv" 2>/dev/null || true
	wait "$srv" 2>/dev/null || true
	return $rc
}
mtls "$b" || { cat "$T/cli.log" "$T/srv.log"; fail "mTLS handshake failed"; }
grep -q "^HTTP/1.0 200 ok" "$T/cli.log" || fail "no answer over mTLS"
id1="$(sed -n 's/^model *= *//p' "$b/board.conf")-$(basename "$b")"
grep -q "Subject: CN=$id1\$" "$T/cli.log" ||
	fail "server did not see board 1's client certificate"
# Control: the same certificate with another board's HSM key must fail.
b2=$(board_dir 2)
board_pin "$b2" >"$pinf"
if mtls "$b2" && grep -q "^HTTP/1.0 200 ok" "$T/cli.log"; then
	fail "mTLS succeeded with a key that is not the certificate's"
fi
rm -f "$pinf"

# The audit chain holds, and breaks when a row is altered by hand.
"$KL" audit verify --db "$T/audit.db" >"$T/verify.out" || fail "audit verify failed"
rows=$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events")
# identify, dupcheck, keygen, csr, ca requested, issued, validate, commit
# requested, write, verify, pop, done
[ "$rows" -eq 96 ] || fail "$rows audit rows for 8 boards, expected 12 each"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events e WHERE step='commit' AND outcome='requested' AND id < (SELECT min(id) FROM events w WHERE w.step='write' AND w.outcome='ok' AND w.device_id=e.device_id)")" = 8 ] ||
	fail "the commit intent is not recorded before each write ok"
for step in identify dupcheck keygen csr issued validate commit write verify pop done; do
	[ "$(sqlite3 "$T/audit.db" "SELECT count(DISTINCT device_id) FROM events WHERE step='$step'")" = 8 ] ||
		fail "audit step $step is not recorded for every board"
done
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='done' AND outcome='passed'")" = 8 ] ||
	fail "expected 8 passed rows"
# The request to the CA is on record before the certificate, with the key
# the certificate carries: a certificate lost on its way back can be found.
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events r JOIN events i
    ON i.device_id = r.device_id AND i.step = 'issued'
    WHERE r.step = 'ca' AND r.outcome = 'requested' AND r.id < i.id
    AND r.key_fpr = i.key_fpr AND length(r.key_fpr) = 64")" = 8 ] ||
	fail "not every board has its CA request recorded before its issuance"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='issued' AND cert_serial IS NOT NULL")" = 8 ] ||
	fail "expected 8 issued rows with serials"
"$KL" audit export --db "$T/audit.db" --format csv >"$T/a.csv"
[ "$(wc -l <"$T/a.csv")" -eq $((rows + 1)) ] || fail "CSV export row count"
"$KL" audit export --db "$T/audit.db" --format json >"$T/a.json"
[ "$(jq length "$T/a.json")" -eq "$rows" ] || fail "JSON export row count"
# (The board PIN is a short number that may occur by chance; the CA
# token PIN is checked.)
if grep -qF "$(cat "$(line_pin_file "$T")")" "$T/a.csv" "$T/out.jsonl" "$T/audit.db"; then
	fail "the CA token PIN appears in the audit log or the output"
fi
# Truncation: cutting the newest rows leaves a consistent chain, which an
# earlier head kept outside the log (an anchor) exposes.  The batch
# summary hands the head out; verify prints the same one.
head=$(sed -n 's/.*head \([0-9a-f]\{64\}\)$/\1/p' "$T/verify.out")
[ ${#head} -eq 64 ] || fail "verify printed no head: $(cat "$T/verify.out")"
[ "$(summary "$T/out.jsonl" | jq -r '"\(.audit_rows) \(.audit_head)"')" = "$rows $head" ] ||
	fail "batch summary audit head: $(summary "$T/out.jsonl")"
"$KL" audit verify --db "$T/audit.db" --anchor "$head" | grep -q "anchor found at row $rows" ||
	fail "the current head is not found as an anchor"
cp "$T/audit.db" "$T/cut.db"
for trg in $(sqlite3 "$T/cut.db" "SELECT name FROM sqlite_master WHERE type='trigger'"); do
	sqlite3 "$T/cut.db" "DROP TRIGGER $trg"
done
sqlite3 "$T/cut.db" "DELETE FROM events WHERE id > $((rows - 3))"
"$KL" audit verify --db "$T/cut.db" >/dev/null || fail "a cut log should still chain"
if "$KL" audit verify --db "$T/cut.db" --anchor "$head" 2>"$T/anchor.err"; then
	fail "verify --anchor passed on a log whose newest rows were cut"
fi
grep -q "anchor not found" "$T/anchor.err" || fail "no reason: $(cat "$T/anchor.err")"

sqlite3 "$T/audit.db" "DROP TRIGGER IF EXISTS events_no_update;
    DROP TRIGGER IF EXISTS audit_no_update;
    SELECT name FROM sqlite_master WHERE type='trigger'" >"$T/triggers"
for trg in $(cat "$T/triggers"); do
	sqlite3 "$T/audit.db" "DROP TRIGGER $trg"
done
sqlite3 "$T/audit.db" "UPDATE events SET device_id='forged' WHERE id=5"
if "$KL" audit verify --db "$T/audit.db" >"$T/verify2.out" 2>&1; then
	fail "audit verify passed after row 5 was altered"
fi
# Row 5 itself is named as where the chain breaks: not row 6 (whose
# prev_hash mentions row 5), nor 50-59.
grep -q "^audit chain broken at row 5: " "$T/verify2.out" ||
	fail "verify did not name row 5 as the broken one: $(cat "$T/verify2.out")"
echo "PASS provision"
