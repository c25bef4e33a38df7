# Builds the Rust libusbmuxd 2.x drop-in replacement as real shared libraries.
#
#   make            release build: cargo workspace (lib + binaries), then
#                   build/libusbmuxd-2.0.so.6.0.0 (SONAME .so.6, the 20 functions of 2.0.2),
#                   build/libusbmuxd-2.0.so.7.0.1 (SONAME .so.7, the 21 functions of 2.1.1),
#                   their symlinks and build/libusbmuxd-2.0.pc
#   make check      header drift, exports, cargo tests, C tests, e2e scripts, install check
#   make install    PREFIX/prefix, LIBDIR/libdir, INCLUDEDIR/includedir, BINDIR/bindir,
#                   MANDIR/mandir, DESTDIR
#   make uninstall  removes exactly what `make install` (same variables) installs
#   make headers    regenerates include/*.h from src/ffi (cargo build does that too)
#   make clean      removes build/ (distclean: also `cargo clean`)
#   make help       shows this text
#
# The steps of `make check`, also usable alone: check-headers, check-exports,
# test-rust, c-tests, e2e, check-install. Extra: header-compat (part of c-tests),
# c-tests-valgrind.
#
# Exported symbols: exports/*.map are the single source of truth (linker version
# scripts, also read by `make check-exports`).

SHELL := /bin/bash
.DEFAULT_GOAL := all
.DELETE_ON_ERROR:
.SUFFIXES:

CARGO ?= cargo
PKG_CONFIG ?= pkg-config
INSTALL ?= install
LDCONFIG ?= ldconfig

VERSION := $(shell sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)

# ---- install locations ---------------------------------------------------------------
# Default /usr/local: never installs over the system's own libusbmuxd unless asked
# (prefix /usr without DESTDIR requires ALLOW_SYSTEM_INSTALL=1).
PREFIX ?= /usr/local
prefix ?= $(PREFIX)
exec_prefix ?= $(prefix)
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)
LIBDIR ?= $(exec_prefix)/lib$(if $(MULTIARCH),/$(MULTIARCH))
libdir ?= $(LIBDIR)
INCLUDEDIR ?= $(prefix)/include
includedir ?= $(INCLUDEDIR)
BINDIR ?= $(exec_prefix)/bin
bindir ?= $(BINDIR)
PKGCONFIGDIR ?= $(libdir)/pkgconfig
MANDIR ?= $(prefix)/share/man
mandir ?= $(MANDIR)
DESTDIR ?=

# ---- build outputs ---------------------------------------------------------------------
BUILD := build
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
RELEASE_DIR := $(TARGET_DIR)/release
STATICLIB := $(RELEASE_DIR)/libusbmuxd.a

LIBNAME := libusbmuxd-2.0
SONAME6 := $(LIBNAME).so.6
SONAME7 := $(LIBNAME).so.7
SO6 := $(BUILD)/$(SONAME6).0.0
SO7 := $(BUILD)/$(SONAME7).0.1
MAP6 := exports/$(SONAME6).map
MAP7 := exports/$(SONAME7).map
LINKS := $(BUILD)/$(SONAME6) $(BUILD)/$(SONAME7) $(BUILD)/$(LIBNAME).so
PC := $(BUILD)/$(LIBNAME).pc
HEADERS := include/usbmuxd.h include/usbmuxd-proto.h
# Man pages of the installed programs (section 1).
MAN_PAGES := $(sort $(wildcard tools/man/*.1))

# Native libraries the Rust staticlib needs (`cargo rustc --release --lib --crate-type
# staticlib -- --print native-static-libs`); --as-needed drops the unused ones and
# --no-undefined makes a missing one a link error.
RUST_NATIVE_LIBS ?= -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
SO_LDFLAGS := -shared -Wl,-z,now -Wl,-z,relro -Wl,--gc-sections -Wl,--no-undefined -Wl,-O1 -Wl,--strip-debug

# Workspace binaries (names), and those `make install` installs: all but test helpers.
cargo_bins = $(shell $(CARGO) metadata --no-deps --format-version 1 2>/dev/null \
	| grep -o '"kind":\["bin"\],"crate_types":\["bin"\],"name":"[^"]*"' \
	| sed 's/.*"name":"\([^"]*\)"/\1/' | sort -u)
INSTALL_BINS ?= $(filter-out %-testd %-test test-%,$(cargo_bins))

# ---- test settings ---------------------------------------------------------------------
TESTD := $(abspath $(RELEASE_DIR)/usbmuxd-testd)
TEST_ENV := LD_LIBRARY_PATH=$(abspath $(BUILD))$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH} \
	BUILD_DIR=$(abspath $(BUILD)) USBMUXD_TESTD=$(TESTD) TARGET_DIR=$(abspath $(RELEASE_DIR))
TEST_TIMEOUT ?= 600
CXX_AVAILABLE := $(shell command -v $(CXX) >/dev/null 2>&1 && echo yes)

# C tests: every c-tests/*.c is compiled against include/ and linked with
# build/libusbmuxd-2.0.so (-> .so.7). Markers inside a file (anywhere, e.g. in a comment):
#   c-tests: also-upstream   also compile it against the upstream headers in
#                            UPSTREAM_INCLUDE (Debian's libusbmuxd-dev) and link it
#                            with our libusbmuxd-2.0.so.6, as a 2.0.2 consumer would be
#   c-tests: upstream-only   only that upstream build, not the one against include/
#   c-tests: also-c++        additionally compile each of its builds as C++
# Per-test extra link flags: CTEST_LDLIBS_<name> (name without .c).
UPSTREAM_INCLUDE ?= /usr/include
CTEST_CFLAGS ?= -O1 -g
CTEST_WARN := -Wall -Wextra -Werror
CTEST_SRCS := $(sort $(wildcard c-tests/*.c))
marked = $(if $(CTEST_SRCS),$(shell grep -l -e 'c-tests: $(1)' $(CTEST_SRCS)))
CTEST_UPSTREAM_ONLY := $(call marked,upstream-only)
CTEST_ALSO_UPSTREAM := $(sort $(call marked,also-upstream) $(CTEST_UPSTREAM_ONLY))
CTEST_CXX := $(call marked,also-c++)
# The upstream header set is usable if it exists and is not one of ours installed there.
HAVE_UPSTREAM := $(shell test -f $(UPSTREAM_INCLUDE)/usbmuxd.h \
	&& test -f $(UPSTREAM_INCLUDE)/usbmuxd-proto.h \
	&& ! grep -q cbindgen $(UPSTREAM_INCLUDE)/usbmuxd.h && echo yes)

ctest_name = $(basename $(notdir $(1)))
CTEST_BINS := $(foreach s,$(filter-out $(CTEST_UPSTREAM_ONLY),$(CTEST_SRCS)),$(BUILD)/c-tests/$(call ctest_name,$(s)))
CTEST_BINS += $(if $(CXX_AVAILABLE),$(foreach s,$(filter-out $(CTEST_UPSTREAM_ONLY),$(CTEST_CXX)),$(BUILD)/c-tests/cxx/$(call ctest_name,$(s))))
ifeq ($(HAVE_UPSTREAM),yes)
CTEST_BINS += $(foreach s,$(CTEST_ALSO_UPSTREAM),$(BUILD)/c-tests/upstream/$(call ctest_name,$(s)))
CTEST_BINS += $(if $(CXX_AVAILABLE),$(foreach s,$(filter $(CTEST_ALSO_UPSTREAM),$(CTEST_CXX)),$(BUILD)/c-tests/upstream-cxx/$(call ctest_name,$(s))))
endif

.PHONY: all libs bins headers pc install uninstall check check-format check-headers check-exports \
	test-rust c-tests c-tests-build c-tests-valgrind header-compat e2e check-install usb-umockdev fuzz-smoke bench bench-usb bench-tools demo demo-usb \
	clean distclean help FORCE

# ---- build ---------------------------------------------------------------------------
all: libs pc

libs: $(SO6) $(SO7) $(LINKS)

# One cargo invocation builds the library (staticlib, cdylib, rlib) and every binary of
# the workspace; build.rs refreshes include/*.h. The .so files relink only when the
# archive actually changed.
# The in-process USB backend's libusb transport (feature `usb`, vendored libusb).
CARGO_FEATURES ?= --features usbmuxd/usb

$(STATICLIB): FORCE
	$(CARGO) build --release --workspace $(CARGO_FEATURES)

bins: $(STATICLIB)

$(BUILD) $(BUILD)/c-tests $(BUILD)/c-tests/cxx $(BUILD)/c-tests/upstream $(BUILD)/c-tests/upstream-cxx:
	mkdir -p $@

# $(1) SONAME, $(2) version script
link_so = $(CC) $(SO_LDFLAGS) -Wl,-soname,$(1) -Wl,--version-script=$(2) -o $@ \
	-Wl,--whole-archive $(STATICLIB) -Wl,--no-whole-archive \
	$(LDFLAGS) -Wl,--as-needed $(RUST_NATIVE_LIBS)

$(SO6): $(STATICLIB) $(MAP6) | $(BUILD)
	$(call link_so,$(SONAME6),$(MAP6))

$(SO7): $(STATICLIB) $(MAP7) | $(BUILD)
	$(call link_so,$(SONAME7),$(MAP7))

$(BUILD)/$(SONAME6): $(SO6)
	ln -sfn $(notdir $<) $@
$(BUILD)/$(SONAME7): $(SO7)
	ln -sfn $(notdir $<) $@
$(BUILD)/$(LIBNAME).so: $(SO7)
	ln -sfn $(notdir $<) $@

# pkg-config file: regenerated on every run (the install variables may differ), but
# rewritten only when its content changes.
pc_exec_prefix = $(if $(filter $(prefix),$(exec_prefix)),$${prefix},$(exec_prefix))
pc_libdir = $(patsubst $(exec_prefix)/%,$${exec_prefix}/%,$(libdir))
pc_includedir = $(patsubst $(prefix)/%,$${prefix}/%,$(includedir))

pc: $(PC)
$(PC): pkgconfig/$(LIBNAME).pc.in FORCE | $(BUILD)
	@sed -e 's|@prefix@|$(prefix)|g' -e 's|@exec_prefix@|$(pc_exec_prefix)|g' \
	    -e 's|@libdir@|$(pc_libdir)|g' -e 's|@includedir@|$(pc_includedir)|g' \
	    -e 's|@VERSION@|$(VERSION)|g' $< > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@ && echo "generated $@ (prefix $(prefix), libdir $(libdir))"; fi

# Regenerate include/*.h from src/ffi (normally build.rs already keeps them current).
headers:
	CARGO="$(CARGO)" scripts/headers.sh update

# ---- install ---------------------------------------------------------------------------
define guard_system_install
	@if [ -z "$(DESTDIR)" ] && [ "$(prefix)" = /usr ] && [ "$(ALLOW_SYSTEM_INSTALL)" != 1 ]; then \
	  echo "refusing to $(1) with prefix /usr: that is where the system's own libusbmuxd lives." >&2; \
	  echo "Use the default PREFIX=/usr/local, a DESTDIR, or ALLOW_SYSTEM_INSTALL=1." >&2; \
	  exit 1; \
	fi
endef

define run_ldconfig
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
	  $(LDCONFIG) || echo "warning: $(LDCONFIG) failed (ignored)" >&2; \
	fi
endef

install: all
	$(call guard_system_install,install)
	$(INSTALL) -d "$(DESTDIR)$(libdir)" "$(DESTDIR)$(PKGCONFIGDIR)" "$(DESTDIR)$(includedir)"
	$(INSTALL) -m 0755 $(SO6) $(SO7) "$(DESTDIR)$(libdir)/"
	ln -sfn $(notdir $(SO6)) "$(DESTDIR)$(libdir)/$(SONAME6)"
	ln -sfn $(notdir $(SO7)) "$(DESTDIR)$(libdir)/$(SONAME7)"
	ln -sfn $(notdir $(SO7)) "$(DESTDIR)$(libdir)/$(LIBNAME).so"
	$(INSTALL) -m 0644 $(HEADERS) "$(DESTDIR)$(includedir)/"
	$(INSTALL) -m 0644 $(PC) "$(DESTDIR)$(PKGCONFIGDIR)/"
	$(if $(MAN_PAGES),$(INSTALL) -d "$(DESTDIR)$(mandir)/man1")
	$(if $(MAN_PAGES),$(INSTALL) -m 0644 $(MAN_PAGES) "$(DESTDIR)$(mandir)/man1/")
	@bins='$(strip $(INSTALL_BINS))'; if [ -n "$$bins" ]; then \
	  echo $(INSTALL) -d "$(DESTDIR)$(bindir)"; $(INSTALL) -d "$(DESTDIR)$(bindir)" || exit 1; \
	  for b in $$bins; do \
	    echo $(INSTALL) -m 0755 "$(RELEASE_DIR)/$$b" "$(DESTDIR)$(bindir)/"; \
	    $(INSTALL) -m 0755 "$(RELEASE_DIR)/$$b" "$(DESTDIR)$(bindir)/" || exit 1; \
	  done; \
	fi
	$(run_ldconfig)

uninstall:
	$(call guard_system_install,uninstall)
	rm -f "$(DESTDIR)$(libdir)/$(notdir $(SO6))" "$(DESTDIR)$(libdir)/$(notdir $(SO7))" \
	      "$(DESTDIR)$(libdir)/$(SONAME6)" "$(DESTDIR)$(libdir)/$(SONAME7)" \
	      "$(DESTDIR)$(libdir)/$(LIBNAME).so" \
	      $(foreach h,$(HEADERS),"$(DESTDIR)$(includedir)/$(notdir $(h))") \
	      "$(DESTDIR)$(PKGCONFIGDIR)/$(notdir $(PC))" \
	      $(foreach m,$(MAN_PAGES),"$(DESTDIR)$(mandir)/man1/$(notdir $(m))") \
	      $(foreach b,$(INSTALL_BINS),"$(DESTDIR)$(bindir)/$(b)")
	$(run_ldconfig)

# ---- checks ------------------------------------------------------------------------------
# Order matters: the header drift check must see include/ as committed, before any
# build of this run lets build.rs refresh it.
check:
	@+$(MAKE) --no-print-directory check-format
	@+$(MAKE) --no-print-directory check-headers
	@+$(MAKE) --no-print-directory all
	@+$(MAKE) --no-print-directory check-exports
	@+$(MAKE) --no-print-directory test-rust
	@+$(MAKE) --no-print-directory usb-umockdev
	@+$(MAKE) --no-print-directory fuzz-smoke
	@+$(MAKE) --no-print-directory c-tests
	@+$(MAKE) --no-print-directory e2e
	@+$(MAKE) --no-print-directory check-install
	@echo "make check: all steps passed"

# Rust sources as `cargo fmt` leaves them (rustfmt.toml), the fuzz workspace too.
check-format:
	cargo fmt --all --check
	cd fuzz && cargo fmt --check

test: check

check-headers:
	@echo "== header drift check"
	CARGO="$(CARGO)" scripts/headers.sh check

check-exports: $(SO6) $(SO7) $(LINKS)
	@echo "== export check"
	scripts/check-exports.sh $(SO6) $(SONAME6) $(MAP6)
	scripts/check-exports.sh $(SO7) $(SONAME7) $(MAP7)
	scripts/check-header-functions.sh include/usbmuxd.h $(MAP7)

test-rust:
	@echo "== cargo test"
	$(CARGO) test --workspace --release $(CARGO_FEATURES)

# The libusb transport against a simulated iPhone on a umockdev bus (skips without
# umockdev; see tests/umockdev/).
usb-umockdev:
	@echo "== libusb transport on a umockdev bus"
	bash tests/umockdev/run.sh

# cargo-fuzz smoke run (fuzz/ is its own workspace): FUZZ_SECONDS per target, replays
# fuzz/regressions/; skipped when cargo-fuzz is missing unless FUZZ_REQUIRED=1.
FUZZ_SECONDS ?= 5
fuzz-smoke:
	@echo "== fuzz smoke"
	scripts/fuzz-smoke.sh $(FUZZ_SECONDS)

# -- C tests
c-tests-build: $(CTEST_BINS)

# The headers must also survive strict old language modes (compile only).
HEADER_COMPAT_C_STDS ?= c89 c99 c11
HEADER_COMPAT_CXX_STDS ?= c++98 c++11 c++17
header-compat: $(HEADERS)
	@for std in $(HEADER_COMPAT_C_STDS); do \
	  echo "$(CC) -std=$$std -pedantic $(CTEST_WARN) -fsyntax-only c-tests/compat/include_both.c"; \
	  $(CC) -std=$$std -pedantic $(CTEST_WARN) -Iinclude -fsyntax-only c-tests/compat/include_both.c || exit 1; \
	done
	@$(if $(CXX_AVAILABLE),for std in $(HEADER_COMPAT_CXX_STDS); do \
	  echo "$(CXX) -x c++ -std=$$std -pedantic $(CTEST_WARN) -fsyntax-only c-tests/compat/include_both.c"; \
	  $(CXX) -x c++ -std=$$std -pedantic $(CTEST_WARN) -Iinclude -fsyntax-only c-tests/compat/include_both.c || exit 1; \
	done,true)

c-tests: libs bins header-compat c-tests-build
	@echo "== C tests"
	@$(if $(HAVE_UPSTREAM),,echo "note: no upstream headers in $(UPSTREAM_INCLUDE); upstream builds skipped";) \
	$(if $(CXX_AVAILABLE),,echo "note: $(CXX) not found; C++ builds skipped";) \
	pass=0; fail=0; failed=; \
	for t in $(CTEST_BINS); do \
	  echo "-- $$t"; \
	  if $(TEST_ENV) timeout $(TEST_TIMEOUT) $(CTEST_WRAPPER) ./$$t; then pass=$$((pass+1)); \
	  else echo "FAILED: $$t"; fail=$$((fail+1)); failed="$$failed $$t"; fi; \
	done; \
	echo "c-tests: $$pass passed, $$fail failed"; \
	if [ $$fail -ne 0 ]; then echo "failed:$$failed" >&2; exit 1; fi
	@echo "== C tests under valgrind (memory errors and leaks fail)"
	@$(TEST_ENV) c-tests/run-valgrind.sh $(addprefix $(BUILD)/c-tests/,$(VALGRIND_CTESTS))

# Part of `make check`: these C tests again under valgrind (c-tests/run-valgrind.sh).
VALGRIND_CTESTS ?= test_device_list test_pair test_events

# `make c-tests-valgrind`: the same C tests, each run under valgrind (memory errors
# and definite leaks fail the test). Not part of `make check`.
VALGRIND ?= valgrind
VALGRIND_FLAGS ?= -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-possibly-lost=no
c-tests-valgrind:
	+$(MAKE) --no-print-directory c-tests CTEST_WRAPPER="$(VALGRIND) $(VALGRIND_FLAGS)"

CTEST_LINK_OURS = -L$(BUILD) -lusbmuxd-2.0 -pthread $(CTEST_LDLIBS_$(notdir $@))
CTEST_LINK_UPSTREAM = -L$(BUILD) -l:$(SONAME6) -pthread $(CTEST_LDLIBS_$(notdir $@))

CTEST_HDRS := $(wildcard c-tests/*.h)
# Private copy of the upstream headers, so that a usbmuxd.h installed under
# /usr/local/include (e.g. ours, by `make install`) cannot shadow them.
UPSTREAM_COPY := $(BUILD)/upstream-include

$(BUILD)/c-tests/%: c-tests/%.c $(CTEST_HDRS) $(HEADERS) $(LINKS) | $(BUILD)/c-tests
	$(CC) $(CTEST_WARN) $(CTEST_CFLAGS) -Iinclude -o $@ $< $(CTEST_LINK_OURS)

$(BUILD)/c-tests/cxx/%: c-tests/%.c $(CTEST_HDRS) $(HEADERS) $(LINKS) | $(BUILD)/c-tests/cxx
	$(CXX) -x c++ $(CTEST_WARN) $(CTEST_CFLAGS) -Iinclude -o $@ $< -x none $(CTEST_LINK_OURS)

$(BUILD)/c-tests/upstream/%: c-tests/%.c $(CTEST_HDRS) $(UPSTREAM_COPY)/usbmuxd.h $(UPSTREAM_COPY)/usbmuxd-proto.h $(LINKS) | $(BUILD)/c-tests/upstream
	$(CC) $(CTEST_WARN) $(CTEST_CFLAGS) -DUSBMUXD_TEST_UPSTREAM_HEADER -I$(UPSTREAM_COPY) -o $@ $< $(CTEST_LINK_UPSTREAM)

$(BUILD)/c-tests/upstream-cxx/%: c-tests/%.c $(CTEST_HDRS) $(UPSTREAM_COPY)/usbmuxd.h $(UPSTREAM_COPY)/usbmuxd-proto.h $(LINKS) | $(BUILD)/c-tests/upstream-cxx
	$(CXX) -x c++ $(CTEST_WARN) $(CTEST_CFLAGS) -DUSBMUXD_TEST_UPSTREAM_HEADER -I$(UPSTREAM_COPY) -o $@ $< -x none $(CTEST_LINK_UPSTREAM)

.SECONDARY: $(UPSTREAM_COPY)/usbmuxd.h $(UPSTREAM_COPY)/usbmuxd-proto.h
$(UPSTREAM_COPY)/%.h: $(UPSTREAM_INCLUDE)/%.h
	@mkdir -p $(@D)
	cp $< $@

# -- end-to-end scripts: tests/e2e/*.sh (lib.sh is their shared helper), each run with bash
E2E_SCRIPTS := $(sort $(filter-out tests/e2e/lib.sh,$(wildcard tests/e2e/*.sh)))
e2e: libs bins
	@echo "== e2e scripts"
	@$(if $(E2E_SCRIPTS),,echo "e2e: no scripts in tests/e2e"; exit 0;) \
	pass=0; fail=0; failed=; \
	for s in $(E2E_SCRIPTS); do \
	  echo "-- $$s"; \
	  if $(TEST_ENV) timeout $(TEST_TIMEOUT) bash $$s; then pass=$$((pass+1)); \
	  else echo "FAILED: $$s"; fail=$$((fail+1)); failed="$$failed $$s"; fi; \
	done; \
	echo "e2e: $$pass passed, $$fail failed"; \
	if [ $$fail -ne 0 ]; then echo "failed:$$failed" >&2; exit 1; fi

# -- install into a staging DESTDIR, build a consumer through pkg-config, uninstall
check-install: all
	@echo "== install check"
	CC="$(CC)" PKG_CONFIG="$(PKG_CONFIG)" MAKE="$(MAKE)" prefix="$(prefix)" libdir="$(libdir)" \
	  PKGCONFIGDIR="$(PKGCONFIGDIR)" includedir="$(includedir)" VERSION="$(VERSION)" \
	  scripts/check-install.sh

# ---- benchmark ---------------------------------------------------------------------------
# Our library against Debian's libusbmuxd6 through the C API, same test daemon, one run.
BENCH_MIB ?= 512
BENCH_ITER ?= 3000
bench: all bins
	bench/run.sh $(BENCH_MIB) $(BENCH_ITER)

# Our iproxy against Debian's (libusbmuxd-tools), one run: throughput at 1 and 64
# connections, connection setup rate, CPU s per GiB, memory at 1000 connections.
bench-tools: all bins
	bench/tools.sh

# Our library, 1 GiB each way through the C API: the daemon path (usbmuxd-testd) and the
# in-process USB backend (usbmux-simd); MB/s and CPU s per GiB of client, server, total.
BENCH_USB_MIB ?= 1024
bench-usb: all bins
	bench/usb.sh $(BENCH_USB_MIB)

# Debian's idevice_id / ideviceinfo on our library, against a simulated device.
demo: all bins
	BUILD_DIR=$(abspath $(BUILD)) scripts/demo.sh

# No iPhone, no daemon: the in-process USB backend (USBMUXD_BACKEND=usb) against a device
# on the simulated USB bus (usbmux-simd); Debian's idevice_id, ideviceinfo, iproxy.
demo-usb: all bins
	BUILD_DIR=$(abspath $(BUILD)) scripts/demo-usb.sh

# ---- misc ------------------------------------------------------------------------------
clean:
	rm -rf $(BUILD)

distclean: clean
	$(CARGO) clean

help:
	@sed -n '2,/^$$/s/^# \{0,1\}//p' Makefile

FORCE:
