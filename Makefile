# Builds and installs sseloop: the server binary with its man page, shell completions, systemd
# units and an example configuration; and the C library: shared (libsseloop.so) and static
# (libsseloop.a) libraries, include/sseloop.h, and pkg-config files whose version comes from
# Cargo.toml.
#
#   make                                  # cargo build --release (binary and libraries)
#   make install PREFIX=/usr/local        # installs what `make` built (DESTDIR is honoured)
#   make uninstall PREFIX=/usr/local      # removes exactly what install put there
#   make install-files                    # prints the paths install writes (one per line)
#   make install-lib / install-bin        # only the C library, or only the server
#
# Then: cc host.c $(pkg-config --cflags --libs sseloop)          (shared)
#       cc host.c $(pkg-config --cflags --libs sseloop-static)   (static)
#
# BUILD_DIR is where the built files are taken from (default target/release, honouring
# CARGO_TARGET_DIR like cargo). `install` does not rebuild: run `make` first. The example
# configuration is installed only where none exists, and uninstall removes it only if it is
# still the shipped one (an operator's edits are kept).

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
UNITDIR ?= $(LIBDIR)/systemd/system
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
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
            -e 's|@RPATH@||' -e 's|@NATIVE_STATIC_LIBS@|$(NATIVE_STATIC_LIBS)|' \
            -e 's|@BINDIR@|$(BINDIR)|' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|'

BIN := $(BUILD_DIR)/sseloop
BIN_FILES := $(BINDIR)/sseloop $(MANDIR)/man1/sseloop.1 $(BASHCOMPDIR)/sseloop \
         $(ZSHCOMPDIR)/_sseloop $(FISHCOMPDIR)/sseloop.fish \
         $(UNITDIR)/sseloop.service $(UNITDIR)/sseloop.socket
LIB_FILES := $(LIBDIR)/libsseloop.so $(LIBDIR)/libsseloop.a $(INCLUDEDIR)/sseloop.h \
         $(PKGCONFIGDIR)/sseloop.pc $(PKGCONFIGDIR)/sseloop-static.pc
FILES := $(BIN_FILES) $(LIB_FILES)
CONFIG := $(SYSCONFDIR)/sseloop/sseloop.toml

.PHONY: all build install install-bin install-lib uninstall install-files
all: build

build:
	$(CARGO) build --release

$(BIN) $(BUILD_DIR)/libsseloop.so $(BUILD_DIR)/libsseloop.a:
	@echo "$@ is missing: run 'make' (or cargo build --release) first" >&2
	@exit 1

install: install-bin install-lib

install-bin: $(BIN)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR) \
	    $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR) $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/sseloop
	$(INSTALL) -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/sseloop
	$(BIN) --generate man > $(DESTDIR)$(MANDIR)/man1/sseloop.1
	$(BIN) --generate bash > $(DESTDIR)$(BASHCOMPDIR)/sseloop
	$(BIN) --generate zsh > $(DESTDIR)$(ZSHCOMPDIR)/_sseloop
	$(BIN) --generate fish > $(DESTDIR)$(FISHCOMPDIR)/sseloop.fish
	$(SUBST) contrib/systemd/sseloop.service.in > $(DESTDIR)$(UNITDIR)/sseloop.service
	$(INSTALL) -m 0644 contrib/systemd/sseloop.socket $(DESTDIR)$(UNITDIR)/sseloop.socket
	[ -e $(DESTDIR)$(CONFIG) ] || $(INSTALL) -m 0644 contrib/sseloop.toml $(DESTDIR)$(CONFIG)

install-lib: $(BUILD_DIR)/libsseloop.so $(BUILD_DIR)/libsseloop.a
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 0755 $(BUILD_DIR)/libsseloop.so $(DESTDIR)$(LIBDIR)/libsseloop.so
	$(INSTALL) -m 0644 $(BUILD_DIR)/libsseloop.a $(DESTDIR)$(LIBDIR)/libsseloop.a
	$(INSTALL) -m 0644 include/sseloop.h $(DESTDIR)$(INCLUDEDIR)/sseloop.h
	$(SUBST) sseloop.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/sseloop.pc
	$(SUBST) sseloop-static.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/sseloop-static.pc

uninstall:
	rm -f $(addprefix $(DESTDIR),$(FILES))
	if cmp -s contrib/sseloop.toml $(DESTDIR)$(CONFIG); then rm -f $(DESTDIR)$(CONFIG); fi
	-rmdir $(DESTDIR)$(SYSCONFDIR)/sseloop 2>/dev/null

install-files:
	@printf '%s\n' $(FILES) $(CONFIG)
