#!/usr/bin/env bash
# RSA-2048 TLS key, the optional RSA Uptane key at CKA_ID 03, and root.crt
# and gateway.url taken from an OTA Connect style credentials.zip; a fleet
# profile with fixed subject entries ([ca] subject_extra); boards run the
# board agent itself (keyline-agent, no fault injection).
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2
mkdir -p "$T/zip/creds"
cp "$T/ca/gateway-root.pem" "$T/zip/creds/server_ca.pem"
echo "https://zip-gateway.ota.example.com:443" >"$T/zip/creds/autoprov.url"
echo "ignored" >"$T/zip/creds/treehub.json"
(cd "$T/zip" && zip -q -r "$T/credentials.zip" creds)
sed -i '/^root_crt = /d; /^gateway_url = /d' "$T/station.conf"
sed -i 's|^\[ota\]$|[ota]\ncredentials_zip = credentials.zip|' "$T/station.conf"
conf_set "$T/station.conf" keys type rsa2048
sed -i 's|^cert_id = 01$|cert_id = 01\nuptane_key = yes|' "$T/station.conf"
sed -i 's|^\[ca\]$|[ca]\nsubject_extra = O=Example Fleet, OU=devices\nmax_validity_days = 3650|' "$T/station.conf"

# The agent that goes on boards, not the test build the other tests run.
KEYLINE_AGENT=$KEYLINE_BIN/keyline-agent line_start "$T"
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl" ||
	{ grep failed "$T/out.jsonl"; fail "batch failed"; }
for i in 1 2; do
	b=$(board_dir $i)
	imp=$b/rootfs/var/sota/import
	[ "$(cat "$imp/gateway.url")" = "https://zip-gateway.ota.example.com:443" ] ||
		fail "board $i: gateway.url not from the zip"
	cmp -s "$imp/root.crt" "$T/ca/gateway-root.pem" || fail "board $i: root.crt"
	openssl x509 -in "$imp/client.pem" -noout -text >"$T/cert.txt"
	subj=$(openssl x509 -in "$imp/client.pem" -noout -subject -nameopt RFC2253)
	[[ "$subj" =~ ^subject=CN=[^,]+,OU=devices,O=Example\ Fleet$ ]] ||
		fail "board $i: subject '$subj' is not the fleet profile's"
	grep -q "Public Key Algorithm: rsaEncryption" "$T/cert.txt" &&
		grep -q "(2048 bit)" "$T/cert.txt" || fail "board $i: not an RSA-2048 certificate"
	objs=$(board_p11 "$b" --login --pin "$(board_pin "$b")" --list-objects --type privkey 2>/dev/null)
	[ "$(grep -c "^Private Key Object; RSA" <<<"$objs")" = 2 ] ||
		fail "board $i: expected two RSA private keys: $objs"
	grep -q "ID: *03" <<<"$objs" || fail "board $i: no Uptane key at 03"
	grep -q "ID: *02" <<<"$objs" || fail "board $i: no TLS key at 02"
	# The batch line names the certificate and key as the audit log
	# does (docs/batch.md): cert_fpr is the SHA-256 of client.pem's DER.
	serial=$(sed -n "${i}p" "$T/boards.list")
	ev=$(grep '"event":"passed"' "$T/out.jsonl" | grep "\"serial\":\"$serial\"")
	fpr=$(openssl x509 -in "$imp/client.pem" -outform DER | sha256sum | cut -d' ' -f1)
	[ "$(jq -r .cert_fpr <<<"$ev")" = "$fpr" ] ||
		fail "board $i: batch cert_fpr is not client.pem's: $ev"
	kfpr=$(jq -r .key_fpr <<<"$ev")
	[ ${#kfpr} = 64 ] || fail "board $i: no key_fpr in $ev"
	"$KL" audit export --db "$T/audit.db" --format json |
		jq -e --arg c "$fpr" --arg k "$kfpr" \
		'any(.[]; .cert_fpr == $c and .key_fpr == $k)' >/dev/null ||
		fail "board $i: no audit row with the batch line's cert_fpr and key_fpr"
done
echo "PASS rsa-uptane-zip"
