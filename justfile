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
