# Builds and installs the sseloop C library: shared (libsseloop.so) and static (libsseloop.a)
# libraries, include/sseloop.h, and pkg-config files whose version comes from Cargo.toml.
#
#   make                                  # cargo build --release --lib
#   make install PREFIX=/usr/local        # installs what `make` built (DESTDIR is honoured)
#   make uninstall PREFIX=/usr/local
#
# Then: cc host.c $(pkg-config --cflags --libs sseloop)          (shared)
#       cc host.c $(pkg-config --cflags --libs sseloop-static)   (static)
#
# BUILD_DIR is where the built libraries are taken from (default target/release, honouring
# CARGO_TARGET_DIR like cargo). `install` does not rebuild: run `make` first.

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR ?=

CARGO ?= cargo
CARGO_TARGET_DIR ?= target
BUILD_DIR ?= $(CARGO_TARGET_DIR)/release
INSTALL ?= install

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# What the Rust standard library needs from the system when linked statically on Linux/glibc
# (`cargo rustc --release --lib --crate-type staticlib -- --print native-static-libs`).
NATIVE_STATIC_LIBS ?= -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

SUBST = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
            -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
            -e 's|@RPATH@||' -e 's|@NATIVE_STATIC_LIBS@|$(NATIVE_STATIC_LIBS)|'

.PHONY: all build install uninstall
all: build

build:
	$(CARGO) build --release --lib

$(BUILD_DIR)/libsseloop.so $(BUILD_DIR)/libsseloop.a:
	@echo "$@ is missing: run 'make' (or cargo build --release --lib) first" >&2
	@exit 1

install: $(BUILD_DIR)/libsseloop.so $(BUILD_DIR)/libsseloop.a
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 0755 $(BUILD_DIR)/libsseloop.so $(DESTDIR)$(LIBDIR)/libsseloop.so
	$(INSTALL) -m 0644 $(BUILD_DIR)/libsseloop.a $(DESTDIR)$(LIBDIR)/libsseloop.a
	$(INSTALL) -m 0644 include/sseloop.h $(DESTDIR)$(INCLUDEDIR)/sseloop.h
	$(SUBST) sseloop.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/sseloop.pc
	$(SUBST) sseloop-static.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/sseloop-static.pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libsseloop.so $(DESTDIR)$(LIBDIR)/libsseloop.a \
	      $(DESTDIR)$(INCLUDEDIR)/sseloop.h $(DESTDIR)$(PKGCONFIGDIR)/sseloop.pc \
	      $(DESTDIR)$(PKGCONFIGDIR)/sseloop-static.pc
