#!/usr/bin/env bash
# The Debian packages (make deb, docs/install.md) installed with dpkg -i
# into this machine: what they put where (dpkg -L), the keyline user and
# /var/lib/keyline that sysusers.d and tmpfiles.d make, the units as
# systemd-analyze verify sees them installed, a virtual line provisioned by
# the installed /usr/bin/keyline (as the keyline user, its CA PIN a
# systemd-style credential) talking to the installed keyline-agent, and a
# purge that removes the package's files and keeps the audit log.
#
# The packages are make deb's (build/deb/) when they are this tree's,
# else scripts/deb --quick builds them from make all's objects
# (build/deb-quick/, reused while the tree does not change).  It installs into the real system, so it runs
# only as root on a machine where keyline is not installed already (CI's
# is thrown away), and purges both packages at exit whatever happens.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || fail "140 installs packages: run it as root"
for p in keyline keyline-agent; do
	if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed; then
		fail "$p is installed on this machine; 140 installs and purges it itself (dpkg --purge keyline keyline-agent first)"
	fi
done

# make deb's packages when they are those of this tree; else a quick
# build of the same packages from make all's objects (no lintian, no
# debug symbols: make deb checks those).
t0=$(date +%s)
debs=$top/build/deb
if ! "$top/scripts/deb" --uptodate "$debs"; then
	debs=$top/build/deb-quick
	"$top/scripts/deb" --quick >"$T/deb.log" 2>&1 ||
		{ cat "$T/deb.log" >&2; fail "scripts/deb --quick failed"; }
fi
echo "packages in $debs ready in $(($(date +%s) - t0)) s"
deb=$(ls "$debs"/keyline_*.deb)
agent_deb=$(ls "$debs"/keyline-agent_*.deb)

# What was here before, so that clean-up removes only what the test made.
had_user=0
id -u keyline >/dev/null 2>&1 && had_user=1
had_state=0
[ -d /var/lib/keyline ] && had_state=1
db=/var/lib/keyline/it140-$$.db
cleanup_install() {
	dpkg --purge keyline-agent keyline >/dev/null 2>&1
	rm -f "$db" "$db-wal" "$db-shm"
	[ "$had_state" = 1 ] || rmdir /var/lib/keyline 2>/dev/null
	[ "$had_user" = 1 ] || userdel keyline 2>/dev/null
}
on_exit cleanup_install
# man-db's trigger rebuilds the whole manual database at every install and
# purge (most of the test's time); the pages are checked by path below.
if [ -e /var/lib/man-db/auto-update ]; then
	rm /var/lib/man-db/auto-update
	on_exit "touch /var/lib/man-db/auto-update"
fi

t0=$(date +%s)
dpkg -i "$deb" "$agent_deb" >"$T/dpkg-i.log" 2>&1 ||
	{ cat "$T/dpkg-i.log" >&2; fail "dpkg -i failed"; }
echo "installed in $(($(date +%s) - t0)) s"

# ---- what the packages hold ------------------------------------------------
dpkg -L keyline >"$T/keyline.list"
dpkg -L keyline-agent >"$T/agent.list"
for f in /usr/bin/keyline /lib/systemd/system/keyline-line@.service \
    /usr/lib/sysusers.d/keyline.conf /usr/lib/tmpfiles.d/keyline.conf \
    /lib/udev/rules.d/60-keyline.rules \
    /usr/share/doc/keyline/examples/station.conf \
    /usr/share/doc/keyline/install.md /usr/share/doc/keyline/copyright; do
	# dh_compress gzips documents over 4 kB.
	grep -qx "$f" "$T/keyline.list" || grep -qx "$f.gz" "$T/keyline.list" ||
		fail "dpkg -L keyline: no $f"
	[ -e "$f" ] || [ -e "$f.gz" ] || fail "$f is listed but not installed"
done
grep -qx /usr/bin/keyline-agent "$T/agent.list" || fail "dpkg -L keyline-agent: no /usr/bin/keyline-agent"
if [ -f "$top/fixtures/board/keyline-agent.service" ]; then
	grep -qx /lib/systemd/system/keyline-agent.service "$T/agent.list" ||
		fail "dpkg -L keyline-agent: no keyline-agent.service"
	# Installed for board images, not enabled on this machine.
	[ ! -e /etc/systemd/system/multi-user.target.wants/keyline-agent.service ] ||
		fail "keyline-agent.service was enabled by the package"
fi
# Every man page docs/man holds, in the package it documents.
for m in "$top"/docs/man/*.[158]; do
	[ -f "$m" ] || continue
	b=$(basename "$m")
	s=${b##*.}
	case $b in
	keyline-agent.*) list=$T/agent.list ;;
	*) list=$T/keyline.list ;;
	esac
	grep -qx "/usr/share/man/man$s/$b.gz" "$list" || fail "man page $b not in its package"
done
# Neither package carries a test build: no sanitizer runtime, no
# keyline-jig or fault-injecting agent.
for b in /usr/bin/keyline /usr/bin/keyline-agent; do
	ldd "$b" | grep -q 'libasan\|libubsan' && fail "$b is a sanitizer build"
done
grep -q '/keyline-jig$\|/keyline-agent-test$' "$T/keyline.list" "$T/agent.list" &&
	fail "a test binary is in a package"
# The agent links what it uses (--as-needed), not the station's libraries.
ldd /usr/bin/keyline-agent | grep -q 'libpq\|libmicrohttpd\|libsystemd\|libncurses' &&
	fail "keyline-agent links station-only libraries: $(ldd /usr/bin/keyline-agent)"
/usr/bin/keyline version | grep -q '^keyline ' || fail "keyline version"

# ---- the user and the state directory ------------------------------------
getent passwd keyline >"$T/pw" || fail "no keyline user after install (sysusers.d)"
uid=$(cut -d: -f3 "$T/pw")
[ "$uid" -lt 1000 ] || fail "keyline is not a system user (uid $uid)"
[ "$(cut -d: -f6 "$T/pw")" = /var/lib/keyline ] || fail "keyline's home: $(cat "$T/pw")"
[ "$(cut -d: -f7 "$T/pw")" = /usr/sbin/nologin ] || fail "keyline's shell: $(cat "$T/pw")"
[ "$(stat -c '%U:%G %a' /var/lib/keyline)" = "keyline:keyline 750" ] ||
	fail "/var/lib/keyline is $(stat -c '%U:%G %a' /var/lib/keyline) (tmpfiles.d)"

# ---- the units, as installed ----------------------------------------------
man_opt=
command -v man >/dev/null || man_opt=--man=no
systemd-analyze verify $man_opt keyline-line@it140.service >"$T/verify" 2>&1 ||
	{ cat "$T/verify" >&2; fail "systemd-analyze verify keyline-line@it140.service"; }
# Warnings (an unknown key is ignored, not an error) count too.
[ ! -s "$T/verify" ] || { cat "$T/verify" >&2; fail "systemd-analyze verify printed warnings"; }
if grep -qx /lib/systemd/system/keyline-agent.service "$T/agent.list"; then
	systemd-analyze verify $man_opt keyline-agent.service >"$T/verify-agent" 2>&1 ||
		{ cat "$T/verify-agent" >&2; fail "systemd-analyze verify keyline-agent.service"; }
	# It binds to the board's UART, which this machine need not have.
	grep -v 'dev-ttyS1.device' "$T/verify-agent" >"$T/verify-agent.rest" || true
	[ ! -s "$T/verify-agent.rest" ] ||
		{ cat "$T/verify-agent.rest" >&2; fail "keyline-agent.service: warnings"; }
fi
grep -q '^ExecStart=/usr/bin/keyline batch --line' /lib/systemd/system/keyline-line@.service ||
	fail "keyline-line@.service does not run the installed keyline in line mode"

# ---- a line provisioned by the installed binaries -------------------------
line_setup "$T" 2
# The station is the keyline user: it reads the line's files, its token
# (SoftHSM writes lock files), the jig's ptys as the udev rule would give
# them to its group; its CA PIN is a credential in a directory only it
# can read, as systemd's LoadCredential= makes it; its audit log is where
# the unit lets it write.
pin=$(cat "$(line_pin_file "$T")")
mkdir "$T/creds"
printf '%s' "$pin" >"$T/creds/ca-pin"
chown -R keyline:keyline "$T/creds"
chmod 500 "$T/creds"
chmod 400 "$T/creds/ca-pin"
sed -i -e 's/^pin_file = .*/pin_credential = ca-pin/' \
    -e '/^power = /d' -e '/^control = /d' -e '/^power_off_ms = /d' \
    -e "s|^audit_db = .*|audit_db = $db|" "$T/station.conf"
grep -q '^pin_credential = ca-pin$' "$T/station.conf" || fail "no pin_credential line"
chmod o+x "$T"
chgrp -R keyline "$T"
chmod -R g+rwX "$T/station"
chmod g+r "$T/station.conf"
KEYLINE_AGENT=/usr/bin/keyline-agent line_start "$T"
for s in "$T"/slots/*; do
	chgrp keyline "$(readlink -f "$s")"
	chmod g+rw "$(readlink -f "$s")"
done
grep -q "/usr/bin/keyline-agent" "$T/jig.log" 2>/dev/null ||
	pgrep -f "^/usr/bin/keyline-agent" >/dev/null ||
	fail "the jig does not run the installed agent"

as_keyline() {
	setpriv --reuid=keyline --regid=keyline --init-groups \
	    env -i PATH=/usr/bin:/bin CREDENTIALS_DIRECTORY="$T/creds" "$@"
}
# Without the credential directory the station refuses, naming the key.
rc=0
setpriv --reuid=keyline --regid=keyline --init-groups env -i PATH=/usr/bin:/bin \
    /usr/bin/keyline batch --config "$T/station.conf" >"$T/nocred.out" 2>"$T/nocred.err" || rc=$?
[ "$rc" = 2 ] || fail "no \$CREDENTIALS_DIRECTORY: exit $rc, want 2"
grep -q 'pin_credential: \$CREDENTIALS_DIRECTORY is not set' "$T/nocred.err" ||
	{ cat "$T/nocred.err" >&2; fail "the refusal does not name pin_credential"; }

rc=0
as_keyline /usr/bin/keyline batch --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err" || rc=$?
[ "$rc" = 0 ] || { tail -n 20 "$T/err" >&2; fail "installed keyline batch exited $rc"; }
[ "$(count '"event":"passed"' "$T/out.jsonl")" = 2 ] ||
	{ tail -n 20 "$T/err" >&2; fail "2 boards did not pass: $(summary "$T/out.jsonl")"; }
[ "$(stat -c %U "$db")" = keyline ] || fail "the audit log is not the keyline user's"
as_keyline /usr/bin/keyline audit verify --db "$db" >"$T/verify-db" 2>&1 ||
	{ cat "$T/verify-db" >&2; fail "audit verify of the installed station's log"; }
rows=$(summary "$T/out.jsonl" | sed 's/.*"audit_rows":\([0-9]*\).*/\1/')
[ "$rows" -gt 0 ] || fail "no audit rows"
line_stop "$T"

# ---- purge: the package's files go, the audit log stays --------------------
before=$(sha256sum "$db" | cut -d' ' -f1)
t0=$(date +%s)
dpkg --purge keyline-agent keyline >"$T/purge.log" 2>&1 ||
	{ cat "$T/purge.log" >&2; fail "dpkg --purge failed"; }
echo "purged in $(($(date +%s) - t0)) s"
while read -r f; do
	[ -d "$f" ] && continue
	[ ! -e "$f" ] || fail "purge left $f"
done < <(cat "$T/keyline.list" "$T/agent.list")
dpkg-query -W -f='${Status}' keyline 2>/dev/null | grep -q 'installed' &&
	fail "keyline still installed after purge"
[ -f "$db" ] || fail "purge removed the audit log $db"
[ "$(sha256sum "$db" | cut -d' ' -f1)" = "$before" ] || fail "purge changed the audit log"
[ -d /var/lib/keyline ] || fail "purge removed /var/lib/keyline"
# Debian keeps system users on purge (files they own may remain, like
# this log): the log stays readable to the account that wrote it.
id -u keyline >/dev/null 2>&1 || fail "purge removed the keyline user"
echo "PASS deb-install"
