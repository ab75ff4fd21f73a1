#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy, unit and end-to-end tests, and
# the README's quick start (scripts/run.sh) once. Installs what it needs when missing and stops
# with a clear message when it cannot.
set -euo pipefail

cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    say "installing rustup component $component"
    rustup component add "$component" || die "could not install the rustup component $component"
  fi
done
# Tools the tests drive, as Debian packages: command -> package.
need=()
for pair in shellcheck:shellcheck dash:dash busybox:busybox-static systemd-analyze:systemd \
  musl-gcc:musl-tools strip:binutils useradd:passwd chroot:coreutils curl:curl wget:wget \
  rpm:rpm rpmbuild:rpm rpmlint:rpmlint dnf:dnf createrepo_c:createrepo-c gpg:gnupg \
  lintian:lintian dpkg-deb:dpkg chromium:chromium chromedriver:chromium-driver \
  systemd-nspawn:systemd-container debootstrap:debootstrap nsenter:util-linux \
  bash:bash zsh:zsh fish:fish man:man-db script:bsdutils ss:iproute2 \
  aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu aarch64-linux-gnu-strip:binutils-aarch64-linux-gnu \
  qemu-aarch64-static:qemu-user-static; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } \
    || die "could not install ${need[*]} (run as root, or install them yourself)"
fi
# The store tests and tests/postgres.rs start throwaway PostgreSQL clusters from Debian's binaries
# (initdb and postgres in /usr/lib/postgresql/*/bin, not on PATH), run as the postgres user the
# package creates. Without them those tests fail: they never skip.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || ! id -u postgres >/dev/null 2>&1; then
  say "installing postgresql (the store tests start throwaway clusters of it)"
  command -v apt-get >/dev/null || die "PostgreSQL is missing and there is no apt-get to install it"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
    || die "could not install postgresql (run as root, or install Debian's postgresql package yourself)"
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
    || die "postgresql is installed but /usr/lib/postgresql/*/bin/initdb is not there"
fi
# tests/load_balancer.rs and tests/load_balancer_tls.rs put Debian's HAProxy (/usr/sbin/haproxy,
# off a user's PATH) in front of the consoles, with docs/haproxy.cfg and docs/haproxy-tls.cfg.
# Without it those tests fail: they never skip.
if [ ! -x /usr/sbin/haproxy ]; then
  say "installing haproxy (the load-balancer test runs the documented config)"
  command -v apt-get >/dev/null || die "HAProxy is missing and there is no apt-get to install it"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; } \
    || die "could not install haproxy (run as root, or install Debian's haproxy package yourself)"
  [ -x /usr/sbin/haproxy ] || die "haproxy is installed but /usr/sbin/haproxy is not there"
fi
# tests/metrics.rs lints the console's /metrics with Prometheus' own promtool, which Debian ships
# in its prometheus package (without the recommended exporters). Without it that test fails.
if ! command -v promtool >/dev/null; then
  say "installing prometheus (its promtool checks the console's metrics)"
  command -v apt-get >/dev/null || die "promtool is missing and there is no apt-get to install it"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
    || die "could not install prometheus (run as root, or install Debian's prometheus package yourself)"
  command -v promtool >/dev/null || die "prometheus is installed but promtool is not on PATH"
fi
command -v setpriv >/dev/null || die "setpriv (util-linux) is missing: the PostgreSQL test clusters run through it"

for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  if ! rustup target list --installed | grep -qx "$target"; then
    say "installing the rustup target $target"
    rustup target add "$target" || die "could not add the rustup target $target"
  fi
done
# tests/aarch64.rs runs the aarch64 agent under qemu-user. An agent updating itself starts and
# execs its new binary, which the kernel runs through qemu only when qemu-aarch64 is registered
# with binfmt_misc: register Debian's entry (F: qemu is opened now, so it works in chroots too).
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/qemu-aarch64" ]; then
  say "registering qemu-aarch64 with binfmt_misc (the aarch64 agent updates itself under it)"
  [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" || true
  /usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf || true
  [ -e "$binfmt/qemu-aarch64" ] \
    || die "could not register qemu-aarch64 with binfmt_misc (run as root on a VM or a privileged container, or register it on the host: systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf)"
fi

if ! cargo deb --version >/dev/null 2>&1; then
  say "installing cargo-deb (builds the .deb)"
  cargo install --locked cargo-deb --version 3.8.0 || die "could not install cargo-deb"
fi

# A build from scratch takes about 5 GB (target/), and the tests a few more for container
# roots and scratch files: stop now rather than half-way with "No space left on device".
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
need_gb=8
[ -d target/debug ] && need_gb=3
[ "$free_kb" -ge $((need_gb * 1024 * 1024)) ] \
  || die "only $((free_kb / 1024)) MB free on $(df -P . | awk 'NR == 2 { print $6 }'): the build and tests need about $need_gb GB (free some, or cargo clean)"
# A fresh checkout builds once: incremental caches would only take disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "building static agent 0.2.0: the second release the self-update tests move agents to"
TASKNODE_VERSION=0.2.0 cargo build --locked --target x86_64-unknown-linux-musl -p tasknode
mkdir -p target/update-test
strip -o target/update-test/tasknode-0.2.0 target/x86_64-unknown-linux-musl/debug/tasknode
export TASKNODE_UPDATE_AGENT=$PWD/target/update-test/tasknode-0.2.0
say "building static agent 0.3.0 that exits 1 three seconds after it starts: the crash-loop tests' release"
TASKNODE_VERSION=0.3.0 TASKNODE_TEST_EXIT_AFTER_SECS=3 cargo build --locked --target x86_64-unknown-linux-musl -p tasknode
strip -o target/update-test/tasknode-0.3.0-exits target/x86_64-unknown-linux-musl/debug/tasknode
export TASKNODE_CRASH_AGENT=$PWD/target/update-test/tasknode-0.3.0-exits
say "building the static agent the install tests serve"
cargo build --locked --target x86_64-unknown-linux-musl -p tasknode
export TASKNODE_STATIC_AGENT=$PWD/target/x86_64-unknown-linux-musl/debug/tasknode
say "building static aarch64 agents 0.2.0 and the current version (debug, stripped): the qemu tests run them"
TASKNODE_VERSION=0.2.0 cargo build --locked --target aarch64-unknown-linux-musl -p tasknode
aarch64-linux-gnu-strip -o target/update-test/tasknode-0.2.0-aarch64 target/aarch64-unknown-linux-musl/debug/tasknode
export TASKNODE_UPDATE_AGENT_AARCH64=$PWD/target/update-test/tasknode-0.2.0-aarch64
cargo build --locked --target aarch64-unknown-linux-musl -p tasknode
aarch64-linux-gnu-strip -o target/update-test/tasknode-aarch64 target/aarch64-unknown-linux-musl/debug/tasknode
export TASKNODE_STATIC_AGENT_AARCH64=$PWD/target/update-test/tasknode-aarch64
say "building the static console the console-package tests put in packages"
cargo build --locked --target x86_64-unknown-linux-musl -p tasknode-console
export TASKNODE_STATIC_CONSOLE=$PWD/target/x86_64-unknown-linux-musl/debug/tasknode-console
say "building the workspace binaries the end-to-end tests run"
cargo build --workspace --bins --locked
say "cargo test (unit and end-to-end)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Every test binary runs even after one fails, so a run names every failure at once.
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$work/test.log"
say "quick start: scripts/run.sh"
TASKNODE_STATE=$work/state TASKNODE_PORT=0 TASKNODE_PROFILE=debug TASKNODE_RUN_ONCE=1 scripts/run.sh
say "all checks passed"
# One closing line over every test binary: cargo's own last line is often an empty doc-test run.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$work/test.log"
