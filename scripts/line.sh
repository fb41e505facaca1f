# scripts/line.sh: build a virtual production line, for the demo, the
# integration tests and the benchmarks (sourced, not run).
#
#   line_setup DIR N [keyline-jig init options...]
#       development CA (scripts/devca), N virtual boards, DIR/station.conf
#   line_start DIR [keyline-jig run options...]   start the jig, wait ready
#   line_stop DIR                                 stop the jig and its agents
#
# KEYLINE_BIN names the folder with keyline, keyline-agent, keyline-jig
# (default build/bin); KEYLINE_AGENT the agent the jig runs per board
# (default KEYLINE_BIN/keyline-agent, the one that goes on boards; the
# tests use keyline-agent-test, which also takes board.conf faults).
# The CA token PIN goes to a RAM-backed file under
# /dev/shm, never into DIR.
#
# KEYLINE_STATION_USER (the integration tests set it when run as root):
# the user the station runs as.  line_setup gives it the line's directory
# to write in (root's, the user's group, mode 1770: sticky like /tmp, which
# is what the board agents accept above their import directories), the
# station token and the PIN file; line_start gives it the jig's station-
# side ttys and control socket.  The jig and the agents stay root.

KEYLINE_TOP=${KEYLINE_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
KEYLINE_BIN=${KEYLINE_BIN:-$KEYLINE_TOP/build/bin}
KEYLINE_AGENT=${KEYLINE_AGENT:-$KEYLINE_BIN/keyline-agent}

line_pin_file() {
	local dir
	dir=$(cd "$1" && pwd)
	echo "/dev/shm/keyline-$(id -u)-$(printf '%s' "$dir" | sha256sum | cut -c1-16)/ca.pin"
}

line_write_conf() {
	local dir=$1 n=$2 i
	dir=$(cd "$dir" && pwd)
	{
		cat <<CONF
# station.conf for a virtual jig of $n boards (written by scripts/line.sh)
[station]
id = station-01
operator = demo
work_order = WO-DEMO
audit_db = audit.db
device_id_template = {model}-{serial}

[keys]
type = ec-p256
tls_key_id = 02
cert_id = 01

[link]
baud = 115200
timeout_ms = 5000
keygen_timeout_ms = 60000
attempts = 4
resends = 16

[ca]
backend = local
issuer_cert = ca/fleet-root.pem
fleet_root = ca/fleet-root.pem
module = /usr/lib/softhsm/libsofthsm2.so
module_env = SOFTHSM2_CONF=station/softhsm2.conf
token_label = keyline-station
key_id = 10
pin_file = $(line_pin_file "$dir")
validity_days = 3650

[ota]
root_crt = ca/gateway-root.pem
gateway_url = https://gateway.ota.example.com:8443

[jig]
# keyline-jig switches a slot's power through its control socket
power = virtual-jig
control = jig.sock
power_off_ms = 300

[slots]
CONF
		for ((i = 1; i <= n; i++)); do
			echo "$i = slots/$i"
		done
	} >"$dir/station.conf"
}

line_setup() {
	local dir=$1 n=$2
	shift 2
	mkdir -p "$dir"
	"$KEYLINE_TOP/scripts/devca" "$dir" "$(line_pin_file "$dir")"
	"$KEYLINE_BIN/keyline-jig" init --dir "$dir" --boards "$n" "$@" \
	    >"$dir/jig-init.log" 2>&1 ||
	    { cat "$dir/jig-init.log" >&2; return 1; }
	line_write_conf "$dir" "$n"
	if [ -n "${KEYLINE_STATION_USER:-}" ]; then
		chgrp "$KEYLINE_STATION_USER" "$dir" && chmod 1770 "$dir" &&
		    chown -R "$KEYLINE_STATION_USER:" "$dir/station" \
		    "$(dirname "$(line_pin_file "$dir")")"
	fi
}

line_start() {
	local dir=$1 i
	shift
	rm -f "$dir/jig.ready"
	"$KEYLINE_BIN/keyline-jig" run --dir "$dir" \
	    --agent "$KEYLINE_AGENT" "$@" 2>>"$dir/jig.log" &
	echo $! >"$dir/jig.bgpid"
	for ((i = 0; i < 300; i++)); do
		if [ -e "$dir/jig.ready" ]; then
			[ -z "${KEYLINE_STATION_USER:-}" ] ||
			    chown "$KEYLINE_STATION_USER:" "$dir/jig.sock" \
			    $(readlink -f "$dir"/slots/*)
			return
		fi
		kill -0 "$(cat "$dir/jig.bgpid")" 2>/dev/null || break
		sleep 0.1
	done
	echo "line_start: the virtual jig did not come up (see $dir/jig.log)" >&2
	return 1
}

line_stop() {
	local dir=$1 pid
	[ -f "$dir/jig.bgpid" ] || return 0
	pid=$(cat "$dir/jig.bgpid")
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	rm -f "$dir/jig.bgpid"
}

line_cleanup() {
	local dir=$1
	line_stop "$dir"
	rm -rf "$(dirname "$(line_pin_file "$dir")")"
}
