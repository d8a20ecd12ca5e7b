# Two commands for a fresh machine: `make demo` and `make test`.
# The distribution's CPython when there is one: Debian's is built with PGO and LTO, as is the
# python:3.11-slim the Dockerfile's image runs, and Aegis's Python takes ~15 % less CPU on it
# than on pyenv's default build (docs/performance.md, "The interpreter").  PYTHON=... overrides.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11) python3.11)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NATIVE_STAMP := $(VENV)/.native-built
NATIVE_SOURCES := dlp/native/Cargo.toml dlp/native/Cargo.lock dlp/native/pyproject.toml $(wildcard dlp/native/src/*.rs)
FRONT_STAMP := $(VENV)/.grpc-front-built
FRONT_SOURCES := extauthz/native/Cargo.toml extauthz/native/Cargo.lock extauthz/native/pyproject.toml $(wildcard extauthz/native/src/*.rs)

.PHONY: demo test install test-deps lint typecheck native-test pytest bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (Python 3.11 is required)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[envoy,dev]'
	@# xds-protos ships an older copy of opentelemetry/proto that shadows opentelemetry-proto's
	@# (the OTLP exporters need the newer one); reinstalling it last makes it win.
	$(BIN)/pip install --quiet --force-reinstall --no-deps opentelemetry-proto==1.45.2
	touch $(STAMP)

# The DLP core (dlp/native, Rust): built in place so a source change rebuilds only what changed.
$(NATIVE_STAMP): $(STAMP) $(NATIVE_SOURCES)
	@command -v cargo >/dev/null || { echo "make: cargo not found: the DLP core (dlp/native) is Rust; install it with rustup" >&2; exit 1; }
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --quiet --release -m dlp/native/Cargo.toml
	touch $(NATIVE_STAMP)

# The gRPC front serving Check (extauthz/native, Rust: tonic + PyO3); see extauthz/grpc_front.py.
$(FRONT_STAMP): $(STAMP) $(FRONT_SOURCES)
	@command -v cargo >/dev/null || { echo "make: cargo not found: the gRPC front (extauthz/native) is Rust; install it with rustup" >&2; exit 1; }
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --quiet --release -m extauthz/native/Cargo.toml
	touch $(FRONT_STAMP)

install: $(STAMP) $(NATIVE_STAMP) $(FRONT_STAMP)

## demo: install into .venv, start Envoy + Aegis + demo tools, play the support scenario
demo: install
	$(BIN)/aegis demo -c examples/support/aegis.yaml

## test: install everything the tests need (Envoy, OPA, Redis...) and run the whole suite
test: install test-deps lint typecheck native-test pytest

test-deps: install
	bash scripts/install-test-deps.sh

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

# The DLP core's own Rust tests (no Python needed); its parity with Python is tests/dlp/native.
native-test: install
	cargo test --quiet --release --manifest-path dlp/native/Cargo.toml

# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
pytest: install
	@$(BIN)/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest ran no tests" >&2; fi; exit $$rc

bench: install
	$(BIN)/python -m bench.gateway

clean:
	rm -rf $(VENV) .tools .aegis .pytest_cache .mypy_cache .ruff_cache dlp/native/target extauthz/native/target
