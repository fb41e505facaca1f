#!/usr/bin/env bash
# 8 virtual boards provisioned end to end, then everything checked from
# the outside with independent tools: openssl verify, pkcs11-tool and raw
# PKCS#11 calls on each board's token, a mutual-TLS handshake with the
# board's HSM key (and handshakes that must be refused, each for its own
# reason), and the audit chain (which must break when a row is altered by
# hand).
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

# ---- the TLS key cannot leave the board's token
#
# pkcs11-tool cannot say whether a private key can be read out: its
# --read-object --type privkey prints "reading private keys not (yet)
# supported", writes nothing and exits 0, whatever the key.  So the key is
# checked with p11key, a few PKCS#11 calls built here: it asks the token
# for the secret itself (CKA_VALUE, or the RSA private exponent), which a
# token must refuse with CKR_ATTRIBUTE_SENSITIVE; any other outcome (the
# value, no such key, a wrong PIN) is a failure.  "plain" makes the
# control below: a key pair whose private half can be read.
cc -std=c11 -Wall -Werror -I/usr/include/p11-kit-1 -o "$T/p11key" -x c - -ldl <<'C' ||
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <p11-kit/pkcs11.h>

static int
bad(const char *what, CK_RV rv)
{
	fprintf(stderr, "p11key: %s: CKR 0x%lx\n", what, (unsigned long)rv);
	return 1;
}

static int
hex(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ?
	    c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int
main(int argc, char **argv)
{
	static CK_BYTE p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
		0x03, 0x01, 0x07 };
	CK_FUNCTION_LIST *f;
	CK_C_GetFunctionList gfl;
	CK_SLOT_ID slots[64];
	CK_ULONG ns = 64, n = 0, i, idlen = 0;
	CK_TOKEN_INFO ti;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE found[2], pub;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_BYTE id[32];
	CK_MECHANISM m = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_ATTRIBUTE q[] = { { CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_ID, id, 0 } };
	CK_ATTRIBUTE a = { CKA_KEY_TYPE, &kt, sizeof(kt) }, v;
	char label[33];
	void *h;
	CK_RV rv;

	if (argc != 6 || strlen(argv[4]) % 2 != 0 ||
	    strlen(argv[4]) > 2 * sizeof(id)) {
		fprintf(stderr, "usage: p11key MODULE LABEL PIN ID read|plain\n");
		return 2;
	}
	for (i = 0; argv[4][2 * i] != '\0'; i++) {
		if (hex(argv[4][2 * i]) < 0 || hex(argv[4][2 * i + 1]) < 0)
			return 2;
		id[idlen++] = (CK_BYTE)(hex(argv[4][2 * i]) << 4 |
		    hex(argv[4][2 * i + 1]));
	}
	q[1].ulValueLen = idlen;
	if ((h = dlopen(argv[1], RTLD_NOW)) == NULL ||
	    (gfl = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList")) ==
	    NULL || gfl(&f) != CKR_OK || f->C_Initialize(NULL) != CKR_OK) {
		fprintf(stderr, "p11key: cannot load %s\n", argv[1]);
		return 1;
	}
	if ((rv = f->C_GetSlotList(CK_TRUE, slots, &ns)) != CKR_OK)
		return bad("C_GetSlotList", rv);
	snprintf(label, sizeof(label), "%-32s", argv[2]);
	for (i = 0; i < ns; i++)
		if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    memcmp(ti.label, label, 32) == 0)
			break;
	if (i == ns) {
		fprintf(stderr, "p11key: no token '%s'\n", argv[2]);
		return 1;
	}
	if ((rv = f->C_OpenSession(slots[i], CKF_SERIAL_SESSION |
	    CKF_RW_SESSION, NULL, NULL, &s)) != CKR_OK)
		return bad("C_OpenSession", rv);
	if ((rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR *)argv[3],
	    strlen(argv[3]))) != CKR_OK)
		return bad("C_Login", rv);
	if (strcmp(argv[5], "plain") == 0) {
		CK_ATTRIBUTE pt[] = { { CKA_TOKEN, &yes, sizeof(yes) },
			{ CKA_EC_PARAMS, p256, sizeof(p256) },
			{ CKA_ID, id, idlen }, { CKA_VERIFY, &yes, sizeof(yes) } };
		CK_ATTRIBUTE st[] = { { CKA_TOKEN, &yes, sizeof(yes) },
			{ CKA_PRIVATE, &yes, sizeof(yes) }, { CKA_ID, id, idlen },
			{ CKA_SIGN, &yes, sizeof(yes) },
			{ CKA_SENSITIVE, &no, sizeof(no) },
			{ CKA_EXTRACTABLE, &yes, sizeof(yes) } };

		if ((rv = f->C_GenerateKeyPair(s, &m, pt, 4, st, 6, &pub,
		    &found[0])) != CKR_OK)
			return bad("C_GenerateKeyPair", rv);
		return 0;
	}
	if (strcmp(argv[5], "read") != 0)
		return 2;
	if ((rv = f->C_FindObjectsInit(s, q, 2)) != CKR_OK ||
	    (rv = f->C_FindObjects(s, found, 2, &n)) != CKR_OK)
		return bad("C_FindObjects", rv);
	(void)f->C_FindObjectsFinal(s);
	if (n != 1) {
		fprintf(stderr, "p11key: %lu private keys at ID %s\n",
		    (unsigned long)n, argv[4]);
		return 1;
	}
	if ((rv = f->C_GetAttributeValue(s, found[0], &a, 1)) != CKR_OK)
		return bad("CKA_KEY_TYPE", rv);
	v.type = kt == CKK_RSA ? CKA_PRIVATE_EXPONENT : CKA_VALUE;
	v.pValue = NULL;
	v.ulValueLen = 0;
	rv = f->C_GetAttributeValue(s, found[0], &v, 1);
	if (rv == CKR_ATTRIBUTE_SENSITIVE) {
		printf("refused: CKR_ATTRIBUTE_SENSITIVE\n");
		return 3;
	}
	if (rv != CKR_OK || v.ulValueLen == CK_UNAVAILABLE_INFORMATION ||
	    (v.pValue = malloc(v.ulValueLen)) == NULL ||
	    (rv = f->C_GetAttributeValue(s, found[0], &v, 1)) != CKR_OK)
		return bad("reading the private value", rv);
	printf("read %lu bytes of the private key\n",
	    (unsigned long)v.ulValueLen);
	return 0;
}
C
	fail "cannot build p11key"

# priv_access CONF LABEL PIN: the words pkcs11-tool lists as the Access of
# the private key object at ID 02 (CKA_SENSITIVE, CKA_ALWAYS_SENSITIVE,
# CKA_EXTRACTABLE, CKA_NEVER_EXTRACTABLE, CKA_LOCAL), one per line.
priv_access() {
	SOFTHSM2_CONF=$1 pkcs11-tool --module "$MODULE" --token-label "$2" \
	    --login --pin "$3" --list-objects --type privkey 2>/dev/null | awk '
	    /^[A-Za-z]/ { priv = /^Private Key Object/; id = "" }
	    priv && $1 == "ID:" { id = $2 }
	    priv && id == "02" && $1 == "Access:" {
		sub(/^ *Access: */, ""); n = split($0, w, /, */)
		for (i = 1; i <= n; i++) print w[i]
		exit
	    }'
}
# key_attrs_locked CONF LABEL PIN: sensitive ever since it was generated
# in the token, and never extractable; else says why.
key_attrs_locked() {
	local words w
	words=$(priv_access "$@")
	[ -n "$words" ] || { echo "pkcs11-tool lists no private key at ID 02"; return 1; }
	for w in sensitive "always sensitive" "never extractable" local; do
		grep -qx "$w" <<<"$words" ||
			{ echo "private key at 02 is not '$w' (access: $(echo $words))"; return 1; }
	done
	! grep -qx extractable <<<"$words" ||
		{ echo "private key at 02 is extractable (access: $(echo $words))"; return 1; }
}
# key_value_refused CONF LABEL PIN: the token refuses to hand out the
# private key's secret; else says what happened instead.
key_value_refused() {
	local out rc
	out=$(SOFTHSM2_CONF=$1 "$T/p11key" "$MODULE" "$2" "$3" 02 read 2>&1) && rc=0 || rc=$?
	[ "$rc" = 3 ] && [ "$out" = "refused: CKR_ATTRIBUTE_SENSITIVE" ] ||
		{ echo "reading the private key at 02: exit $rc: $out"; return 1; }
}
# Control: both checks trip on a token whose key at 02 can be read out.
mkdir -p "$T/ctl/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$T/ctl/tokens" >"$T/ctl/softhsm2.conf"
SOFTHSM2_CONF=$T/ctl/softhsm2.conf softhsm2-util --init-token --free --label ctl \
    --so-pin 87654321 --pin 12345678 >/dev/null || fail "control token"
SOFTHSM2_CONF=$T/ctl/softhsm2.conf "$T/p11key" "$MODULE" ctl 12345678 02 plain ||
	fail "control: cannot make a readable key"
why=$(key_attrs_locked "$T/ctl/softhsm2.conf" ctl 12345678) &&
	fail "control: the attribute check passes a readable key"
[[ $why == "private key at 02 is not 'sensitive'"* ]] ||
	fail "control: attribute check failed for another reason: $why"
why=$(key_value_refused "$T/ctl/softhsm2.conf" ctl 12345678) &&
	fail "control: the read check passes a readable key"
[[ $why == *"exit 0: read 32 bytes of the private key" ]] ||
	fail "control: read check failed for another reason: $why"

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
	label=$(sed -n 's/^token_label *= *//p' "$b/board.conf")
	[ "$(board_p11 "$b" --login --pin "$pin" --list-objects --type privkey 2>/dev/null |
	    grep -c '^Private Key Object')" = 1 ] ||
		fail "$serial: not exactly one private key in the token"
	why=$(key_attrs_locked "$b/softhsm2.conf" "$label" "$pin") || fail "$serial: $why"
	why=$(key_value_refused "$b/softhsm2.conf" "$label" "$pin") || fail "$serial: $why"
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

# ---- mutual TLS
#
# A server under the gateway CA that demands a client certificate from the
# fleet CA (openssl s_server -Verify, one connection); the client presents
# board 1's client.pem and signs with board 1's HSM key.  Then the
# handshakes that must not work, each checked for its own reason (so a
# server that is not listening, or a mistyped path, fails the test
# instead of passing a control).
b=$(board_dir 1)
imp=$b/rootfs/var/sota/import
id1="$(sed -n 's/^model *= *//p' "$b/board.conf")-$(basename "$b")"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/srv.key" -subj "/CN=localhost" -out "$T/srv.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$T/srv.ext"
openssl x509 -req -in "$T/srv.csr" -CA "$T/ca/gateway-root.pem" \
    -CAkey "$T/ca/gateway-root.key" -CAcreateserial -days 1 \
    -extfile "$T/srv.ext" -out "$T/srv.pem" 2>/dev/null
# Beside the CA PIN on tmpfs, so line_cleanup removes it even on failure.
pinf=$(dirname "$(line_pin_file "$T")")/board.pin

srv_listening() { grep -qx ACCEPT "$T/srv.log" || ! _alive "$srv"; }
srv_gone() { ! _alive "$srv"; }
# tls_server: start the server on a free port (sets srv and port).
tls_server() {
	for _ in 1 2 3 4 5; do
		port=$(free_port) || fail "no free port"
		openssl s_server -accept "127.0.0.1:$port" -cert "$T/srv.pem" \
		    -key "$T/srv.key" -CAfile "$T/ca/fleet-root.pem" -Verify 2 \
		    -verify_return_error -naccept 1 -www >"$T/srv.log" 2>&1 &
		srv=$!
		track_pid "$srv"
		wait_for 10 "openssl s_server to listen" srv_listening
		grep -qx ACCEPT "$T/srv.log" && return 0
		wait "$srv" || true	# the port was taken after all
	done
	fail "openssl s_server does not start: $(cat "$T/srv.log")"
}
# tls_client KEY-BOARD [CERT]: a handshake and a GET presenting CERT and
# signing with the HSM key of KEY-BOARD, or with no client certificate;
# the output in $T/cli.log, s_client's exit status returned.  The page
# the server sends back names the client certificate it accepted.
tls_client() {
	local kb=$1 cert=${2:-} auth=()
	if [ -n "$cert" ]; then
		board_pin "$kb" >"$pinf"
		auth=(-engine pkcs11 -keyform engine -pass "file:$pinf" -cert "$cert"
		    -key "pkcs11:token=$(sed -n 's/^token_label *= *//p' "$kb/board.conf");id=%02;type=private")
	fi
	# -quiet implies -ign_eof: the client reads until the server closes.
	printf 'GET / HTTP/1.0\r\n\r\n' | SOFTHSM2_CONF=$kb/softhsm2.conf \
	    timeout 30 openssl s_client -connect "127.0.0.1:$port" \
	    -servername localhost ${auth[@]+"${auth[@]}"} -CAfile "$imp/root.crt" \
	    -verify_return_error -verify_hostname localhost -quiet >"$T/cli.log" 2>&1
}
# tls_done: the server has finished its one connection (its log is whole).
tls_done() {
	wait_for 10 "openssl s_server to finish its connection" srv_gone
	wait "$srv" 2>/dev/null || true
}
# tls_refused WHAT CLIENT-ERE SERVER-ERE: the client was refused, saying
# CLIENT-ERE (checked first: a client that never reached the server says
# why at once), and the server took the connection, logged SERVER-ERE and
# finished no handshake.
tls_refused() {
	grep -Eq -- "$2" "$T/cli.log" ||
		fail "$1: the client was not refused with /$2/: $(grep -v '^depth\|^verify' "$T/cli.log")"
	tls_done
	grep -Eq -- "$3" "$T/srv.log" ||
		fail "$1: the server did not log /$3/: $(cat "$T/srv.log")"
	grep -q '^ *1 server accepts (SSL_accept())' "$T/srv.log" &&
	    grep -q '^ *0 server accepts that finished' "$T/srv.log" ||
		fail "$1: the server did not take and refuse one handshake: $(cat "$T/srv.log")"
}

tls_server
tls_client "$b" "$imp/client.pem" ||
	{ cat "$T/cli.log" "$T/srv.log" >&2; fail "mTLS handshake failed"; }
tls_done
grep -q "^HTTP/1.0 200 ok" "$T/cli.log" || fail "no answer over mTLS"
grep -q "Subject: CN=$id1\$" "$T/cli.log" ||
	fail "server did not see board 1's client certificate"
grep -A1 "^depth=0 CN = $id1\$" "$T/srv.log" | grep -qx "verify return:1" ||
	fail "the server did not verify board 1's certificate: $(cat "$T/srv.log")"

# No client certificate: the server demands one (TLS 1.3 alert 116).
tls_server
tls_client "$b" && fail "a handshake without a client certificate succeeded"
tls_refused "no client certificate" "alert certificate required" \
    "tls_process_client_certificate:peer did not return a certificate"

# Board 1's key in a certificate from another CA (the gateway's, which
# the client trusts): the server takes client certificates from the fleet
# root only (alert 48, unknown CA), so the handshake above passed for the
# chain, not for any certificate.
openssl x509 -in "$imp/client.pem" -noout -pubkey >"$T/b1pub.pem"
printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$T/foreign.ext"
openssl x509 -new -subj "/CN=$id1" -force_pubkey "$T/b1pub.pem" \
    -CA "$T/ca/gateway-root.pem" -CAkey "$T/ca/gateway-root.key" -days 1 \
    -extfile "$T/foreign.ext" -out "$T/foreign.pem" 2>/dev/null ||
	fail "cannot make the foreign certificate"
tls_server
tls_client "$b" "$T/foreign.pem" && fail "mTLS succeeded with a certificate from another CA"
tls_refused "certificate from another CA" "alert unknown ca" \
    "tls_process_client_certificate:certificate verify failed"

# Board 1's certificate with board 2's HSM key: OpenSSL will not pair
# them (the token's key is not the certificate's), so the client never
# connects and the server never sees a handshake.
tls_server
tls_client "$(board_dir 2)" "$imp/client.pem" &&
	fail "mTLS succeeded with a key that is not the certificate's"
grep -q "X509_check_private_key:key values mismatch" "$T/cli.log" ||
	fail "another board's key: client says $(cat "$T/cli.log")"
_alive "$srv" && ! grep -q "server accepts" "$T/srv.log" ||
	fail "another board's key: the server saw a connection: $(cat "$T/srv.log")"
stop_pids "$srv"
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
