# Builds and installs shmkit's C library: libshmkit.so (soname libshmkit.so.0),
# libshmkit.a, include/shmkit.h and a pkg-config file.
#
#   make                          # cargo build --release -p shmkit-c
#   make install PREFIX=/usr/local [DESTDIR=...]
#   make uninstall PREFIX=/usr/local
#
# Then: cc app.c $(pkg-config --cflags --libs shmkit)
# (static: cc app.c $(pkg-config --static --cflags --libs shmkit) with -l:libshmkit.a)

VERSION      := 0.1.0
PREFIX       ?= /usr/local
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
CARGO        ?= cargo
# release (default) or debug
PROFILE      ?= release
TARGET_DIR   ?= $(or $(CARGO_TARGET_DIR),target)
BUILT        := $(TARGET_DIR)/$(PROFILE)

.PHONY: all lib install uninstall
all: lib

lib:
	$(CARGO) build -p shmkit-c $(if $(filter release,$(PROFILE)),--release,)

install: lib
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0755 $(BUILT)/libshmkit.so $(DESTDIR)$(LIBDIR)/libshmkit.so.$(VERSION)
	ln -sf libshmkit.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libshmkit.so.0
	ln -sf libshmkit.so.0 $(DESTDIR)$(LIBDIR)/libshmkit.so
	install -m 0644 $(BUILT)/libshmkit.a $(DESTDIR)$(LIBDIR)/libshmkit.a
	install -m 0644 include/shmkit.h $(DESTDIR)$(INCLUDEDIR)/shmkit.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    crates/shmkit-c/shmkit.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/shmkit.pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libshmkit.so $(DESTDIR)$(LIBDIR)/libshmkit.so.0 \
	      $(DESTDIR)$(LIBDIR)/libshmkit.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libshmkit.a \
	      $(DESTDIR)$(INCLUDEDIR)/shmkit.h $(DESTDIR)$(PKGCONFIGDIR)/shmkit.pc
