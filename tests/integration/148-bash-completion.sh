#!/usr/bin/env bash
# packaging/bash-completion/keyline: sourced into a plain bash, its
# functions complete commands, verbs, options and their values as a shell
# would (COMP_WORDS/COMP_CWORD, COMPREPLY): --config completes *.conf
# files and directories, not other files; and every option it offers is
# one keyline's usage names.
. "$(dirname "$0")/lib.sh"

COMP=$top/packaging/bash-completion/keyline
mkdir -p "$T/c/lines"
touch "$T/c/line1.conf" "$T/c/line2.conf" "$T/c/notes.txt" "$T/c/audit.db"

# complete WORD...: what the completion offers for the last WORD (sorted,
# one line), run from $T/c.
complete_words() {
	(cd "$T/c" && bash --norc -c '
		. "$1"; shift
		COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
		COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
		f=$(complete -p "$1" | sed -E "s/.* -F ([^ ]+) .*/\1/")
		"$f" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
		[ ${#COMPREPLY[@]} -eq 0 ] || printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " "' sh "$COMP" "$@")
}

want() {
	local expect=$1 got
	shift
	got=$(complete_words "$@")
	[ "$got" = "$expect" ] || fail "'$*': got '$got', want '$expect'"
}

want "--help --version audit batch console help jig plant version " keyline ""
want "batch " keyline ba
want "console " keyline help co
want "--config --count " keyline batch --c
want "line1.conf line2.conf lines " keyline batch --config ""
want "line1.conf line2.conf lines " keyline console --config line
want "line2.conf " keyline console --config line2
want "line1.conf line2.conf lines " keyline jig scan -c ""
want "audit.db lines " keyline audit verify --db ""
want "csv json " keyline audit export --format ""
want "--help export verify " keyline audit ""
want "--config --help --slot " keyline jig power --
want "--help claim provisioned " keyline plant sql ""
want "" keyline batch --count ""
want "--allow-root " keyline console --a
want "--config " keyline-agent --co

# Every option offered is one the command takes.
for cv in batch console "audit verify" "audit export" "jig scan" \
    "jig power" "plant init"; do
	"$KL" $cv --help >"$T/usage" || fail "$cv --help"
	for o in $(complete_words keyline $cv --); do
		grep -q -- "$o\b" "$T/usage" || fail "$cv: completes $o, not in its usage"
	done
done
echo "PASS bash-completion"
