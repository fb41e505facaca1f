#!/usr/bin/env bash
# Secrets stay out of core dumps and out of same-user reach: the station
# (holding the CA PIN's token session, and the API token) and every agent
# (holding its board's token PIN) run with RLIMIT_CORE 0 and are not
# dumpable.  The whole line runs as an unprivileged user, because for a
# process that is not dumpable the kernel makes /proc/PID/{environ,mem}
# root's: the same user can no longer read them, nor ptrace it.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { echo "SKIP no-dumps: needs root to switch users"; exit 0; }
# An array, not a function: "$!" of a background command must be the
# process itself, not a subshell around it.
nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)

# Checks one running process; $2 names it in failures.
not_dumpable() {
	local pid=$1 what=$2
	awk '$1 == "Uid:" { exit !($2 == 65534 && $3 == 65534) }' "/proc/$pid/status" ||
		fail "$what ($pid) does not run as the unprivileged user"
	grep -Eq '^Max core file size +0 +0 ' "/proc/$pid/limits" ||
		fail "$what: core files not off: $(grep 'core file' "/proc/$pid/limits")"
	# Owned by root although the process is not: the kernel's mark of a
	# process that is not dumpable.
	[ "$(stat -c %u "/proc/$pid/environ")" = 0 ] ||
		fail "$what is dumpable: /proc/$pid/environ belongs to its user"
	if "${nobody[@]}" cat "/proc/$pid/environ" >/dev/null 2>&1; then
		fail "$what: its own user can read /proc/$pid/environ"
	fi
}

line_setup "$T" 2
pin_dir=$(dirname "$(line_pin_file "$T")")
# Everything is nobody's here, the jig too: $T is not lib.sh's station
# dir (root's, group-writable and sticky) but nobody's own, 755, as the
# agents insist above their import directories.
chown -R 65534:65534 "$T" "$pin_dir"
chmod 755 "$T"

# line_start, as the unprivileged user: the jig and its agents.
"${nobody[@]}" "$KEYLINE_BIN/keyline-jig" run --dir "$T" \
    --agent "$KEYLINE_BIN/keyline-agent" 2>>"$T/jig.log" &
jigpid=$!
echo "$jigpid" >"$T/jig.bgpid"
for ((i = 0; i < 300; i++)); do
	[ -e "$T/jig.ready" ] && break
	kill -0 "$jigpid" 2>/dev/null || break
	sleep 0.1
done
[ -e "$T/jig.ready" ] || { cat "$T/jig.log" >&2; fail "the jig did not come up"; }

"${nobody[@]}" "$KL_BIN" batch --line --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err" &
st=$!
for ((i = 0; i < 300; i++)); do
	[ "$(grep -c '"event":"passed"' "$T/out.jsonl" || true)" -ge 2 ] && break
	kill -0 "$st" 2>/dev/null || break
	sleep 0.1
done
[ "$(grep -c '"event":"passed"' "$T/out.jsonl" || true)" = 2 ] ||
	{ cat "$T/err" >&2; fail "the boards did not pass as the unprivileged user"; }

not_dumpable "$st" "the station"
n=0
for p in $(pgrep -P "$jigpid" || true); do
	tr '\0' ' ' <"/proc/$p/cmdline" | grep -q 'keyline-agent' || continue
	not_dumpable "$p" "agent $p"
	n=$((n + 1))
done
[ "$n" = 2 ] || fail "found $n agents under the jig, not 2"

kill -TERM "$st"
wait "$st" || fail "the station exited $? after SIGTERM"
echo "PASS no-dumps"
