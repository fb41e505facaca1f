#!/usr/bin/env bash
# tests/integration/agent_smoke.sh: the virtual jig comes up with one agent
# per board, keeps relaying when a board dies, and stops cleanly on SIGTERM
# without leaving agents behind.  The agent that goes on boards has no
# fault injection: only keyline-agent-test, the virtual jig's, does.
set -euo pipefail
top=${KEYLINE_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
bin=${KEYLINE_BIN:-$top/build/bin}
jig=$bin/keyline-jig
agent=$bin/keyline-agent

fail() {
	echo "FAIL agent_smoke: $*" >&2
	exit 1
}

command -v softhsm2-util >/dev/null ||
	fail "softhsm2-util not installed: run scripts/setup"
[ -x "$jig" ] && [ -x "$agent" ] || fail "build $jig and $agent first"

T=$(mktemp -d /tmp/keyline-smoke.XXXXXX)
jigpid=
cleanup() {
	if [ -n "$jigpid" ] && kill -0 "$jigpid" 2>/dev/null; then
		kill -TERM "$jigpid" 2>/dev/null || true
		wait "$jigpid" 2>/dev/null || true
	fi
	[ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

# The pid of the agent of one board: a child of the jig whose command line
# names that board's board.conf (matched on the exact path, killed by pid).
agent_pid() {
	local conf=$1 p
	for p in $(pgrep -P "$jigpid" || true); do
		if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null |
		    grep -qF -- "--config $conf "; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

"$jig" init --dir "$T" --boards 2 --keygen-ms 5 2>"$T/init.log" ||
	fail "init: $(cat "$T/init.log")"
[ "$(wc -l <"$T/boards.list")" -eq 2 ] || fail "boards.list"
for s in $(cat "$T/boards.list"); do
	[ -f "$T/boards/$s/board.conf" ] || fail "no board.conf for $s"
	[ -d "$T/boards/$s/rootfs/var/sota/import" ] || fail "no import dir"
done
# init refuses to overwrite boards unless --force.
if "$jig" init --dir "$T" --boards 2 2>/dev/null; then
	fail "init overwrote existing boards"
fi

"$jig" run --dir "$T" --agent "$agent" 2>"$T/jig.log" &
jigpid=$!
for ((i = 0; i < 100; i++)); do
	[ -e "$T/jig.ready" ] && break
	kill -0 "$jigpid" 2>/dev/null || fail "jig died: $(cat "$T/jig.log")"
	sleep 0.1
done
[ -e "$T/jig.ready" ] || fail "jig not ready: $(cat "$T/jig.log")"
[ "$(cat "$T/jig.pid")" = "$jigpid" ] || fail "jig.pid"

for n in 1 2; do
	[ -L "$T/slots/$n" ] || fail "no symlink slots/$n"
	target=$(readlink "$T/slots/$n")
	[[ $target == /dev/pts/* ]] || fail "slots/$n -> $target, not a pty"
	[ -c "$target" ] || fail "$target is not a character device"
done

b1=$T/boards/$(sed -n 1p "$T/boards.list")/board.conf
b2=$T/boards/$(sed -n 2p "$T/boards.list")/board.conf
sleep 0.5
a1=$(agent_pid "$b1") || fail "agent 1 not running: $(cat "$T/jig.log")"
a2=$(agent_pid "$b2") || fail "agent 2 not running: $(cat "$T/jig.log")"

# A board loses power: the jig logs it and keeps relaying the other slot.
kill -TERM "$a2"
for ((i = 0; i < 50; i++)); do
	grep -q "slot 2: agent of board .* exited" "$T/jig.log" && break
	sleep 0.1
done
grep -q "slot 2: agent of board .* exited" "$T/jig.log" ||
	fail "agent exit not logged: $(cat "$T/jig.log")"
kill -0 "$jigpid" 2>/dev/null || fail "jig died with its agent"
kill -0 "$a1" 2>/dev/null || fail "agent 1 died too"
[ -L "$T/slots/2" ] || fail "slot 2 link removed while the jig runs"

kill -TERM "$jigpid"
rc=0
wait "$jigpid" || rc=$?
jigpid=
[ "$rc" -eq 0 ] || fail "jig exited $rc: $(cat "$T/jig.log")"
if kill -0 "$a1" 2>/dev/null; then
	fail "agent $a1 left behind"
fi
[ ! -e "$T/jig.ready" ] || fail "jig.ready left behind"
grep -q "bytes relayed" "$T/jig.log" || fail "no summary line"

# A board.conf asking for a fault: the board agent refuses to start and
# says why; the test build takes it (and then stops later, at its token or
# its tty, which these runs do not give it).
sed 's/^fault = none$/fault = same-key/' "$b1" >"$T/fault.conf"
grep -q '^fault = same-key$' "$T/fault.conf" || fail "no fault line in board.conf"
if "$agent" --config "$T/fault.conf" --tty "$T/no-tty" 2>"$T/fault.err"; then
	fail "the board agent started with a fault configured"
fi
grep -q "fault injection is built only into keyline-agent-test" "$T/fault.err" ||
	fail "board agent's refusal unclear: $(cat "$T/fault.err")"
"$bin/keyline-agent-test" --config "$T/fault.conf" --tty "$T/no-tty" \
    2>"$T/fault-test.err" && fail "the test agent ran without a tty"
[ -s "$T/fault-test.err" ] && ! grep -qi "fault\|board.conf" "$T/fault-test.err" ||
	fail "test agent did not take the fault: $(cat "$T/fault-test.err")"
# With no fault asked for, the board agent starts as ever.
if "$agent" --config "$b1" --tty "$T/no-tty" 2>"$T/nofault.err"; then
	fail "agent ran without a tty"
fi
[ -s "$T/nofault.err" ] && ! grep -qi "fault\|board.conf" "$T/nofault.err" ||
	fail "board agent refused a plain board.conf: $(cat "$T/nofault.err")"

echo "PASS agent_smoke"
