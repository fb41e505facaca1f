# tests/integration/lib.sh: shared by the integration tests (sourced).
# docs/testing.md describes the helpers below and how to use them.
set -euo pipefail
top=${KEYLINE_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
. "$top/scripts/line.sh"
MODULE=/usr/lib/softhsm/libsofthsm2.so

# KEYLINE_PROTOCOL_MAX=1 (tests/run-integration sets it for the tests it
# runs a second time as "NAME-v1"): every board line_setup makes speaks
# only protocol version 1 (board.conf protocol_max, docs/jig.md), so the
# same test drives version 1 end to end.  Unset: boards speak the
# newest, as shipped.
board_protocol_max() {
	local b=$1 v=$2
	sed -i '/^protocol_max *=/d' "$b/board.conf"
	echo "protocol_max = $v" >>"$b/board.conf"
}
if [ -n "${KEYLINE_PROTOCOL_MAX:-}" ]; then
	eval "$(declare -f line_setup | sed '1s/^line_setup/_line_setup_any/')"
	line_setup() {
		local c
		_line_setup_any "$@" || return
		for c in "$1"/boards/*/board.conf; do
			[ -f "$c" ] || continue
			board_protocol_max "$(dirname "$c")" "$KEYLINE_PROTOCOL_MAX"
		done
	}
fi

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# ---- the station runs as an ordinary user --------------------------------
#
# As on a line PC (docs/install.md), the station is not root: $KL is
# keyline through tests/tools/keyline-as-station, which drops from root to
# the system user KEYLINE_STATION_USER (keyline-test, created on first use
# like pg.sh's keyline-pg) with setpriv.  line_setup and line_start
# (scripts/line.sh) give that user what a station writes; a test that
# makes other files for the station hands them over with station_owns.
# The jig and the board agents stay root: they play the boards.  KL_BIN is
# keyline itself, for a test that runs it as root on purpose (the refusal,
# 145) or switches users itself (nobody in 13 and 17).
KL=$top/tests/tools/keyline-as-station
KL_BIN=$KEYLINE_BIN/keyline
if [ "$(id -u)" = 0 ]; then
	export KEYLINE_STATION_USER=${KEYLINE_STATION_USER:-keyline-test}
else
	export KEYLINE_STATION_USER=
fi

# The station's user, created once (a second test racing us is fine), and
# able to reach keyline: directories above it get o+x (traverse, not
# list) where they lack it, as pg.sh does for the server.
_station_user() {
	local i d
	for ((i = 0; i < 50; i++)); do
		id -u "$KEYLINE_STATION_USER" >/dev/null 2>&1 && break
		useradd --system --no-create-home --home-dir /nonexistent \
		    --shell /usr/sbin/nologin "$KEYLINE_STATION_USER" \
		    2>/dev/null && break
		sleep 0.1
	done
	id -u "$KEYLINE_STATION_USER" >/dev/null 2>&1 ||
		fail "cannot create user $KEYLINE_STATION_USER"
	d=$(dirname "$KL_BIN")
	while [ "$d" != / ]; do
		setpriv --reuid="$KEYLINE_STATION_USER" \
		    --regid="$KEYLINE_STATION_USER" --clear-groups test -x "$d" ||
			chmod o+x "$d" || fail "cannot open $d to $KEYLINE_STATION_USER"
		d=$(dirname "$d")
	done
}
[ -z "$KEYLINE_STATION_USER" ] || _station_user

# as_station CMD...: CMD as the station's user (as this user when the
# test does not run as root).
as_station() {
	if [ -n "$KEYLINE_STATION_USER" ]; then
		setpriv --reuid="$KEYLINE_STATION_USER" \
		    --regid="$KEYLINE_STATION_USER" --clear-groups \
		    env HOME=/nonexistent "$@"
	else
		"$@"
	fi
}

# station_owns PATH...: hand PATH (and what is under it) to the station's
# user: a file the test wrote for the station that must be its own (a
# password file, mode 600) or that it must write (an audit log copied in).
station_owns() {
	[ -z "$KEYLINE_STATION_USER" ] ||
		chown -R "$KEYLINE_STATION_USER:" "$@"
}

# api_token FILE: a random bearer token for [http] token_file in FILE,
# mode 600, the station's.
api_token() {
	head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$1"
	chmod 600 "$1"
	station_owns "$1"
}

# stop_station: TERM the station whose pid is in KPID (set by the test
# from bg_start's $!) and wait for it; nothing when KPID is empty.  For
# on_exit, and to stop it mid-test.
stop_station() {
	if [ -n "${KPID:-}" ]; then
		kill -TERM "$KPID" 2>/dev/null || true
		wait "$KPID" 2>/dev/null || true
		KPID=
	fi
}

# ---- clean-up, whatever way the test ends ------------------------------
#
# A failed check exits at once; whatever the test started must not outlive
# it (a station in line mode runs until it is stopped).  On exit, in this
# order: the commands given to on_exit (last first), the processes given
# to bg_start/track_pid (and their children: SIGTERM, SIGKILL after 5 s),
# the virtual lines (line_cleanup $T and each dir given to on_exit_line),
# then any other process this shell started that is still running, and $T.

_exit_cmds=()
_bg_pids=()
_lines=()

# on_exit CMD: eval CMD when the test ends (before the sweep below).
on_exit() { _exit_cmds+=("$1"); }

# on_exit_line DIR: line_cleanup DIR when the test ends (the jig of a
# second line, its PIN file).
on_exit_line() { _lines+=("$1"); }

# track_pid PID...: stop PID and its children when the test ends.
track_pid() { _bg_pids+=("$@"); }

# bg_start CMD [ARG...]: run CMD in the background, tracked; redirect the
# call itself (bg_start "$KL" batch ... >out 2>err); $! is its pid.
bg_start() {
	"$@" &
	_bg_pids+=("$!")
}

# PIDs of the processes below ROOT, deepest first, leaving out the subtree
# of SKIP (the subshell running this).
_proc_tree() {
	ps -e -o pid=,ppid= | awk -v root="$1" -v skip="${2:-0}" '
	    { parent[$1] = $2; pid[NR] = $1 }
	    END {
		for (i = 1; i <= NR; i++) {
			p = pid[i]; d = 0
			for (q = p; q != root && q != skip && q in parent && q > 1; q = parent[q])
				d++
			if (q == root && p != root)
				print d, p
		}
	    }' | sort -rn | cut -d' ' -f2
}

# Whether PID is running (a zombie is not).
_alive() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
	[ "${st%% *}" != Z ]
}

# stop_pids [-s SECS] PID...: SIGTERM each PID and everything under it,
# SIGKILL what still runs after SECS (default 5), reap our children.
# Only processes under this shell are signalled: a PID reaped earlier and
# reused by someone else's process is never touched.
stop_pids() {
	local secs=5 mine p want=() all=() i
	if [ "${1:-}" = -s ]; then
		secs=$2
		shift 2
	fi
	mine=" $(_proc_tree $$ "$BASHPID" | tr '\n' ' ') "
	for p in "$@"; do
		[[ $mine == *" $p "* ]] || continue
		want+=("$p")
		all+=("$p" $(_proc_tree "$p" "$BASHPID"))
	done
	[ ${#all[@]} -gt 0 ] || return 0
	kill -TERM "${all[@]}" 2>/dev/null || true
	for ((i = 0; i < secs * 20; i++)); do
		for p in "${all[@]}"; do
			_alive "$p" && break
			p=
		done
		[ -z "$p" ] && break
		sleep 0.05
	done
	kill -KILL "${all[@]}" 2>/dev/null || true
	for p in "${want[@]}"; do
		wait "$p" 2>/dev/null || true
	done
}

# tmux_stop SOCKET: end a private tmux server (tmux -L SOCKET) and wait
# for what ran in its panes to exit: tmux is no child of the test, and a
# console stopped by the hangup first rolls back its boards.  SIGKILL
# after 10 s.  For on_exit.
tmux_stop() {
	local panes p pids=() i
	panes=$(tmux -L "$1" list-panes -a -F '#{pane_pid}' 2>/dev/null) || return 0
	for p in $panes; do
		pids+=("$p" $(_proc_tree "$p" "$BASHPID"))
	done
	tmux -L "$1" kill-server 2>/dev/null
	for ((i = 0; i < 200; i++)); do
		for p in "${pids[@]}"; do
			_alive "$p" && break
			p=
		done
		[ -z "$p" ] && return 0
		sleep 0.05
	done
	kill -KILL "${pids[@]}" 2>/dev/null || true
}

_cleanup() {
	local i stray
	set +e
	for ((i = ${#_exit_cmds[@]} - 1; i >= 0; i--)); do
		eval "${_exit_cmds[i]}"
	done
	[ ${#_bg_pids[@]} -eq 0 ] || stop_pids "${_bg_pids[@]}"
	for ((i = ${#_lines[@]} - 1; i >= 0; i--)); do
		line_cleanup "${_lines[i]}" 2>/dev/null
	done
	line_cleanup "$T"
	# Anything else this test left running (started with a plain &).
	stray=()
	for i in $(_proc_tree $$ "$BASHPID"); do
		_alive "$i" && stray+=("$i")
	done
	if [ ${#stray[@]} -gt 0 ]; then
		echo "cleanup: stopping processes the test left running:" >&2
		ps -o pid=,args= -p "$(IFS=,; echo "${stray[*]}")" >&2
		stop_pids -s 2 "${stray[@]}"
	fi
	rm -rf "$T"
}

# A fresh directory for this test, removed (jig stopped) on exit.  The
# station may create files in it (its audit log): root's, the station's
# group, sticky like /tmp (line_setup does the same to a line's DIR).
T=$(mktemp -d /tmp/keyline-it.XXXXXX)
trap _cleanup EXIT
if [ -n "$KEYLINE_STATION_USER" ]; then
	chgrp "$KEYLINE_STATION_USER" "$T" && chmod 1770 "$T"
fi

# ---- waiting on state, never on time ------------------------------------

# wait_for [-p PID]... [-l LOG]... SECS WHAT CMD [ARG...]: run CMD every
# 0.1 s until it succeeds.  Fails "timed out after SECS s waiting for
# WHAT" once SECS have passed, or at once when a process named with -p has
# exited (a station that died is not waited for); either way the last
# lines of each LOG are shown first.
wait_for() {
	local pids=() logs=() secs what end p why=
	while :; do
		case $1 in
		-p) pids+=("$2") ;;
		-l) logs+=("$2") ;;
		*) break ;;
		esac
		shift 2
	done
	secs=$1 what=$2
	shift 2
	end=$(($(_now_ms) + secs * 1000))
	until "$@"; do
		for p in ${pids[@]+"${pids[@]}"}; do
			_alive "$p" || why="process $p exited while waiting for $what"
		done
		[ -n "$why" ] || [ "$(_now_ms)" -lt "$end" ] ||
			why="timed out after $secs s waiting for $what"
		if [ -n "$why" ]; then
			for p in ${logs[@]+"${logs[@]}"}; do
				echo "---- last lines of $p:" >&2
				tail -n 20 "$p" >&2 2>/dev/null || true
			done
			fail "$why"
		fi
		sleep 0.1
	done
}

_now_ms() {
	local t=${EPOCHREALTIME/[^0-9]/}
	echo $((10#$t / 1000))
}

# count ERE FILE: lines of FILE matching ERE (0 when there is no FILE).
count() {
	grep -Ec -- "$1" "$2" 2>/dev/null || true
}

# at_least N ERE FILE: FILE has at least N lines matching ERE.
at_least() {
	[ "$(count "$2" "$3")" -ge "$1" ]
}

# ---- the station's probes, seen from the boards ---------------------------
#
# In line mode a slot asks its board HELLO about once a second, and does
# nothing else while the board is the one it already handled.  "The
# station did nothing (more)" means something only once the station has
# looked: wait_probes waits until it has, then the test checks.

# line_start_traced DIR [keyline-jig run options...]: line_start with
# agents ($KEYLINE_AGENT) that log each request they answer (--verbose)
# to DIR/jig.log.
line_start_traced() {
	local dir=$1
	shift
	printf '#!/bin/sh\nexec "%s" --verbose "$@"\n' \
	    "$KEYLINE_AGENT" >"$dir/agent-verbose"
	chmod 755 "$dir/agent-verbose"
	line_start "$dir" --agent "$dir/agent-verbose" "$@"
}

# hellos DIR SERIAL: HELLOs board SERIAL has answered (line_start_traced).
hellos() {
	count "^keyline-agent\[$2\]: [a-z]+: HELLO seq " "$1/jig.log"
}

# wait_probes DIR N SERIAL...: until each board has answered N more HELLOs
# than now (N probe periods of its slot have passed).
wait_probes() {
	local dir=$1 n=$2 s want=()
	shift 2
	for s in "$@"; do
		want+=("$s" $(($(hellos "$dir" "$s") + n)))
	done
	_probed() {
		local i
		for ((i = 0; i < ${#want[@]}; i += 2)); do
			[ "$(hellos "$dir" "${want[i]}")" -ge "${want[i + 1]}" ] || return 1
		done
	}
	wait_for $((10 + 2 * n)) "$n more probes of board(s) $*" _probed
}

# unanswered_probes ERR SLOT: probes of a slot whose board is gone, from
# the stderr (ERR) of a station run with --verbose: nobody answers the
# HELLO, so the station sends it again and logs that.
unanswered_probes() {
	count "/slots/$2: HELLO seq [0-9]+: sent again" "$1"
}

# A loopback port nothing listens on (bash's /dev/tcp fails to connect).
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

# ---- station.conf and the boards ------------------------------------------

# Set key = value in [section] of an ini file (key must exist).
conf_set() {
	local file=$1 section=$2 key=$3 value=$4
	awk -v s="[$section]" -v k="$key" -v v="$value" '
	    /^\[/ { insec = ($0 == s) }
	    insec && $1 == k { print k " = " v; next }
	    { print }' "$file" >"$file.new" && mv "$file.new" "$file"
	grep -q "^$key = $value\$" "$file" || fail "conf_set $section.$key"
}

# Add key = value at the top of [section] of an ini file (key must not be
# set there yet).
conf_add() {
	local file=$1 section=$2 key=$3 value=$4
	awk -v s="[$section]" -v k="$key" -v v="$value" '
	    { print }
	    $0 == s { print k " = " v }' "$file" >"$file.new" && mv "$file.new" "$file"
	[ "$(grep -c "^$key = " "$file")" = 1 ] && grep -q "^$key = $value\$" "$file" ||
		fail "conf_add $section.$key"
}

# The summary line of a batch run's JSON output.
summary() {
	grep '"event":"summary"' "$1" | tail -n 1
}

board_dir() {
	echo "$T/boards/$(sed -n "${1}p" "$T/boards.list")"
}

# pkcs11-tool against one board's token.
board_p11() {
	local b=$1
	shift
	SOFTHSM2_CONF=$b/softhsm2.conf pkcs11-tool --module "$MODULE" "$@"
}

board_pin() {
	sed -n 's/^user_pin *= *//p' "$1/board.conf"
}
