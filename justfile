# keyward recipes. On a fresh machine run them through `bash .ci/bootstrap <recipe>`,
# which installs HAProxy, wrk and just first.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Everything CI runs: formatting, lints, then every test (unit, property, protocol,
# end-to-end through real HAProxy), built once.
test: lint
    # The end-to-end tests run the real binaries (keyward, test-agent).
    cargo build --workspace --bins --locked
    cargo test --workspace --all-targets --locked

# Formatting and clippy with warnings as errors.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Build the release binary.
build:
    cargo build --release --locked -p keyward

# Run HAProxy + keyward + a demo app on http://localhost:8080 (Ctrl-C stops all).
demo: build
    ./target/release/keyward demo --state-dir keyward-demo --port 8080

# criterion micro-benchmarks.
bench:
    cargo bench --workspace --locked

# Fuzz every target for SECONDS each (cargo-fuzz on the stable toolchain).
fuzz SECONDS="60":
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    for t in spop_machine token_open policy_parse request_headers portal_inputs; do \
      mkdir -p tests/fuzz/corpus/$t; \
      RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz $t tests/fuzz/corpus/$t tests/fuzz/seeds/$t -- -max_total_time={{SECONDS}} -rss_limit_mb=2048; \
    done

# The load benchmark through HAProxy (docs/benchmarks.md).
loadbench *ARGS:
    cargo build --release --locked -p keyward -p keyward-tests
    ./target/release/loadbench {{ARGS}}
