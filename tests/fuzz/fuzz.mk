# tests/fuzz/fuzz.mk: libFuzzer targets, included from the top Makefile
# (docs/fuzzing.md).
#
#   make fuzz                    every target FUZZ_SECONDS (60) on a copy of
#                                its seed corpus; executions, exec/s, crashes
#   make fuzz-short              the same for FUZZ_SHORT_SECONDS (3): make test
#   make fuzz-build              build the targets only
#   make fuzz FUZZ_TARGETS=frame FUZZ_SECONDS=600
#
# A target is tests/fuzz/fuzz_<name>.c with LLVMFuzzerTestOneInput and a
# seed corpus in tests/fuzz/corpus/<name>/.  Adding one: its name in
# FUZZ_TARGETS and, when it links project code, FZ_<name>_SRC with the
# sources it needs (objects are built with clang into FUZZ_OUT/obj, apart
# from the gcc builds).  Optional: FZ_<name>_CFLAGS, FZ_<name>_LIBS.

FUZZ_CC ?= clang
FUZZ_OUT ?= build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_SHORT_SECONDS ?= 3
# Targets run this many at a time (default: one per CPU).
FUZZ_JOBS ?= $(shell nproc 2>/dev/null || echo 1)

FUZZ_TARGETS = frame proto link ini config ota cfssl audit agent boardconf \
	http journal csr

FUZZ_SAN = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
FUZZ_CFLAGS = $(CFLAGS_BASE) -O1 $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
	-DKEYLINE_FUZZ

# What each target links besides its own file.
FZ_frame_SRC = $(BASE_SRC) station/link/frame.c
FZ_proto_SRC = $(BASE_SRC) station/link/proto.c
FZ_link_SRC = $(BASE_SRC) station/link/frame.c station/link/proto.c station/link/link.c \
	station/config/devid.c
FZ_ini_SRC = $(BASE_SRC) common/ini.c
FZ_config_SRC = $(BASE_SRC) common/ini.c station/config/devid.c station/config/config.c \
	station/link/serial.c
FZ_ota_SRC = $(FZ_config_SRC) station/config/ota.c
FZ_cfssl_SRC = $(BASE_SRC) $(HSM_SRC) station/ca/certcheck.c station/ca/ca.c \
	station/ca/ca_cfssl.c
FZ_audit_SRC = $(BASE_SRC) $(DB_SRC)
# fuzz_agent.c and fuzz_boardconf.c include fixtures/agent/agent.c (built
# without its main) to reach its static request readers.
FZ_agent_SRC = $(COMMON_SRC) $(HSM_SRC) $(AGENT_NOTIFY_SRC)
# agent.c is written for gcc: clang's extra warnings are not for here.
FZ_agent_CFLAGS = -Wno-unused-function -Wno-string-plus-int
FZ_boardconf_SRC = $(COMMON_SRC) $(HSM_SRC) $(AGENT_NOTIFY_SRC)
FZ_boardconf_CFLAGS = $(FZ_agent_CFLAGS)
FZ_journal_SRC = $(COMMON_SRC) $(HSM_SRC) $(AGENT_NOTIFY_SRC)
FZ_journal_CFLAGS = $(FZ_agent_CFLAGS)
# A board's CSR read without OpenSSL's parser.
FZ_csr_SRC = $(BASE_SRC) station/ca/certcheck.c
# The status API's request-target parser, without libmicrohttpd.
FZ_http_SRC = $(BASE_SRC) ui/http_parse.c

fuzz_obj = $(patsubst %.c,$(FUZZ_OUT)/obj/%.o,$(1))
FUZZ_BINS = $(addprefix $(FUZZ_OUT)/fuzz_,$(FUZZ_TARGETS))

$(FUZZ_OUT)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<

.SECONDEXPANSION:
$(FUZZ_OUT)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h tests/fuzz/agent_env.h \
    $$(call fuzz_obj,$$(sort $$(FZ_$$*_SRC)))
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FZ_$*_CFLAGS) -fsanitize=fuzzer -MMD -MP \
	    -MF $@.d -o $@ $< $(call fuzz_obj,$(sort $(FZ_$*_SRC))) \
	    $(LDLIBS) $(FZ_$*_LIBS)

fuzz-build: setup
	@$(MAKE) --no-print-directory $(FUZZ_BINS)

fuzz: fuzz-build
	@FUZZ_OUT=$(FUZZ_OUT) FUZZ_JOBS=$(FUZZ_JOBS) tests/fuzz/run \
	    $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-short: fuzz-build
	@FUZZ_OUT=$(FUZZ_OUT) FUZZ_JOBS=$(FUZZ_JOBS) tests/fuzz/run \
	    $(FUZZ_SHORT_SECONDS) $(FUZZ_TARGETS)

# The seed generator behind tests/fuzz/make-seeds (the project's encoders).
$(FUZZ_OUT)/seedgen: tests/fuzz/seedgen.c \
    $(call fuzz_obj,$(BASE_SRC) station/link/frame.c station/link/proto.c)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $^ $(LDLIBS)

.PHONY: fuzz fuzz-build fuzz-short

-include $(shell find $(FUZZ_OUT) -name '*.d' 2>/dev/null)
