#!/usr/bin/env bash
# docs/openapi.yaml against the status API as it answers: the file passes
# swagger-parser's validation and names exactly the routes of ui/http.c;
# then every endpoint of a running station (a plant registry with one
# conflict in it, a board that passes, one that fails, a step caught
# while it runs) and of a second station without registry or slots is
# fetched, errors included (401, 404, 400, 405, 413, 414, 429) and a 304
# on If-None-Match, and each
# answer's status, content type and body are checked against the spec
# with ajv (tests/tools/openapi/check.mjs; schemas closed with
# additionalProperties: false, every key required).  Negative controls:
# doctored answers (an extra field, a wrong type, a null where none may
# be, a missing key, a status the spec does not list) must be refused.
. "$(dirname "$0")/lib.sh"
. "$top/scripts/pg.sh"

SPEC=$top/docs/openapi.yaml
OA=$top/tests/tools/openapi
[ -d "$OA/node_modules/@apidevtools/swagger-parser" ] && [ -d "$OA/node_modules/ajv" ] ||
	fail "$OA/node_modules is missing: run scripts/setup (npm ci there)"
check() { node "$OA/check.mjs" "$@"; }
# phase WHAT: the test's own timing, in its log.
phase() { echo "[$SECONDS s] $1"; }

# ---- the file itself
# (node takes a second or two: it runs while the registry and the line
# are set up, and is waited for below)
check lint "$SPEC" >"$T/lint.out" 2>&1 &
lint_pid=$!
# ---- a station with a plant registry, three boards (the first waits
# before KEYGEN until told, so that a step is seen running; the third
# fails its proof of possession); the line is made while the registry
# server starts.
# The line has a directory of its own ($L): the registry server must
# traverse $T, which the line's set-up need not leave open.
N=3
L=$T/line
on_exit_line "$L"
line_setup "$L" "$N" --fault-slot 3 --fault bad-signature >"$T/setup.log" 2>&1 &
setup_pid=$!

phase "registry server"
# Over TCP with TLS, as a line PC reaches the plant: the socket directory
# is the server user's alone.  plant init is the plant's admin (root
# here), not the station.
pg_start_tls "$T/pg"
cp "$PG_TLS_ROOT" "$L/registry-root.pem"
umask 077
echo "station-secret-$$" >"$T/station.pw"
umask 022
"${KL_BIN:-$KL}" plant init --admin "$PG_ADMIN" --station-role keyline_station \
    --password-file "$T/station.pw" >"$T/init.out" 2>&1 ||
	fail "plant init: $(cat "$T/init.out")"

phase "line"
wait "$setup_pid" || fail "line_setup: $(tail -n 5 "$T/setup.log")"
b1=$L/boards/$(sed -n 1p "$L/boards.list")
sed -i 's/^fault = none$/fault = pause-before:KEYGEN/' "$b1/board.conf"
grep -q '^fault = pause-before:KEYGEN$' "$b1/board.conf" || fail "board 1 has no pause"
line_start "$L"
wait "$lint_pid" || fail "docs/openapi.yaml: $(cat "$T/lint.out")"
sed -n 's/^path //p' "$T/lint.out" >"$T/spec-paths.raw"
# Its paths are ui/http.c's route table: "/api/v1/slots/" with a segment
# is "/api/v1/slots/{n}".
sed -n '/^} http_routes\[\] = {/,/^};/p' "$top/ui/http.c" |
    sed -n 's/^[[:space:]]*{ "\([^"]*\)", \([01]\),.*/\1 \2/p' |
    awk '{ print $2 == 1 ? $1 "{}" : $1 }' | sort >"$T/routes"
[ "$(wc -l <"$T/routes")" -ge 7 ] || fail "read only $(wc -l <"$T/routes") routes from ui/http.c"
sed 's/{[^}]*}/{}/' "$T/spec-paths.raw" | sort >"$T/spec-paths"
diff "$T/routes" "$T/spec-paths" >"$T/paths.diff" ||
	fail "docs/openapi.yaml's paths (>) differ from ui/http.c's routes (<): $(cat "$T/paths.diff")"

PORT=$(free_port) || fail "no free port"
U=http://127.0.0.1:$PORT
api_token "$L/api.token"
AUTH="Authorization: Bearer $(cat "$L/api.token")"
cp "$T/station.pw" "$L/registry.pw"
chmod 600 "$L/registry.pw"
station_owns "$L/registry.pw"
cat >>"$L/station.conf" <<CONF

[registry]
conninfo = host=127.0.0.1 port=$PG_TLS_PORT dbname=keyline user=keyline_station
root_cert = registry-root.pem
password_file = registry.pw
offline = local

[http]
enabled = yes
port = $PORT
token_file = api.token
CONF

phase "station"
# HOME: libpq looks for a client certificate in ~/.postgresql, which must
# be the station user's to read (root's is not).
mkdir -p "$L/home"
station_owns "$L/home"
HOME=$L/home bg_start "$KL" batch --line --config "$L/station.conf" >"$T/out.jsonl" 2>"$T/station.err"
KPID=$!
on_exit stop_station

mkdir -p "$T/a"
: >"$T/cases"
status_of() { cat "$T/a/$1.status"; }
# ask NAME TEMPLATE URL [CURL-OPTION...]: queue a request whose answer
# goes to $T/a/NAME, to be checked against the spec's TEMPLATE; asked
# sends the queue in one curl process (a request per --next, one
# connection), leaves each status in $T/a/NAME.status and adds each
# answer to the cases ("TEMPLATE STATUS CONTENT-TYPE FILE").
queue=()
ask() {
	local name=$1 tpl=$2 url=$3
	shift 3
	[ ${#queue[@]} -eq 0 ] || queue+=(--next)
	queue+=(-s -o "$T/a/$name" --max-time 10
	    -w "$name $tpl %{http_code} %{content_type}\n" "$@" "$url")
}
asked() {
	local name tpl code ct
	curl "${queue[@]}" >"$T/asked" || fail "curl: exit $? on one of the requests"
	queue=()
	while read -r name tpl code ct; do
		ct=${ct// /}
		echo "$code" >"$T/a/$name.status"
		echo "$tpl $code ${ct:--} $T/a/$name" >>"$T/cases"
	done <"$T/asked"
}

healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$U/healthz")" = 200 ]; }
wait_for -p "$KPID" -l "$T/station.err" 30 "/healthz to answer" healthy

# A board in flight: board 1 waits before answering KEYGEN, so slot 1's
# keygen step runs (end_ms and duration_ms null) until .paused goes.
wait_for -p "$KPID" -l "$T/station.err" 30 "board 1 to pause before KEYGEN" test -e "$b1/.paused"
ask slot1-running /api/v1/slots/{n} "$U/api/v1/slots/1" -H "$AUTH"
ask status-busy /api/v1/status "$U/api/v1/status" -H "$AUTH"
ask slots-busy /api/v1/slots "$U/api/v1/slots" -H "$AUTH"
asked
rm -f "$b1/.paused"
jq -e '.state == "working" and .steps[-1].step == "keygen"
    and .steps[-1].end_ms == null and .steps[-1].duration_ms == null' \
    "$T/a/slot1-running" >/dev/null || fail "slot 1 not in keygen: $(cat "$T/a/slot1-running")"
jq -e '.counts.in_flight >= 1' "$T/a/status-busy" >/dev/null ||
	fail "no board in flight: $(jq -c .counts "$T/a/status-busy")"

phase "a step running seen"
finished() {
	curl -s -H "$AUTH" "$U/api/v1/status" >"$T/st" &&
	    [ "$(jq '.counts.passed + .counts.failed' "$T/st")" -ge "$N" ]
}
wait_for -p "$KPID" -l "$T/station.err" 60 "$N boards to finish" finished
jq -e '.counts.passed == 2 and .counts.failed == 1' "$T/st" >/dev/null ||
	fail "expected 2 passed, 1 failed: $(jq -c .counts "$T/st")"

phase "boards finished"
# A conflict in the registry naming this station as the holder (as the
# registry writes one when another station reconciles a device made
# offline); the station reads it within its poll (2 s).  cert_serial and
# holder_cert_serial NULL: both are null in the answer.
jq -r '.slots[0].device_id, .slots[2].device_id' <(curl -s -H "$AUTH" "$U/api/v1/slots") >"$T/ids"
id1=$(sed -n 1p "$T/ids")
id3=$(sed -n 2p "$T/ids")
pg_psql "$PG_ADMIN" "INSERT INTO device_conflicts (device_id, station, slot,
    board_serial, cert_fpr, made_at, holder_state, holder_station, holder_slot,
    holder_time) VALUES ('$id1', 'station-elsewhere', 4, 'KL009999',
    repeat('ab', 32), now(), 'provisioned', 'station-01', 1, now())" >/dev/null ||
	fail "cannot insert a conflict"
conflict_seen() {
	curl -s -H "$AUTH" "$U/api/v1/status" >"$T/st" &&
	    jq -e '.registry.conflicts >= 1 and (.registry.recent_conflicts | length) >= 1' \
	    "$T/st" >/dev/null
}
wait_for -p "$KPID" -l "$T/station.err" 30 "the station to report the conflict" conflict_seen

phase "conflict seen"
# ---- every endpoint, answered, and the errors, each with a status the
# spec lists for that path; one curl for all (--next between requests)
last=$(jq .audit.rows "$T/st")
ask status /api/v1/status "$U/api/v1/status" -H "$AUTH"
ask healthz /healthz "$U/healthz"
ask slots /api/v1/slots "$U/api/v1/slots" -H "$AUTH"
ask slot2 /api/v1/slots/{n} "$U/api/v1/slots/2" -H "$AUTH"
ask slot3 /api/v1/slots/{n} "$U/api/v1/slots/3" -H "$AUTH"
ask device1 /api/v1/devices/{device_id} "$U/api/v1/devices/$id1" -H "$AUTH"
ask device3 /api/v1/devices/{device_id} "$U/api/v1/devices/$id3" -H "$AUTH"
ask events /api/v1/events "$U/api/v1/events?since=0&limit=500" -H "$AUTH"
ask events-page /api/v1/events "$U/api/v1/events?since=1&limit=2" -H "$AUTH"
ask events-empty /api/v1/events "$U/api/v1/events?since=$last" -H "$AUTH"
ask metrics /metrics "$U/metrics" -H "$AUTH"
ask e401 /api/v1/status "$U/api/v1/status"
ask e401-wrong /api/v1/events "$U/api/v1/events" -H "Authorization: Bearer not-the-token-at-all"
ask e401-metrics /metrics "$U/metrics"
ask e404-slot /api/v1/slots/{n} "$U/api/v1/slots/99" -H "$AUTH"
ask e404-device /api/v1/devices/{device_id} "$U/api/v1/devices/keyline-virtual-NOPE" -H "$AUTH"
ask e400-slot /api/v1/slots/{n} "$U/api/v1/slots/abc" -H "$AUTH"
ask e400-device /api/v1/devices/{device_id} "$U/api/v1/devices/-x" -H "$AUTH"
ask e400-limit /api/v1/events "$U/api/v1/events?limit=0" -H "$AUTH"
ask e400-arg /api/v1/status "$U/api/v1/status?verbose=1" -H "$AUTH"
ask e400-nul /healthz "$U/healthz%00"
ask e405 /api/v1/status "$U/api/v1/status" -H "$AUTH" -X POST
ask e405-healthz /healthz "$U/healthz" -X DELETE
ask e413 /api/v1/slots "$U/api/v1/slots" -H "$AUTH" -X GET --data-binary 'a body'
ask e414 /api/v1/devices/{device_id} "$U/api/v1/devices/$(printf 'a%.0s' {1..300})" -H "$AUTH"
# Unknown paths are no operation of the spec: the body is its Error.
ask e401-unknown /api/v1/status "$U/no/such/path"
ask e404-unknown /api/v1/slots/{n} "$U/api/v1/nothing" -H "$AUTH"
ask status-304 /api/v1/status "$U/api/v1/status" -H "$AUTH" -H "If-None-Match: *"
# Another address, past its burst (rate_burst 40): 429 with its body.
for i in $(seq 1 60); do
	ask e429-$i /healthz "$U/healthz" --interface 127.0.0.3
done
asked
grep -q '^429$' "$T"/a/e429-*.status || fail "60 requests at once from one address got no 429"
for e in status:200 healthz:200 slots:200 slot2:200 slot3:200 device1:200 device3:200 \
    events:200 events-page:200 events-empty:200 metrics:200 \
    e401:401 e401-wrong:401 e401-metrics:401 e404-slot:404 e404-device:404 \
    e400-slot:400 e400-device:400 e400-limit:400 e400-arg:400 e400-nul:400 \
    e405:405 e405-healthz:405 e413:413 e414:414 e401-unknown:401 e404-unknown:404 \
    status-304:304; do
	[ "$(status_of "${e%:*}")" = "${e#*:}" ] ||
		fail "${e%:*}: status $(status_of "${e%:*}"), expected ${e#*:}: $(cat "$T/a/${e%:*}")"
done
jq -e '.registry.configured and .registry.offline_mode == "local"
    and (.registry.shipping | type) == "object"
    and .registry.recent_conflicts[0].cert_serial == null
    and .registry.recent_conflicts[0].holder_station == "station-01"' "$T/a/status" >/dev/null ||
	fail "status: no registry, shipping or conflict as expected: $(jq -c .registry "$T/a/status")"
jq -e '.state == "failed" and .error != null and any(.steps[]; .failed)' "$T/a/slot3" >/dev/null ||
	fail "slot 3 did not fail as expected: $(cat "$T/a/slot3")"
jq -e '.outcome == "failed" and .error != null' "$T/a/device3" >/dev/null ||
	fail "device 3's record: $(cat "$T/a/device3")"
jq -e 'any(.events[]; .step == "registry" and .outcome == "conflict")' "$T/a/events" >/dev/null ||
	fail "no registry conflict row among the events"
stop_station

phase "endpoints asked"
# ---- a second station on the same files: no registry, no slots
PORT2=$(free_port) || fail "no free port"
U=http://127.0.0.1:$PORT2
sed -e '/^\[slots\]/,/^\[/{/^[0-9]/d}' -e "s/^port = .*/port = $PORT2/" \
    -e '/^\[registry\]/,/^$/d' "$L/station.conf" >"$L/bare.conf"
grep -q '^\[registry\]' "$L/bare.conf" && fail "bare.conf still has a registry"
bg_start "$KL" batch --line --config "$L/bare.conf" >"$T/bare.jsonl" 2>"$T/bare.err"
KPID=$!
wait_for -p "$KPID" -l "$T/bare.err" 30 "the second station's /healthz" healthy
ask bare-status /api/v1/status "$U/api/v1/status" -H "$AUTH"
ask bare-slots /api/v1/slots "$U/api/v1/slots" -H "$AUTH"
ask bare-slot1 /api/v1/slots/{n} "$U/api/v1/slots/1" -H "$AUTH"
asked
stop_station
jq -e '.registry.configured == false and .registry.shipping == null and .slots == 0
    and .registry.recent_conflicts == []' "$T/a/bare-status" >/dev/null ||
	fail "bare station's status: $(cat "$T/a/bare-status")"
[ "$(status_of bare-slot1)" = 404 ] || fail "bare station's slot 1: $(status_of bare-slot1)"

phase "bare station asked"
# ---- negative controls: doctored answers, which the check must refuse
# for their reason.  control NAME TEMPLATE STATUS ERE: $T/a/NAME (written
# by the caller) is a case expected invalid, refused with ERE.
: >"$T/controls"
control() {
	echo "$2 $3 application/json $T/a/$1 invalid" >>"$T/cases"
	echo "$1 $4" >>"$T/controls"
}
jq '.registry.extra = 1' "$T/a/status" >"$T/a/x-extra"
control x-extra /api/v1/status 200 '/registry must NOT have additional properties: extra'
jq '.slots[0].number = "1"' "$T/a/slots" >"$T/a/x-type"
control x-type /api/v1/slots 200 '/slots/0/number must be integer'
jq '.line.state = null' "$T/a/status" >"$T/a/x-null"
control x-null /api/v1/status 200 '/line/state must be string'
jq '.line.state = "jammed"' "$T/a/status" >"$T/a/x-enum"
control x-enum /api/v1/status 200 '/line/state must be equal to one of the allowed values'
jq 'del(.steps[0].duration_ms)' "$T/a/slot2" >"$T/a/x-missing"
control x-missing /api/v1/slots/{n} 200 "/steps/0 must have required property 'duration_ms'"
jq '.registry.recent_conflicts[0].holder_slot = 1.5' "$T/a/status" >"$T/a/x-conflict"
control x-conflict /api/v1/status 200 '/registry/recent_conflicts/0/holder_slot must be integer'
jq '.registry.shipping.extra = true' "$T/a/status" >"$T/a/x-shipping"
control x-shipping /api/v1/status 200 '/registry/shipping must NOT have additional properties: extra'
jq '.events[0].time = 17' "$T/a/events" >"$T/a/x-event"
control x-event /api/v1/events 200 '/events/0/time must be string'
cp "$T/a/e404-slot" "$T/a/x-status"
control x-status /api/v1/status 404 'status 404 is not documented for GET /api/v1/status'
cp "$T/a/e404-slot" "$T/a/x-said"
control x-said /api/v1/slots/{n} 400 "/error/status 404 is not the answer's status 400"
jq '.error.code = "teapot"' "$T/a/e404-slot" >"$T/a/x-code"
control x-code /api/v1/slots/{n} 404 '/error/code must be equal to one of the allowed values'

# ---- every answer against the spec, and the controls refused
check responses "$SPEC" "$T/cases" >"$T/check.out" 2>&1 ||
	fail "answers that do not match docs/openapi.yaml: $(grep -v -e '^ok ' -e '^refused ' "$T/check.out" | head -n 30)"
tail -n 1 "$T/check.out"
while read -r name ere; do
	grep -q "^refused .*/a/$name: " "$T/check.out" || fail "control $name: not refused"
	grep "^refused .*/a/$name: " "$T/check.out" | grep -Eq -- "$ere" ||
		fail "control $name refused for another reason: $(grep "/a/$name: " "$T/check.out")"
done <"$T/controls"
# The controls differ from valid answers by their doctoring only.
for name in status slots slot2 events e404-slot; do
	grep -q "^ok .*/a/$name$" "$T/check.out" || fail "answer $name was not checked"
done
# Every path of the spec was asked, and answered 200.
while read -r p; do
	grep -q "^ok $p 200 " "$T/check.out" || fail "no 200 answer of $p was checked"
done <"$T/spec-paths.raw"
phase "checked"
echo "PASS openapi"
