#!/usr/bin/env bash
# The manual and the help agree with the code: every page in docs/man/
# renders without a warning (man -l, groff -ww); every command has its
# page, its usage (keyline help CMD is CMD --help; -h on every verb), and
# every long option of its getopt tables is in both; station.conf(5) is
# what docs/man/gen-station-conf makes of docs/config.md, and holds every
# key of the config table in station/config/config.c, nothing more;
# keyline-agent(8) every option and board.conf key of the agent.
. "$(dirname "$0")/lib.sh"

command -v man >/dev/null || fail "man missing (scripts/setup: man-db)"
command -v groff >/dev/null || fail "groff missing (scripts/setup: groff-base)"
man=$top/docs/man
src=$top/station/cli

# ---- every page renders cleanly
pages=("$man"/*.[158])
[ ${#pages[@]} -ge 8 ] || fail "only ${#pages[@]} pages in docs/man"
for p in "${pages[@]}"; do
	w=$(MANWIDTH=80 man --warnings -l "$p" 2>&1 >/dev/null) ||
		fail "man -l $p failed: $w"
	[ -z "$w" ] || fail "man -l $p warns: $w"
	w=$(groff -ww -z -man "$p" 2>&1)
	[ -z "$w" ] || fail "groff -ww $p warns: $w"
	grep -q '^\.SH NAME' "$p" || fail "$p: no NAME"
done
# The check trips on a page with a roff mistake.
printf '.TH X 1\n.SH NAME\nx \\- y\n.BOGUS\n\\fIunclosed\n' >"$T/bad.1"
[ -n "$(groff -ww -z -man "$T/bad.1" 2>&1)" ] || fail "groff -ww missed a bad page"

# ---- version and help
v=$("$KL" --version) || fail "--version"
[ "$v" = "$("$KL" version)" ] || fail "--version and version differ"
grep -qE '^keyline [0-9]+\.[0-9]+\.[0-9]+ ' <<<"$v" || fail "version: $v"
"$KL" help >"$T/help" || fail "help exit $?"
"$KL" --help | cmp -s - "$T/help" || fail "--help differs from help"
rc=0; "$KL" >/dev/null 2>&1 || rc=$?
[ $rc = 2 ] || fail "keyline without a command: exit $rc, want 2"
rc=0; "$KL" help nonesuch >/dev/null 2>&1 || rc=$?
[ $rc = 2 ] || fail "help nonesuch: exit $rc, want 2"
cmds=$(sed -n '/^commands:/,/^$/s/^  \([a-z]*\) .*/\1/p' "$T/help")
[ "$(echo $cmds)" = "batch console audit jig plant version help" ] ||
	fail "commands: $cmds"
for c in $cmds; do
	grep -qE "^\.BI? $c( |\$)" "$man/keyline.1" || fail "keyline.1 lacks command $c"
done

# getopt_long long options of a C file.
longopts() {
	grep -oE '\{ *("[a-z-]+"|CLI_OPT_ALLOW_ROOT), *(no|required)_argument' "$1" |
	    sed -E 's/\{ *"?([A-Za-z_-]+)"?,.*/\1/; s/CLI_OPT_ALLOW_ROOT/allow-root/' |
	    sort -u
}

for c in batch console audit jig plant; do
	page=$man/keyline-$c.1
	[ -f "$page" ] || fail "no page for $c"
	"$KL" help $c >"$T/u1" || fail "help $c: exit $?"
	"$KL" $c --help >"$T/u2" || fail "$c --help: exit $?"
	"$KL" $c -h >"$T/u3" || fail "$c -h: exit $?"
	cmp -s "$T/u1" "$T/u2" && cmp -s "$T/u1" "$T/u3" ||
		fail "help $c, $c --help and $c -h differ"
	grep -q '^usage' "$T/u1" || fail "help $c: $(head -n 2 "$T/u1")"
	grep -q "keyline\\\\-$c (1)\|keyline\\\\-$c\$" "$man/keyline.1" ||
		fail "keyline.1 does not point to keyline-$c(1)"
	for o in $(longopts "$src/cmd_$c.c"); do
		grep -q -- "--$o\b" "$T/u1" || fail "$c: --$o not in its usage"
		grep -q -- "\\\\-\\\\-${o//-/\\\\-}" "$page" ||
			fail "$c: --$o not in keyline-$c.1"
	done
	# the reverse: an option the usage names must exist
	for o in $(grep -oE -- '--[a-z][a-z-]+' "$T/u1" | sort -u); do
		longopts "$src/cmd_$c.c" | grep -qx -- "${o#--}" ||
			fail "$c: usage names $o, which $c does not take"
	done
done
# -h on every verb: its own usage, exit 0.
for cv in "audit verify" "audit export" "jig scan" "jig power" "plant init" \
    "plant sql"; do
	"$KL" $cv -h >"$T/v" || fail "$cv -h: exit $?"
	grep -q "keyline $cv" "$T/v" || fail "$cv -h: $(head -n 3 "$T/v")"
	"$KL" $cv --help | cmp -s - "$T/v" || fail "$cv --help differs from -h"
done

# ---- station.conf(5) and the configuration
"$man/gen-station-conf" -n >"$T/gen.5" || fail "gen-station-conf"
diff -u "$man/station.conf.5" "$T/gen.5" >"$T/gen.diff" ||
	fail "station.conf.5 is not what docs/man/gen-station-conf makes of docs/config.md (run it): $(head -n 20 "$T/gen.diff")"
# (section, key) pairs: config.c's table, and the page's .SS/.B entries.
grep -oE '^	\{ "[a-z]+", "[a-z_]+", CT_' "$top/station/config/config.c" |
    sed -E 's/^	\{ "([a-z]+)", "([a-z_]+)".*/\1 \2/' | sort -u >"$T/keys.c"
[ "$(wc -l <"$T/keys.c")" -gt 50 ] || fail "config.c's key table not found"
awk '/^\.SS \[/ { s = substr($2, 2, length($2) - 2) }
    prev == ".TP" && /^\.B / && s != "slots" { print s, $2 }
    { prev = $0 }' "$man/station.conf.5" | sort -u >"$T/keys.5"
diff "$T/keys.c" "$T/keys.5" >"$T/keys.diff" ||
	fail "config.c (<) and station.conf.5 (>) disagree on keys: $(cat "$T/keys.diff")"

# ---- keyline-agent(8)
agent=$top/fixtures/agent/agent.c
for o in $(longopts "$agent"); do
	grep -q -- "\\\\-\\\\-$o\b" "$man/keyline-agent.8" ||
		fail "keyline-agent.8 lacks --$o"
done
keys=$(grep -oE '^	\{ "[a-z_]+", [01], conf_' "$agent" | cut -d'"' -f2)
[ -n "$keys" ] || fail "the agent's board.conf keys not found"
for k in $keys; do
	grep -qE "^\.B(R)? .*\b$k\b" "$man/keyline-agent.8" ||
		fail "keyline-agent.8 lacks board.conf key $k"
done
echo "PASS man-pages"
