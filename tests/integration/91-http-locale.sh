#!/usr/bin/env bash
# The status API of the console (the process that calls setlocale) run
# under LC_ALL=de_DE.UTF-8, where printf writes "0,005": promtool check
# metrics accepts /metrics, no number in it or in the JSON has a decimal
# comma.  The locale is compiled into a private LOCPATH with localedef,
# so the test needs no change to the system's locales.  Also runs
# test_http's formatter test under that locale when it is built.
. "$(dirname "$0")/lib.sh"

command -v tmux >/dev/null || fail "tmux is not installed (scripts/setup)"
command -v promtool >/dev/null || fail "promtool is not installed (scripts/setup: prometheus)"
command -v localedef >/dev/null || fail "localedef is missing (libc-bin)"

LOC=$T/locale
mkdir -p "$LOC"
# -c: the Debian sources give harmless warnings; the check below says
# whether the locale really works.
localedef -c -i de_DE -f UTF-8 "$LOC/de_DE.UTF-8" >"$T/localedef.log" 2>&1 || true
export LOCPATH=$LOC
got=$(LC_ALL=de_DE.UTF-8 awk 'BEGIN { printf "%g", 0.005 }' 2>/dev/null || true)
if [ "$got" != "0,005" ]; then
	# awk may ignore LC_NUMERIC (mawk does); ask printf(1) instead.
	got=$(LC_ALL=de_DE.UTF-8 /usr/bin/printf '%g' 0.005 2>/dev/null || true)
fi
[ "$got" = "0,005" ] || fail "de_DE.UTF-8 from $LOC is not comma-decimal ('$got'): $(cat "$T/localedef.log")"

unit=$KEYLINE_BIN/../tests/test_http
if [ -x "$unit" ]; then
	"$unit" >"$T/unit.log" 2>&1 || { cat "$T/unit.log" >&2; fail "test_http under LOCPATH"; }
	grep -q 'OK \] test_fmt_comma_locale' "$T/unit.log" ||
		fail "test_http did not run its comma-locale test: $(cat "$T/unit.log")"
fi

line_setup "$T" 2 --keygen-ms 30 --sign-ms 30
line_start "$T"
free_port() {
	local p i
	for ((i = 0; i < 50; i++)); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}
PORT=$(free_port) || fail "no free port"
U=http://127.0.0.1:$PORT
api_token "$T/api.token"
AUTH="Authorization: Bearer $(cat "$T/api.token")"
cat >>"$T/station.conf" <<CONF

[http]
enabled = yes
port = $PORT
token_file = api.token
CONF

sock=kl$$
tm() { tmux -L "$sock" "$@"; }
trap 'tm kill-server 2>/dev/null; line_cleanup "$T"; rm -rf "$T"' EXIT
tm new-session -d -x 100 -y 30 -s c \
    "env LOCPATH='$LOC' LC_ALL=de_DE.UTF-8 '$KL' console --config '$T/station.conf' --start; echo \"console exit \$?\"; sleep 600"

passed=0
for ((i = 0; i < 300; i++)); do
	if [ "$(curl -s -o "$T/status" -w '%{http_code}' -H "$AUTH" "$U/api/v1/status" || true)" = 200 ]; then
		passed=$(jq .counts.passed "$T/status")
		[ "$passed" = 2 ] && break
	fi
	sleep 0.2
done
[ "$passed" = 2 ] || { tm capture-pane -p -t c >&2; fail "the console's line did not pass 2 boards (passed=$passed)"; }

[ "$(curl -s -o "$T/metrics" -w '%{http_code}' -H "$AUTH" "$U/metrics")" = 200 ] || fail "metrics"
promtool check metrics <"$T/metrics" >"$T/promtool.log" 2>&1 ||
	fail "promtool check metrics: $(head -n 5 "$T/promtool.log"); $(grep -m 3 ',' "$T/metrics")"
# Not only parseable: every sample value and le label uses '.'.
! grep -E '^[a-z_]+(\{[^}]*\})? .*[0-9],[0-9]' "$T/metrics" || fail "a decimal comma in a sample"
! grep -E 'le="[0-9]+,[0-9]+"' "$T/metrics" || fail "a decimal comma in a bucket bound"
grep -q 'le="0.005"' "$T/metrics" || fail "no le=\"0.005\" bucket"
grep -Eq '^keyline_board_duration_seconds_sum [0-9]+\.[0-9]{6}$' "$T/metrics" || fail "board sum"
grep -Eq '^process_start_time_seconds [0-9]{10}(\.[0-9]+)?$' "$T/metrics" || fail "process_start_time_seconds"
grep -q '^keyline_build_info{version="' "$T/metrics" || fail "keyline_build_info"
# The JSON too: boards_per_hour is a fraction.
jq -e '.line.boards_per_hour | type == "number"' "$T/status" >/dev/null ||
	fail "status JSON under de_DE: $(cat "$T/status")"
tm send-keys -t c q
echo "PASS http-locale"
