#!/bin/sh
# Builds kubexec-runner as a fully static binary (it is copied into arbitrary sandbox images,
# so it may not depend on their libc). glibc's static mode is used because the musl target is
# not available here; the runner calls no NSS functions (no user or host lookups), which are
# the part of glibc that does not work statically. Prints the binary's path.
set -eu
cd "$(dirname "$0")/../.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release -p kubexec-runner --target "$target" >&2
echo "$PWD/target/$target/release/kubexec-runner"
