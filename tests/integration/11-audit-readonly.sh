#!/usr/bin/env bash
# An auditor checks a copy of the audit log that is read-only, in a
# directory they cannot write: verify and export work, the file is not
# changed (no journal switch, no migration), and a forged row in such a
# copy is still found.  Run as an unprivileged user when we are root, so
# the permissions really apply.
. "$(dirname "$0")/lib.sh"

as_auditor() {
	if [ "$(id -u)" = 0 ]; then
		setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
	else
		"$@"
	fi
}

line_setup "$T" 2
line_start "$T"
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl" || fail "batch failed"
head=$(summary "$T/out.jsonl" | jq -r .audit_head)

ro=$(mktemp -d /tmp/keyline-ro.XXXXXX)
trap 'chmod 755 "$ro"; rm -rf "$ro"; line_cleanup "$T"; rm -rf "$T"' EXIT
cp "$T/audit.db" "$ro/audit.db"
chmod 444 "$ro/audit.db"
chmod 555 "$ro"
before=$(sha256sum <"$ro/audit.db")
as_auditor "$KL" audit verify --db "$ro/audit.db" --anchor "$head" >"$T/v.out" 2>"$T/v.err" ||
	{ cat "$T/v.err" >&2; fail "verify of a read-only copy failed"; }
grep -q "audit chain ok: 24 rows" "$T/v.out" || fail "verify said: $(cat "$T/v.out")"
as_auditor "$KL" audit export --db "$ro/audit.db" --format csv >"$T/a.csv" 2>>"$T/v.err" ||
	fail "export of a read-only copy failed"
[ "$(wc -l <"$T/a.csv")" -eq 25 ] || fail "export: $(wc -l <"$T/a.csv") lines"
[ "$(sha256sum <"$ro/audit.db")" = "$before" ] || fail "the read-only copy changed"
[ -z "$(ls -A "$ro" | grep -v -x audit.db)" ] || fail "files appeared beside the copy: $(ls -A "$ro")"

# The same with a forged row: still caught, naming the row.
chmod 755 "$ro"
chmod 644 "$ro/audit.db"
for trg in $(sqlite3 "$ro/audit.db" "SELECT name FROM sqlite_master WHERE type='trigger'"); do
	sqlite3 "$ro/audit.db" "DROP TRIGGER $trg"
done
sqlite3 "$ro/audit.db" "PRAGMA journal_mode=DELETE; UPDATE events SET device_id='forged' WHERE id=7" >/dev/null
chmod 444 "$ro/audit.db"
chmod 555 "$ro"
if as_auditor "$KL" audit verify --db "$ro/audit.db" >"$T/v2.out" 2>&1; then
	fail "verify passed a forged read-only copy"
fi
grep -q "row 7" "$T/v2.out" || fail "the forged row is not named: $(cat "$T/v2.out")"
echo "PASS audit-readonly"
