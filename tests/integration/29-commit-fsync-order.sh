#!/usr/bin/env bash
# The board's COMMIT is durable in the right order, as strace sees the
# real agent do it: each staged file was fsynced before COMMIT; the
# journal's temp file is fsynced before it is renamed into place; the
# import directory is fsynced after that rename and before anything the
# journal names moves (a staged file renamed, a token object touched),
# again after the renames, and only then is the journal removed.  Without
# those fsyncs a power cut can leave an empty journal or half a set, and
# no other test would notice: nothing cuts the power under the kernel.
. "$(dirname "$0")/lib.sh"

command -v strace >/dev/null || fail "strace is not installed (scripts/setup installs it)"
line_setup "$T" 1
imp=$(board_dir 1)/rootfs/var/sota/import
line_start "$T"
# strace attaches to the running agent (the integration tests run as root:
# the agent makes itself non-dumpable, and attaching to such a process
# takes CAP_SYS_PTRACE).  Detached again before the jig stops it, also
# when the test fails.
agent=$(sed -n 's/.*slot 1: board .*: agent pid \([0-9]*\) on .*/\1/p' "$T/jig.log" | tail -n 1)
[ -n "$agent" ] || fail "no agent pid in $T/jig.log"
strace -p "$agent" -o "$T/agent.strace" -y \
    -e trace=openat,fsync,fdatasync,rename,renameat,renameat2,unlinkat 2>"$T/strace.err" &
st=$!
trap 'kill -INT $st 2>/dev/null || true; wait $st 2>/dev/null || true; line_cleanup "$T"; rm -rf "$T"' EXIT
for ((i = 0; i < 100; i++)); do
	grep -q "Process $agent attached" "$T/strace.err" && break
	kill -0 $st 2>/dev/null || break
	sleep 0.1
done
grep -q "Process $agent attached" "$T/strace.err" ||
	fail "strace cannot attach to the agent (needs root or CAP_SYS_PTRACE): $(cat "$T/strace.err")"
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err.log" ||
	{ tail "$T/err.log" >&2; fail "the board did not pass under strace"; }
grep -q '"event":"passed"' "$T/out.jsonl" || fail "the board did not pass"
kill -INT $st
wait $st || true
tr=$T/agent.strace
[ -s "$tr" ] || fail "no trace written"

# Line numbers in the trace (calls of one thread, in order); -y shows each
# fd's path, so "fsync(7</...>)" names what was synced.
first() { grep -n -m1 -E "$1" "$tr" | cut -d: -f1; }
# (The pattern through the environment: awk -v would eat its backslashes.)
after() { RE=$2 awk -v n="$1" 'NR > n && $0 ~ ENVIRON["RE"] { print NR; exit }' "$tr"; }
dir_re="fsync\\([0-9]+<${imp//./\\.}>\\) = 0"
open_j=$(first '^openat\(.*"\.keyline-commit\.keyline-tmp".* = [0-9]+<')
[ -n "$open_j" ] || fail "the agent never created the journal's temp file: $(head -c 2000 "$tr")"
fsync_j=$(after "$open_j" 'fsync\([0-9]+<[^>]*/\.keyline-commit\.keyline-tmp>\) = 0')
ren_j=$(after "$open_j" 'rename(at2?)?\(.*"\.keyline-commit\.keyline-tmp".*"\.keyline-commit"')
[ -n "$ren_j" ] || fail "the journal was never renamed into place"
[ -n "$fsync_j" ] && [ "$fsync_j" -lt "$ren_j" ] ||
	fail "the journal's temp file was not fsynced before its rename (open at line $open_j, rename at $ren_j, fsync at ${fsync_j:-none})"
fsync_d=$(after "$ren_j" "$dir_re")
move=$(after "$ren_j" '/tokens/|rename(at2?)?\(.*"\.[^"]*\.keyline-tmp", [0-9]+<[^>]*>, "[^.]')
[ -n "$move" ] || fail "nothing moved after the journal (no token access, no staged file renamed)"
[ -n "$fsync_d" ] && [ "$fsync_d" -lt "$move" ] ||
	fail "the import directory was not fsynced between the journal's rename (line $ren_j) and the first move (line $move: $(sed -n "${move}p" "$tr"))"
last_mv=$(grep -n -E 'rename(at2?)?\(.*"\.client\.pem\.keyline-tmp"' "$tr" | tail -n 1 | cut -d: -f1)
unl_j=$(after "$ren_j" 'unlinkat\(.*"\.keyline-commit", 0\) = 0')
[ -n "$last_mv" ] && [ -n "$unl_j" ] || fail "client.pem was not renamed, or the journal not removed"
fsync_d2=$(after "$last_mv" "$dir_re")
[ -n "$fsync_d2" ] && [ "$fsync_d2" -lt "$unl_j" ] ||
	fail "the import directory was not fsynced between the renames (line $last_mv) and the journal's removal (line $unl_j)"
[ -n "$(after "$unl_j" "$dir_re")" ] || fail "the journal's removal was not fsynced"
# Each staged file was fsynced before COMMIT could rename it.
for f in client.pem root.crt gateway.url; do
	t="\\.${f//./\\.}\\.keyline-tmp"
	o=$(first "^openat\\(.*\"$t\".* = [0-9]+<")
	r=$(first "rename(at2?)?\\(.*\"$t\", [0-9]+<[^>]*>, \"${f//./\\.}\"")
	[ -n "$o" ] && [ -n "$r" ] || fail "$f was not staged and renamed"
	s=$(after "$o" "fsync\\([0-9]+<[^>]*/$t>\\) = 0")
	[ -n "$s" ] && [ "$s" -lt "$r" ] ||
		fail "$f's temp file was not fsynced before its rename (open at line $o, rename at $r, fsync at ${s:-none})"
done
echo "PASS commit-fsync-order"
