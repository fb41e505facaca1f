#!/usr/bin/env bash
# The status API's defences for the line (issue 14, goal 6): a client
# over its rate gets 429 with Retry-After while a client from another
# address still gets 200, and gets 200 again once it waited; the status
# document is built once per status_cache_ms and the same bytes and ETag
# go to every client in that window, If-None-Match answers 304, and a
# document built after the window that holds a changed state has another
# ETag; the server's threads run at idle priority; /metrics counts it all.
. "$(dirname "$0")/lib.sh"

N=2
line_setup "$T" "$N" --keygen-ms 400 --sign-ms 400
line_start "$T"

PORT=$(free_port) || fail "no free port"
api_token "$T/api.token"
AUTH="Authorization: Bearer $(cat "$T/api.token")"
# A small bucket so that a shell can empty it; a window long enough for a
# sanitizer build to ask twice inside it.
cat >>"$T/station.conf" <<CONF

[http]
enabled = yes
port = $PORT
token_file = api.token
rate_limit = 1
rate_burst = 3
status_cache_ms = 1500
CONF

bg_start "$KL" batch --line --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/station.err"
KPID=$!
on_exit stop_station

# req ADDR PATH [CURL-OPTION...]: the status code; body in $T/body,
# headers in $T/hdr.  ADDR is the loopback address the request comes from
# (the rate is per address).
req() {
	local addr=$1 path=$2
	shift 2
	rm -f "$T/body"	# curl writes no file for an empty body
	curl -s --interface "$addr" -o "$T/body" -D "$T/hdr" -w '%{http_code}' \
	    --max-time 10 "$@" "http://127.0.0.1:$PORT$path"
}
hdr() { tr -d '\r' <"$T/hdr" | awk -v h="$1" 'tolower($1) == tolower(h) ":" { $1 = ""; sub(/^ /, ""); print }'; }

# Each wait uses its own address: 127.0.0.1 is for the rate test below.
up() { [ "$(req 127.0.0.9 /healthz)" = 200 ]; }
wait_for -p "$KPID" -l "$T/station.err" 10 "/healthz to answer" up

# ---- the rate: 3 at once, then 429 with Retry-After ------------------
# One curl, one kept-alive connection: the requests come faster than the
# bucket refills (1 a second) even on a busy machine.  A request over the
# rate is held for Retry-After before its 429 (a client asking again at
# once gets one answer a second, not thousands), so the bucket has a
# token again for the next one, and the one after is over again.
U1=http://127.0.0.1:$PORT
rm -f "$T/body"
codes=$(curl -s --interface 127.0.0.1 -D "$T/hdr" -w '%{http_code}:%{time_total} ' -H "$AUTH" \
    -o /dev/null "$U1/api/v1/status" -o /dev/null "$U1/api/v1/status" \
    -o /dev/null "$U1/api/v1/status" -o "$T/body" "$U1/api/v1/status" \
    -o /dev/null "$U1/healthz" -o /dev/null "$U1/healthz" -o /dev/null "$U1/healthz")
read -r -a c <<<"$codes"
[ "${c[0]%%:*} ${c[1]%%:*} ${c[2]%%:*} ${c[3]%%:*}" = "200 200 200 429" ] ||
	fail "4 status requests at once with rate_burst 3 gave: $codes"
# The 429 was held about Retry-After (1 s), not sent at once.
awk -v t="${c[3]#*:}" 'BEGIN { exit !(t >= 0.8) }' ||
	fail "the 429 came after ${c[3]#*:} s: not held ($codes)"
# Unauthenticated requests count too (the cheapest answer comes first).
[[ " ${c[4]%%:*} ${c[5]%%:*} ${c[6]%%:*} " == *" 429 "* ]] ||
	fail "over-rate /healthz requests were not limited: $codes"
retry=$(hdr Retry-After | tail -n 1)
[[ $retry =~ ^[1-9][0-9]*$ ]] || fail "429 without a Retry-After in seconds: '$retry'"
jq -e '.error.status == 429 and .error.code == "rate_limited"' "$T/body" >/dev/null ||
	fail "429 body: $(cat "$T/body")"
[ "$(hdr Content-Type | tail -n 1)" = application/json ] || fail "429 content type: $(hdr Content-Type)"
# Another client is not limited by the first one's rate.
[ "$(req 127.0.0.2 /api/v1/status -H "$AUTH")" = 200 ] ||
	fail "a second address was refused while the first was over its rate"
[ "$(req 127.0.0.2 /metrics -H "$AUTH")" = 200 ] ||
	fail "/metrics from a second address: $(head -c 300 "$T/body")"
sleep "$retry"
sleep 1
[ "$(req 127.0.0.1 /api/v1/status -H "$AUTH")" = 200 ] ||
	fail "still limited after Retry-After ($retry s)"
echo "rate: $codes, Retry-After $retry"

# ---- the cache: same bytes and ETag in the window, 304, a new ETag ----
# 127.0.0.3..8: one address per request, so the rate stays out of it.
[ "$(req 127.0.0.3 /api/v1/status -H "$AUTH")" = 200 ] || fail "status"
cp "$T/body" "$T/doc1"
etag1=$(hdr ETag)
[[ $etag1 =~ ^W/\"[0-9a-f]{16}\"$ ]] || fail "status ETag: '$etag1'"
cc=$(hdr Cache-Control)
[ "$cc" = "private, max-age=0" ] || fail "status Cache-Control: '$cc'"
[ "$(req 127.0.0.4 /api/v1/status -H "$AUTH")" = 200 ] || fail "status"
[ "$(hdr ETag)" = "$etag1" ] || fail "ETag changed inside the window: $etag1, $(hdr ETag)"
cmp -s "$T/doc1" "$T/body" ||
	fail "two requests inside the window got different documents (time_ms $(jq .time_ms "$T/doc1"), $(jq .time_ms "$T/body"))"
[ "$(req 127.0.0.5 /api/v1/status -H "$AUTH" -H "If-None-Match: $etag1")" = 304 ] ||
	fail "If-None-Match with the current ETag was not 304"
[ ! -s "$T/body" ] || fail "a 304 with a body: $(cat "$T/body")"
[ "$(hdr ETag)" = "$etag1" ] || fail "304 without the ETag"
# A list, the strong form of the same tag, and * match too (weak
# comparison); another tag does not.
strong=${etag1#W/}
[ "$(req 127.0.0.6 /api/v1/status -H "$AUTH" -H "If-None-Match: \"x\", $strong")" = 304 ] ||
	fail "If-None-Match list with the tag was not 304"
[ "$(req 127.0.0.7 /api/v1/status -H "$AUTH" -H 'If-None-Match: *')" = 304 ] ||
	fail "If-None-Match: * was not 304"
[ "$(req 127.0.0.8 /api/v1/status -H "$AUTH" -H 'If-None-Match: W/"0000000000000000"')" = 200 ] ||
	fail "If-None-Match with another tag was not 200"
# HEAD: the headers alone, the same ETag.
[ "$(req 127.0.0.9 /api/v1/status -H "$AUTH" -I)" = 200 ] || fail "HEAD status"
[ "$(hdr ETag)" = "$etag1" ] || fail "HEAD ETag differs"

# Wait for the boards: the state changes, and after the window the new
# document has a new ETag, a later time_ms, and the new counts.
done_boards() {
	[ "$(req 127.0.0.10 /api/v1/status -H "$AUTH")" = 200 ] &&
		[ "$(jq '.counts.passed' "$T/body")" -ge "$N" ]
}
wait_for -p "$KPID" -l "$T/station.err" 60 "the boards to pass" done_boards
sleep 1.6
[ "$(req 127.0.0.11 /api/v1/status -H "$AUTH" -H "If-None-Match: $etag1")" = 200 ] ||
	fail "an old ETag got 304 after the state changed"
etag2=$(hdr ETag)
[ "$etag2" != "$etag1" ] || fail "the ETag did not change with the state"
[ "$(jq .time_ms "$T/body")" -gt "$(jq .time_ms "$T/doc1")" ] || fail "time_ms did not move"
[ "$(jq .counts.passed "$T/body")" = "$N" ] || fail "new document: $(cat "$T/body")"
# Other routes are not cached.
[ "$(req 127.0.0.12 /api/v1/slots -H "$AUTH")" = 200 ] || fail "slots"
[ "$(hdr Cache-Control)" = no-store ] || fail "slots Cache-Control: $(hdr Cache-Control)"
echo "cache: $etag1 -> $etag2"

# ---- idle priority and the counters ------------------------------------
# Every request so far went through the server's thread, which lowered
# itself: some thread of the station is SCHED_IDLE (ps class IDL).
ps -L -o cls= -p "$KPID" | grep -qx ' *IDL' ||
	fail "no thread of the station at idle priority: $(ps -L -o tid=,cls=,comm= -p "$KPID" | tr '\n' ';')"
[ "$(req 127.0.0.13 /metrics -H "$AUTH")" = 200 ] || fail "metrics"
limited=$(awk '$1 == "keyline_http_requests_limited_total" { print $2 }' "$T/body")
builds=$(awk '$1 == "keyline_http_status_builds_total" { print $2 }' "$T/body")
[ "${limited:-0}" -ge 2 ] || fail "keyline_http_requests_limited_total: '$limited'"
# 16 status requests so far, in a few windows of 1.5 s.
[ "${builds:-0}" -ge 2 ] && [ "$builds" -lt 16 ] ||
	fail "keyline_http_status_builds_total: '$builds' for 16+ requests"
echo "metrics: $limited limited, $builds status builds"
stop_station
