# tests/integration/pg.sh: the throw-away PostgreSQL server the tests use
# is scripts/pg.sh, which make demo-plant uses too.
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/pg.sh"
