# Keyline: plain Makefile with explicit object lists.
#
#   make            release binaries in build/bin
#   make test       sanitizer build, unit tests, integration tests
#   make demo       provision a jig of 8 virtual boards (build/demo)
#   make demo-qemu  provision two Linux boards in QEMU (build/demo-qemu)
#   make bench      throughput figures (64 boards, manual-way comparison)
#   make bench-http the status API under wrk load while 32 boards provision
#   make fuzz       every libFuzzer target for FUZZ_SECONDS (docs/fuzzing.md)
#   make agent-aarch64  the board agent for aarch64 boards (docs/cross-build.md)
#
# Every target that needs Debian packages runs scripts/setup first.

CC ?= cc
PKGS = openssl libp11 sqlite3 jansson zlib libzip p11-kit-1 ncursesw libmicrohttpd \
	libusb-1.0 libpq libsystemd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN = -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -I. $(PKG_CFLAGS) $(WARN) -g -pthread
CFLAGS_REL = $(CFLAGS_BASE) -O2 -D_FORTIFY_SOURCE=2
SANFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined
CFLAGS_SAN = $(CFLAGS_BASE) -O1 $(SANFLAGS)
LDLIBS = $(PKG_LIBS) -ldl -pthread

# Objects shared by the station and the board agent.
COMMON_SRC = common/err.c common/log.c common/buf.c common/fsutil.c \
	common/secret.c \
	station/link/frame.c \
	station/link/proto.c station/link/serial.c common/ini.c
HSM_SRC = hsm/hsm.c
DB_SRC = db/audit.c
# The plant registry on PostgreSQL (docs/plant.md).
PLANT_SRC = db/plant.c db/plant_schema.c db/plant_admin.c db/pgconn.c db/ship.c
STATION_SRC = station/config/config.c station/config/devid.c station/ca/certcheck.c \
	station/ca/ca.c station/ca/ca_local.c station/ca/ca_cfssl.c station/ca/ca_cmp.c \
	station/link/link.c station/config/ota.c \
	station/engine/line.c station/engine/runner.c station/engine/steps.c \
	station/engine/reconcile.c \
	station/station.c \
	station/cli/cli.c station/cli/cmd_batch.c station/cli/cmd_console.c \
	station/cli/cmd_audit.c station/cli/cmd_plant.c \
	ui/console.c ui/http.c ui/http_parse.c
# Real USB jigs (docs/usb-jig.md).
STATION_SRC += station/checkpoint.c
# Readiness, watchdog and journal fields under systemd (docs/install.md).
STATION_SRC += station/service.c
STATION_SRC += station/jig/usbjig.c station/jig/vjig.c station/cli/cmd_jig.c
KEYLINE_MAIN = station/cli/main.c
# notify.c: systemd's readiness datagram, without libsystemd (notify.h).
AGENT_NOTIFY_SRC = fixtures/agent/notify.c
AGENT_SRC = fixtures/agent/agent.c $(AGENT_NOTIFY_SRC)
JIG_SRC = fixtures/jig/jig.c fixtures/jig/jigctl.c
# The QEMU boards' power switch (scripts/qemu-board power, docs/boards.md).
QPOWER_SRC = fixtures/board/qemu-power.c fixtures/jig/jigctl.c

LIB_SRC = $(COMMON_SRC) $(HSM_SRC) $(DB_SRC) $(PLANT_SRC) $(STATION_SRC)

UNIT_TESTS = test_buf test_frame test_proto test_ini test_config test_devid \
	test_certcheck test_audit test_hsm test_ca_local test_link \
	test_ota test_engine test_agent test_ca_cfssl test_ca_cmp test_http

# Runs under umockdev-wrapper (tests/run-unit): fake USB devices in sysfs.
UNIT_TESTS += test_usbjig
UNIT_TESTS += test_audit_state
UNIT_TESTS += test_audit_csv
UNIT_TESTS += test_jigctl
UNIT_TESTS += test_notify
UNIT_TESTS += test_secret

UNIT_TESTS += test_audit_checkpoint
REL = build
SAN = build/san

rel_obj = $(patsubst %.c,$(REL)/obj/%.o,$(1))
san_obj = $(patsubst %.c,$(SAN)/obj/%.o,$(1))

BINS = keyline keyline-agent keyline-jig keyline-agent-test
BINS += keyline-qemu-power

all: $(addprefix $(REL)/bin/,$(BINS))

# Helpers the integration tests run (not part of the product).
TEST_TOOLS = ttystall rechain

san: $(addprefix $(SAN)/bin/,$(BINS)) $(addprefix $(SAN)/tests/,$(UNIT_TESTS)) \
	$(addprefix $(SAN)/tools/,$(TEST_TOOLS))

$(SAN)/tools/%: tests/tools/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_SAN) -o $@ $< -lutil

$(REL)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_REL) -MMD -MP -c -o $@ $<

$(SAN)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_SAN) -MMD -MP -c -o $@ $<

# keyline-agent-test: the board agent with test-only fault injection, for
# the virtual jig (docs/jig.md, "Faults").  Never goes on a board: the
# agent built without KEYLINE_AGENT_FAULTS has no fault code at all.
$(REL)/obj-faults/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_REL) -DKEYLINE_AGENT_FAULTS -MMD -MP -c -o $@ $<

$(SAN)/obj-faults/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_SAN) -DKEYLINE_AGENT_FAULTS -MMD -MP -c -o $@ $<

# --- release binaries
$(REL)/bin/keyline: $(call rel_obj,$(LIB_SRC) $(KEYLINE_MAIN))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_REL) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(REL)/bin/keyline-agent: $(call rel_obj,$(COMMON_SRC) $(HSM_SRC) $(AGENT_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_REL) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(REL)/bin/keyline-jig: $(call rel_obj,$(COMMON_SRC) $(JIG_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_REL) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(REL)/bin/keyline-agent-test: $(call rel_obj,$(COMMON_SRC) $(HSM_SRC)) \
    $(patsubst %.c,$(REL)/obj-faults/%.o,$(AGENT_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_REL) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(REL)/bin/keyline-qemu-power: $(call rel_obj,$(COMMON_SRC) $(QPOWER_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_REL) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# --- sanitizer binaries (used by make test)
$(SAN)/bin/keyline: $(call san_obj,$(LIB_SRC) $(KEYLINE_MAIN))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_SAN) -o $@ $^ $(LDLIBS)

$(SAN)/bin/keyline-agent: $(call san_obj,$(COMMON_SRC) $(HSM_SRC) $(AGENT_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_SAN) -o $@ $^ $(LDLIBS)

$(SAN)/bin/keyline-jig: $(call san_obj,$(COMMON_SRC) $(JIG_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_SAN) -o $@ $^ $(LDLIBS)

$(SAN)/bin/keyline-qemu-power: $(call san_obj,$(COMMON_SRC) $(QPOWER_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_SAN) -o $@ $^ $(LDLIBS)

$(SAN)/bin/keyline-agent-test: $(call san_obj,$(COMMON_SRC) $(HSM_SRC)) \
    $(patsubst %.c,$(SAN)/obj-faults/%.o,$(AGENT_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_SAN) -o $@ $^ $(LDLIBS)

# --- the board agent cross-built for aarch64 (make agent-aarch64;
# docs/cross-build.md): Debian's cross compiler against the :arm64
# libraries scripts/setup installs.  It links only what it uses:
# libcrypto, zlib and libp11, whose -dev package cannot be installed for
# two architectures at once, so the header is the amd64 one (the same
# text) and the library its arm64 runtime package's libp11.so.3.  The
# host's pkg-config flags (PKG_CFLAGS) are left out: they are amd64's.
AARCH64 = build/aarch64
AARCH64_CC = aarch64-linux-gnu-gcc
AARCH64_PKG_CONFIG = PKG_CONFIG_PATH= PKG_CONFIG_SYSROOT_DIR= \
	PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig \
	pkg-config
CFLAGS_AARCH64 = $(filter-out $(PKG_CFLAGS),$(CFLAGS_REL)) \
	$(shell $(AARCH64_PKG_CONFIG) --cflags libcrypto zlib p11-kit-1)
LDLIBS_AARCH64 = -l:libp11.so.3 \
	$(shell $(AARCH64_PKG_CONFIG) --libs libcrypto zlib) -pthread

$(AARCH64)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(AARCH64_CC) $(CFLAGS_AARCH64) -MMD -MP -c -o $@ $<

$(AARCH64)/bin/keyline-agent: \
    $(patsubst %.c,$(AARCH64)/obj/%.o,$(COMMON_SRC) $(HSM_SRC) $(AGENT_SRC))
	@mkdir -p $(dir $@)
	$(AARCH64_CC) $(CFLAGS_AARCH64) -o $@ $^ $(LDLIBS_AARCH64)

agent-aarch64: setup
	@$(MAKE) --no-print-directory $(AARCH64)/bin/keyline-agent

# --- unit tests (CMocka): each names exactly the objects it needs
BASE_SRC = common/err.c common/log.c common/buf.c common/fsutil.c \
	common/secret.c
T_test_buf = $(BASE_SRC)
T_test_frame = $(BASE_SRC) station/link/frame.c
T_test_proto = $(BASE_SRC) station/link/proto.c
T_test_ini = $(BASE_SRC) common/ini.c
T_test_config = $(BASE_SRC) common/ini.c station/config/devid.c station/config/config.c \
	station/link/serial.c
T_test_devid = $(BASE_SRC) station/config/devid.c
T_test_jigctl = $(BASE_SRC) fixtures/jig/jigctl.c
T_test_notify = $(BASE_SRC) $(AGENT_NOTIFY_SRC)
T_test_certcheck = $(BASE_SRC) station/ca/certcheck.c
T_test_audit = $(BASE_SRC) $(DB_SRC)
T_test_audit_state = $(BASE_SRC) $(DB_SRC)
T_test_audit_csv = $(BASE_SRC) $(DB_SRC)
T_test_secret = $(LIB_SRC)
T_test_audit_checkpoint = $(BASE_SRC) $(DB_SRC)
T_test_hsm = $(BASE_SRC) $(HSM_SRC)
T_test_ca_local = $(BASE_SRC) $(HSM_SRC) station/ca/certcheck.c station/ca/ca.c \
	station/ca/ca_local.c
T_test_link = $(COMMON_SRC) station/link/link.c
T_test_ota = $(BASE_SRC) common/ini.c station/config/devid.c station/config/config.c \
	station/link/serial.c station/config/ota.c
T_test_engine = $(LIB_SRC)
T_test_agent = $(COMMON_SRC) station/link/link.c
T_test_ca_cfssl = $(BASE_SRC) $(HSM_SRC) station/ca/certcheck.c station/ca/ca.c \
	station/ca/ca_cfssl.c
T_test_ca_cmp = $(BASE_SRC) $(HSM_SRC) station/ca/certcheck.c station/ca/ca.c \
	station/ca/ca_cmp.c

T_test_http = $(BASE_SRC) ui/http_parse.c
T_test_usbjig = $(LIB_SRC)
# Only the test links libumockdev (GLib): the station never does.
UMOCKDEV_CFLAGS := $(shell pkg-config --cflags umockdev-1.0 2>/dev/null)
UMOCKDEV_LIBS := $(shell pkg-config --libs umockdev-1.0 2>/dev/null)
$(SAN)/tests/test_usbjig: CFLAGS_SAN += $(UMOCKDEV_CFLAGS)
$(SAN)/tests/test_usbjig: LDLIBS += $(UMOCKDEV_LIBS)

# rechain rewrites a log the way an attacker with the file would
# (15-audit-checkpoint), hashing rows with the audit module's own code.
$(SAN)/tools/rechain: tests/tools/rechain.c $(call san_obj,$(BASE_SRC) $(DB_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_SAN) -o $@ $^ $(LDLIBS)

.SECONDEXPANSION:
$(SAN)/tests/%: tests/unit/%.c $$(call san_obj,$$(T_$$*))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_SAN) -o $@ $^ $(LDLIBS) -lcmocka

setup:
	@scripts/setup

unit: san
	@scripts/check-banned
	@KEYLINE_BIN=$(abspath $(SAN))/bin \
	    tests/run-unit $(addprefix $(SAN)/tests/,$(UNIT_TESTS))

# The QEMU boards (130-qemu-board) run the release build of the test
# agent: under TCG the sanitizer build's boot and run cost twice as long.
integration: san all $(AARCH64)/bin/keyline-agent
	@KEYLINE_QEMU_AGENT=$(abspath $(REL))/bin/keyline-agent-test tests/run-integration

# Everything built first, two compilers at a time (CI has two cores);
# then the tests in order.
test: setup
	@$(MAKE) --no-print-directory -j2 san all $(AARCH64)/bin/keyline-agent \
	    $(FUZZ_BINS)
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory fuzz-short

demo: setup
	@$(MAKE) --no-print-directory all
	@scripts/demo

# Two stations on two virtual lines sharing one plant registry on a
# throw-away PostgreSQL server (docs/plant.md).
demo-plant: setup
	@$(MAKE) --no-print-directory all
	@scripts/demo-plant

# Two Linux boards in QEMU provisioned over their UARTs; prints where
# their disk images are (docs/boards.md).
demo-qemu: setup
	@$(MAKE) --no-print-directory all
	@KEYLINE_BIN=$(abspath $(REL))/bin scripts/demo-qemu

bench: setup
	@$(MAKE) --no-print-directory all
	@scripts/bench

bench-http: setup
	@$(MAKE) --no-print-directory all
	@scripts/bench-http

# What the plant registry costs per board, three stations on one server,
# and where one PostgreSQL server saturates (docs/plant.md).
bench-plant: setup
	@$(MAKE) --no-print-directory all
	@scripts/bench-plant

# Debian packages keyline and keyline-agent in build/deb/, lintian-checked
# (scripts/deb; docs/install.md).
deb: setup
	@scripts/deb

clean:
	rm -rf build

.PHONY: all san setup unit integration test demo demo-plant demo-qemu bench bench-http bench-plant clean \
	agent-aarch64 deb
.SECONDARY:

-include $(shell find $(sort $(REL) $(SAN) $(AARCH64)) -name '*.d' -type f -path '*/obj*' 2>/dev/null)

# One-line mutations of the checks that matter, each against the tests that
# should notice it (docs/mutants.md); MUTANTS="name ..." for some.  Not part
# of make test: it rebuilds and reruns tests once per entry.
mutants: setup
	@tests/mutants/run $(MUTANTS)
.PHONY: mutants

# libFuzzer targets: make fuzz, make fuzz-short (docs/fuzzing.md).
include tests/fuzz/fuzz.mk
