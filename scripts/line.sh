# scripts/line.sh: build a virtual production line, for the demo, the
# integration tests and the benchmarks (sourced, not run).
#
#   line_setup DIR N [keyline-jig init options...]
#       development CA (scripts/devca), N virtual boards, DIR/station.conf
#   line_start DIR [keyline-jig run options...]   start the jig, wait ready
#   line_wait_boards DIR     wait until every agent has its token open
#   line_emu_cpu DIR         CPU seconds of the jig and of its live agents
#   line_stop DIR                                 stop the jig and its agents
#
# KEYLINE_BIN names the folder with keyline, keyline-agent, keyline-jig
# (default build/bin); KEYLINE_AGENT the agent the jig runs per board
# (default KEYLINE_BIN/keyline-agent, the one that goes on boards; the
# tests use keyline-agent-test, which also takes board.conf faults).
# The CA token PIN goes to a RAM-backed file under
# /dev/shm, never into DIR.
#
# KEYLINE_LINE_TMPFS=1 (the benchmarks): line_setup puts the virtual
# boards (DIR/boards: tokens, rootfs) on tmpfs under /dev/shm, DIR/boards
# a symlink to it, so SoftHSM's object files and the agents' fsyncs cost
# the station PC no disk I/O: a real board writes its own flash.  The
# station's files (audit.db, its token) stay in DIR on the real disk.
# line_cleanup removes the tmpfs copy.  Default 0: the integration tests
# keep their boards on the disk, fsyncs and all.
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

# Where DIR's boards live under KEYLINE_LINE_TMPFS=1.
line_tmpfs_dir() {
	echo "$(dirname "$(line_pin_file "$1")")-boards"
}

line_setup() {
	local dir=$1 n=$2 shm
	shift 2
	mkdir -p "$dir"
	if [ "${KEYLINE_LINE_TMPFS:-0}" = 1 ] && [ ! -e "$dir/boards" ]; then
		shm=$(line_tmpfs_dir "$dir")
		rm -rf "$shm"
		mkdir -m 0755 "$shm" && ln -s "$shm" "$dir/boards" || return 1
	fi
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
	# Where this run's log starts, for line_wait_boards.
	stat -c %s "$dir/jig.log" >"$dir/jig.logstart" 2>/dev/null ||
	    echo 0 >"$dir/jig.logstart"
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

# The jig is ready once every agent was started; each agent then loads
# its PKCS#11 module and logs in to its token (tens of ms of CPU each).
# A benchmark waits for that here, as a line's boards have booted before
# the station starts, so the boards' start-up is not counted as the
# station's time.  Every agent's "ready on" line, or its slot's exit, in
# this run's part of jig.log; 1 after 60 s without.
line_wait_boards() {
	local dir=$1 n start i got
	n=$(cat "$dir/jig.ready")
	start=$(cat "$dir/jig.logstart")
	for ((i = 0; i < 600; i++)); do
		got=$(tail -c +$((start + 1)) "$dir/jig.log" | grep -c \
		    -e ': ready on ' -e ': agent of board .* exited with ' \
		    -e ': agent of board .* killed by ' || true)
		[ "$got" -ge "$n" ] && return 0
		sleep 0.1
	done
	echo "line_wait_boards: $got of $n agents ready after 60 s" >&2
	return 1
}

# "RELAY AGENTS": user + system seconds so far of the running jig and of
# the agents now running under it (/proc), for a benchmark to take the
# difference across a run: what the emulation took from the station PC.
line_emu_cpu() {
	local jig p f agents=0 relay tck
	jig=$(cat "$1/jig.pid")
	tck=$(getconf CLK_TCK)
	f=($(sed 's/.*) //' "/proc/$jig/stat"))
	relay=$((f[11] + f[12]))
	for p in $(cat "/proc/$jig/task/$jig/children" 2>/dev/null); do
		f=($(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null)) || continue
		agents=$((agents + ${f[11]:-0} + ${f[12]:-0}))
	done
	echo "$relay $agents" | awk -v t="$tck" '{ printf "%.3f %.3f\n", $1 / t, $2 / t }'
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
	[ ! -L "$dir/boards" ] || rm -rf "$(line_tmpfs_dir "$dir")"
}
