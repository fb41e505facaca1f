#!/usr/bin/env bash
# A broken station.conf stops the station before it touches a board, with
# an error that names the file, the line and the key.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 1
cp "$T/station.conf" "$T/good.conf"

expect_error() {
	local want=$1 rc
	set +e
	"$KL" batch --config "$T/station.conf" >"$T/out" 2>"$T/err"
	rc=$?
	set -e
	[ $rc -eq 2 ] || fail "exit $rc for a bad config, want 2 ($(cat "$T/err"))"
	grep -qF -- "$want" "$T/err" || fail "error '$(cat "$T/err")' lacks '$want'"
	[ ! -s "$T/out" ] || fail "station produced output: $(cat "$T/out")"
	cp "$T/good.conf" "$T/station.conf"
}

line=$(grep -n '^baud = ' "$T/station.conf" | cut -d: -f1)
sed -i 's/^baud = .*/baud = fast/' "$T/station.conf"
expect_error "station.conf:$line: [link] baud"

sed -i 's|^gateway_url = .*|gateway_url = http://plain.example.com|' "$T/station.conf"
expect_error "[ota] gateway_url"

line=$(grep -n '^\[keys\]' "$T/station.conf" | cut -d: -f1)
sed -i "${line}a this line is not key = value" "$T/station.conf"
sed -i "$((line + 1))s/.*/this line has no equals sign/" "$T/station.conf"
expect_error "station.conf:$((line + 1)):"

sed -i '/^fleet_root = /d' "$T/station.conf"
expect_error "[ca] fleet_root"

sed -i 's/^type = ec-p256/type = ec-p999/' "$T/station.conf"
expect_error "[keys] type"

sed -i 's/^device_id_template = .*/device_id_template = {model}-{nope}/' "$T/station.conf"
expect_error "[station] device_id_template"

# A device profile that cannot be: CN is the device ID's, and the local
# CA must not issue longer than validation accepts.
sed -i 's|^\[ca\]$|[ca]\nsubject_extra = CN=admin|' "$T/station.conf"
expect_error "[ca] subject_extra: 'CN' is not an attribute type"
sed -i 's|^\[ca\]$|[ca]\nvalidity_days = 400\nmax_validity_days = 365|' "$T/station.conf"
sed -i '0,/^validity_days = 3650$/{/^validity_days = 3650$/d}' "$T/station.conf"
expect_error "[ca] validity_days: 400 is more than max_validity_days (365)"

# An intermediates bundle that also holds a private key: nothing of it
# may go to boards, so the station does not start.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$T/ca/bundle.pem" 2>/dev/null
cat "$T/ca/fleet-root.pem" >>"$T/ca/bundle.pem"
station_owns "$T/ca/bundle.pem"	# genpkey made it 600: the station reads it
sed -i 's|^fleet_root = .*|&\nintermediates = ca/bundle.pem|' "$T/station.conf"
expect_error "only certificates may go to boards"

# Virtual-jig power needs the jig's control socket, and only it.
sed -i '/^control = /d' "$T/station.conf"
expect_error "[jig] control: required with power = virtual-jig"
sed -i 's/^power = virtual-jig/power = none/' "$T/station.conf"
expect_error "[jig] control: only with power = virtual-jig"

# More boards asked for than the jig has slots.
set +e
"$KL" batch --config "$T/station.conf" --count 2 >"$T/out" 2>"$T/err"
rc=$?
set -e
[ $rc -eq 2 ] || fail "--count over the slots exited $rc"
grep -q "has 1 slot" "$T/err" || fail "no reason for --count: $(cat "$T/err")"

# The PIN file is gone: a clear error, and the PIN path's contents never
# printed.
mv "$(line_pin_file "$T")" "$T/pin.saved"
expect_error "pin_file"
mv "$T/pin.saved" "$(line_pin_file "$T")"

[ ! -e "$T/audit.db" ] || [ "$(sqlite3 "$T/audit.db" 'SELECT count(*) FROM events')" = 0 ] ||
	fail "a bad config wrote audit rows"
echo "PASS bad-config"
