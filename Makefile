# SPDX-License-Identifier: GPL-2.0-or-later
# cowvol: build, test, install.
#   make              build build/libcowvol.so, build/cowvol, build/cowvold
#   make check        every test (unit under ASan/UBSan, CLI, kernel in a VM);
#                     ends with one line "N passed, N failed"
#   make run          the main job: a short tour on the embedded default
#   make bench        benchmarks (ratios against baselines run beside them)
#   make install      PREFIX=/usr/local DESTDIR=
VERSION := 0.1.0
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR ?=

B ?= build
# V=1 shows whole command lines
Q := $(if $(V),,@)
say = $(if $(V),,@printf '  %-6s %s\n' $(1) $(2);)
CC ?= cc
SAN ?=

WARN := -Wall -Wextra -Wshadow -Werror -Wmissing-prototypes -Werror=implicit-function-declaration \
        -Werror=missing-prototypes -Wformat=2 -Werror=format=2
HARDEN := -fstack-protector-strong
ifeq ($(SAN),)
OPT := -O2 -D_FORTIFY_SOURCE=2
else
OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
endif
PKGS := json-c libsystemd uuid devmapper blkid gnutls
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
# what libcowvol.so itself links: device-mapper and blkid for the kernel engine
LIB_LIBS = $(shell pkg-config --libs devmapper blkid 2>/dev/null) -lpthread
CFLAGS ?= -g
ALL_CFLAGS := -std=gnu11 $(OPT) $(WARN) $(HARDEN) -fvisibility=hidden -D_GNU_SOURCE \
              -DCOWVOL_VERSION=\"$(VERSION)\" -Ilib $(CFLAGS)
SAN_FLAGS := -fsanitize=address,undefined
ALL_LDFLAGS := -Wl,-z,relro,-z,now $(if $(SAN),$(SAN_FLAGS)) $(LDFLAGS)

LIB_SRCS := $(wildcard lib/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(B)/%.o)
CLI_OBJS := $(patsubst %.c,$(B)/%.o,$(wildcard cli/*.c))
DAEMON_OBJS := $(patsubst %.c,$(B)/%.o,$(wildcard daemon/*.c))
UNIT_OBJS := $(patsubst %.c,$(B)/%.o,$(wildcard tests/unit/*.c))
# the daemon's pure modules the unit tests link beside libcowvol.a
UNIT_DAEMON_OBJS := $(B)/daemon/cleanup.o
BENCH_BINS := $(patsubst bench/%.c,$(B)/bench/%,$(wildcard bench/*.c))
HELPER_BINS := $(patsubst tests/helpers/%.c,$(B)/tests/%,$(wildcard tests/helpers/*.c))
DEPS_STAMP := build/.deps-build

.PHONY: all deps deps-test check unit cli-tests kernel-tests run bench install uninstall clean fuzz fuzz-build
all: $(B)/libcowvol.so $(B)/libcowvol.a $(B)/cowvol $(B)/cowvold $(HELPER_BINS)

# Dependencies first: installed when root on Debian, else named and refused.
$(DEPS_STAMP): tools/deps.sh
	@tools/deps.sh build
	@mkdir -p $(@D) && touch $@
deps: $(DEPS_STAMP)
deps-test: deps
	@tools/deps.sh test

$(B)/%.o: %.c $(wildcard lib/*.h cli/*.h common/*.h) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(call say,CC,$@)$(CC) $(ALL_CFLAGS) -fPIC $(PKG_CFLAGS) -MMD -c -o $@ $<

$(B)/libcowvol.so: $(LIB_OBJS) lib/libcowvol.sym
	$(call say,LD,$@)$(CC) -shared -Wl,-soname,libcowvol.so.0 -Wl,--version-script=lib/libcowvol.sym \
	  $(ALL_LDFLAGS) -o $@ $(LIB_OBJS) $(LIB_LIBS)
	$(Q)ln -sf libcowvol.so $(B)/libcowvol.so.0

$(B)/libcowvol.a: $(LIB_OBJS)
	$(call say,AR,$@)rm -f $@ && ar rcs $@ $^

# Binaries find the library beside them in build/, and in LIBDIR once installed;
# they are linked again when LIBDIR changes.
RPATH := -Wl,-rpath,'$$ORIGIN:$(LIBDIR)'
LIBDIR_STAMP := $(B)/.libdir
$(LIBDIR_STAMP): FORCE
	@mkdir -p $(@D)
	@[ "$$(cat $@ 2>/dev/null)" = "$(LIBDIR)" ] || echo "$(LIBDIR)" > $@
.PHONY: FORCE
$(B)/cowvol: $(CLI_OBJS) $(B)/libcowvol.so $(LIBDIR_STAMP)
	$(call say,LD,$@)$(CC) $(ALL_LDFLAGS) $(RPATH) -o $@ $(CLI_OBJS) -L$(B) -lcowvol $(PKG_LIBS)

$(B)/cowvold: $(DAEMON_OBJS) $(B)/libcowvol.so $(LIBDIR_STAMP)
	$(call say,LD,$@)$(CC) $(ALL_LDFLAGS) $(RPATH) -o $@ $(DAEMON_OBJS) -L$(B) -lcowvol $(PKG_LIBS)

$(B)/tests/%: tests/helpers/%.c $(B)/libcowvol.a
	@mkdir -p $(@D)
	$(call say,CCLD,$@)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(B)/libcowvol.a $(PKG_LIBS)

# test-symbols reads lib/ from the source tree and checks the shared library beside it
$(B)/tests/unit/test-symbols.o: ALL_CFLAGS += -DCOWVOL_SRCDIR=\"$(CURDIR)\"
$(B)/unit-tests: $(UNIT_OBJS) $(UNIT_DAEMON_OBJS) $(B)/libcowvol.a $(B)/libcowvol.so
	$(call say,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $(UNIT_OBJS) $(UNIT_DAEMON_OBJS) $(B)/libcowvol.a $(PKG_LIBS) -lcriterion

$(B)/bench/%: bench/%.c $(B)/libcowvol.a
	@mkdir -p $(@D)
	$(call say,CCLD,$@)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(B)/libcowvol.a $(PKG_LIBS)

# libFuzzer targets (clang), with ASan/UBSan: tests/fuzz/fuzz-*.c
FUZZ_BINS := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz-*.c))
FUZZ_TIME ?= 300
build/fuzz/%: tests/fuzz/%.c $(LIB_SRCS) $(wildcard lib/*.h) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(call say,FUZZ,$@)clang -std=gnu11 -g -O1 -fno-omit-frame-pointer $(WARN) -Wno-unused-command-line-argument \
	  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE \
	  -DCOWVOL_VERSION=\"$(VERSION)\" -Ilib -o $@ $< $(LIB_SRCS) $(LIB_LIBS)
# the daemon's targets link the daemon itself (its main renamed away)
DAEMON_SRCS := $(wildcard daemon/*.c)
DAEMON_FUZZ := build/fuzz/fuzz-nbd build/fuzz/fuzz-ctl build/fuzz/fuzz-catalogue
$(DAEMON_FUZZ): build/fuzz/%: tests/fuzz/%.c $(LIB_SRCS) $(DAEMON_SRCS) $(wildcard lib/*.h daemon/*.h common/*.h tests/fuzz/*.h) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(call say,FUZZ,$@)clang -std=gnu11 -g -O1 -fno-omit-frame-pointer $(WARN) -Wno-unused-command-line-argument \
	  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE \
	  -DCOWVOL_VERSION=\"$(VERSION)\" -Dmain=cowvold_main -Wno-missing-prototypes -Ilib -Idaemon $(PKG_CFLAGS) -o $@ $< \
	  $(LIB_SRCS) $(DAEMON_SRCS) $(PKG_LIBS)
fuzz-build: $(FUZZ_BINS)
# the long run: FUZZ_TIME seconds a target, new inputs kept in build/fuzz/
fuzz: deps-test $(FUZZ_BINS)
	tests/run-fuzz.sh $(FUZZ_TIME)

# --- tests ---------------------------------------------------------------
# tests/run.sh runs each suite and prints the one summary line.
# the test tools (clang among them) first, then the three builds, each on
# every core
NPROC := $(shell nproc 2>/dev/null || echo 2)
check: deps-test
	$(MAKE) --no-print-directory -j$(NPROC) all fuzz-build
	$(MAKE) --no-print-directory -j$(NPROC) B=build/san SAN=1 all build/san/unit-tests
	tests/run.sh

unit: deps-test
	$(MAKE) --no-print-directory B=build/san SAN=1 all build/san/unit-tests
	tests/run.sh unit

kernel-tests: all deps-test
	tests/run.sh kernel

run: all
	tools/tour.sh

bench: all $(BENCH_BINS)
	bench/run.sh

# --- install ---------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR) \
	  $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(B)/cowvol $(DESTDIR)$(BINDIR)/cowvol
	install -m 0755 $(B)/cowvold $(DESTDIR)$(SBINDIR)/cowvold
	install -m 0755 $(B)/libcowvol.so $(DESTDIR)$(LIBDIR)/libcowvol.so.0
	ln -sf libcowvol.so.0 $(DESTDIR)$(LIBDIR)/libcowvol.so
	install -m 0644 lib/cowvol.h $(DESTDIR)$(INCLUDEDIR)/cowvol.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	  -e 's|@VERSION@|$(VERSION)|' lib/cowvol.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/cowvol.pc
	install -m 0644 doc/cowvol.8 $(DESTDIR)$(MANDIR)/man8/cowvol.8
	install -m 0644 doc/cowvold.8 $(DESTDIR)$(MANDIR)/man8/cowvold.8
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	sed 's|@SBINDIR@|$(SBINDIR)|' systemd/cowvold.service.in > $(DESTDIR)$(UNITDIR)/cowvold.service
	install -m 0644 systemd/cowvold.socket $(DESTDIR)$(UNITDIR)/cowvold.socket
	install -m 0644 systemd/cowvold-nbd.socket $(DESTDIR)$(UNITDIR)/cowvold-nbd.socket
	install -m 0644 systemd/cowvol-sysusers.conf $(DESTDIR)$(SYSUSERSDIR)/cowvol.conf
	install -d $(DESTDIR)$(COMPLETIONDIR)
	install -m 0644 completion/cowvol.bash $(DESTDIR)$(COMPLETIONDIR)/cowvol

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/cowvol $(DESTDIR)$(SBINDIR)/cowvold $(DESTDIR)$(LIBDIR)/libcowvol.so* \
	  $(DESTDIR)$(INCLUDEDIR)/cowvol.h $(DESTDIR)$(PKGCONFIGDIR)/cowvol.pc $(DESTDIR)$(MANDIR)/man8/cowvol.8 \
	  $(DESTDIR)$(MANDIR)/man8/cowvold.8 $(DESTDIR)$(UNITDIR)/cowvold.service $(DESTDIR)$(UNITDIR)/cowvold.socket \
	  $(DESTDIR)$(UNITDIR)/cowvold-nbd.socket \
	  $(DESTDIR)$(SYSUSERSDIR)/cowvol.conf $(DESTDIR)$(COMPLETIONDIR)/cowvol

clean:
	rm -rf build/*.o build/lib build/cli build/daemon build/tests build/san build/bench build/fuzz \
	  build/cowvol build/cowvold build/libcowvol.* build/unit-tests

-include $(LIB_OBJS:.o=.d) $(CLI_OBJS:.o=.d) $(DAEMON_OBJS:.o=.d) $(UNIT_OBJS:.o=.d)
