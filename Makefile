# certgate: the two commands are `make run` and `make test`.
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
DATA_DIR  ?= ./var
CTEST_ARGS ?=
FUZZ_TIME ?= 60
FUZZ_TARGETS ?= http upstream propfile p12 apijson auth

.PHONY: all build deps deps-test run test test-asan fuzz bench bench-instructions clean format \
        install install-files deb

# make install [PREFIX=/usr/local] [DESTDIR=scratch-root]: the binary, certgate(8) and the
# systemd unit (its ExecStart points at $(PREFIX)/bin/certgate)
PREFIX    ?= /usr/local
DESTDIR   ?=
BINDIR    ?= $(PREFIX)/bin
MANDIR    ?= $(PREFIX)/share/man
UNITDIR   ?= $(PREFIX)/lib/systemd/system

all: build

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build -j$(JOBS)

run: build
	@mkdir -p $(DATA_DIR)
	./build/certgate run --data-dir $(DATA_DIR)

test: deps-test build
	@cd build && ctest --output-on-failure -j$(JOBS) $(CTEST_ARGS)

test-asan: deps-test
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCERTGATE_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  CERTGATE_SANITIZED=1 ctest --output-on-failure -j$(JOBS) $(CTEST_ARGS)

# each libFuzzer target (fuzz/) for FUZZ_TIME seconds on a copy of its seed corpus, under
# ASan+UBSan; fails on any crash (see fuzz/README.md)
fuzz:
	@scripts/deps.sh fuzz
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCERTGATE_FUZZ=ON >/dev/null
	@cmake --build build-fuzz -j$(JOBS) >build-fuzz/build.log 2>&1 || \
	  { tail -30 build-fuzz/build.log; exit 1; }
	@fuzz/run.sh build-fuzz/fuzz $(FUZZ_TIME) $(FUZZ_TARGETS)

bench: build
	@scripts/deps.sh bench
	@bench/run.sh

# only the cost of metrics (bench/metrics_cost.py, part of `make bench`): instructions per
# operation with metrics-listen off and on; updates BENCHMARKS.md's "Metrics cost"; ~4 minutes
.PHONY: bench-metrics
bench-metrics: build
	@scripts/deps.sh bench
	@taskset -c 1 python3 -B bench/metrics_cost.py --update

# user-space instructions per operation under callgrind (no timing noise); ~6 minutes
bench-instructions: build
	@scripts/deps.sh bench
	@taskset -c 1 python3 -B bench/instructions.py

install: build
	@$(MAKE) --no-print-directory install-files

# what `make install` copies, without building (CERTGATE_BIN: the binary to install)
CERTGATE_BIN ?= build/certgate
install-files:
	install -D -m 0755 $(CERTGATE_BIN) $(DESTDIR)$(BINDIR)/certgate
	install -D -m 0644 man/certgate.8 $(DESTDIR)$(MANDIR)/man8/certgate.8
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/bin/certgate|$(BINDIR)/certgate|g' dist/certgate.service \
	  >$(DESTDIR)$(UNITDIR)/certgate.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/certgate.service

# a Debian package (dpkg-deb): build-deb/certgate_<version>_<arch>.deb, checked by lintian
deb: deps
	@deb=$$(scripts/mkdeb.sh) && echo "$$deb" && \
	if command -v lintian >/dev/null; then lintian --fail-on error,warning "$$deb"; \
	else echo "lintian is not installed (Debian package lintian): $$deb is not checked"; fi

format:
	clang-format -i src/*.c src/*.h tests/unit/*.c

clean:
	rm -rf build build-asan build-fuzz build-deb
