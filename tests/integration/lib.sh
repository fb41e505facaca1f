# tests/integration/lib.sh: shared by the integration tests (sourced).
set -euo pipefail
top=${KEYLINE_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
. "$top/scripts/line.sh"
KL=$KEYLINE_BIN/keyline
MODULE=/usr/lib/softhsm/libsofthsm2.so

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# A fresh directory for this test, removed (jig stopped) on exit.
T=$(mktemp -d /tmp/keyline-it.XXXXXX)
trap 'line_cleanup "$T"; rm -rf "$T"' EXIT

# Set key = value in [section] of an ini file (key must exist).
conf_set() {
	local file=$1 section=$2 key=$3 value=$4
	awk -v s="[$section]" -v k="$key" -v v="$value" '
	    /^\[/ { insec = ($0 == s) }
	    insec && $1 == k { print k " = " v; next }
	    { print }' "$file" >"$file.new" && mv "$file.new" "$file"
	grep -q "^$key = $value\$" "$file" || fail "conf_set $section.$key"
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
