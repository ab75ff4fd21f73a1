#!/usr/bin/env bash
# Runs tasknode on this machine: builds the console, the agent and the static agent, turns the
# static agent into a signed release (tarball, a .deb, RPMs for el6/el7/al7/al8 and their signed
# yum repositories; release keys made once), starts the console with its embedded store serving
# that release, creates a user, a classic resource group "demo" with this host in it, enrolls an
# agent on this host, waits until the console shows it available, submits a task and prints its
# log. Then it keeps both running until Ctrl-C (or exits at once with TASKNODE_RUN_ONCE=1).
#
# Run as root, the agent runs tasks as `nobody` in a working directory under /tmp (tasks never
# run as root; an installed agent runs as the user admin and its tasks with it).
#
# Environment:
#   TASKNODE_PORT     console port on 127.0.0.1 (default 8080; 0 picks a free one)
#   TASKNODE_STATE    where data, config and logs go (default .tasknode in the checkout)
#   TASKNODE_PROFILE  cargo profile to build: release (default) or debug
#   TASKNODE_RUN_ONCE 1 = stop both and exit once the demo task has run (used by the tests)
set -euo pipefail

cd "$(dirname "$0")/.."
port=${TASKNODE_PORT:-8080}
state=${TASKNODE_STATE:-$PWD/.tasknode}
profile=${TASKNODE_PROFILE:-release}
group=demo

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs) and try again"
case $profile in
  # The static agent of a release run is built as packages ship it: the agent profile.
  release) build_flag=--release; bin=target/release agent_profile=agent agent_dir=agent ;;
  debug) build_flag=; bin=target/debug agent_profile=dev agent_dir=debug ;;
  *) die "TASKNODE_PROFILE must be release or debug, not '$profile'" ;;
esac

if ! command -v musl-gcc >/dev/null; then
  say "installing musl-tools (the static agent's C compiler)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools; } \
    || die "could not install musl-tools; install it (apt-get install musl-tools) and try again"
fi
rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
  || rustup target add x86_64-unknown-linux-musl \
  || die "could not add the rustup target x86_64-unknown-linux-musl"

if ! cargo deb --version >/dev/null 2>&1; then
  say "installing cargo-deb (tasknode-dist builds the .deb with it)"
  cargo install --locked cargo-deb --version 3.8.0 || die "could not install cargo-deb; install it and try again"
fi

say "building tasknode, tasknode-console and tasknode-dist ($profile)"
cargo build $build_flag --locked -p tasknode -p tasknode-console -p tasknode-dist
say "building the static agent install scripts download ($profile, x86_64-unknown-linux-musl)"
cargo build --profile "$agent_profile" --locked --target x86_64-unknown-linux-musl -p tasknode

mkdir -p "$state"
chmod 700 "$state"
static_agent=$state/build/tasknode
mkdir -p "$state/build"
cp "target/x86_64-unknown-linux-musl/$agent_dir/tasknode" "$static_agent"
# Release builds are stripped already; a debug build is stripped here, as a release would be.
command -v strip >/dev/null && strip "$static_agent"
version=$("$static_agent" --version | awk '{print $2}')
if [ ! -f "$state/keys/package-signing.secret.asc" ]; then
  say "making release signing keys in $state/keys (once)"
  "$bin/tasknode-dist" keygen --out "$state/keys"
fi
# The demo release is rebuilt from scratch each run: a released version never changes.
say "building release $version: agent tarball, .deb, signed RPMs and yum repositories"
rm -rf "$state/dist"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)} \
  "$bin/tasknode-dist" build --out "$state/dist" --version "$version" --keys "$state/keys" \
  --agent "$static_agent"
data=$state/data
agent_conf=$state/agent/conf/tasknode.conf
export TASKNODE_DATA=$data
unset TASKNODE_CONSOLE TASKNODE_TOKEN_FILE

console_pid=
agent_pid=
work_dir=
stop_all() {
  trap - INT TERM EXIT
  [ -n "$agent_pid" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [ -n "$console_pid" ] && kill -TERM "$console_pid" 2>/dev/null && wait "$console_pid" 2>/dev/null || true
  [ -n "$work_dir" ] && rm -rf "$work_dir"
  return 0
}
trap stop_all EXIT
trap 'echo; say "stopping the agent and the console"; stop_all; exit 0' INT TERM

say "starting the console on 127.0.0.1:$port (data in $data)"
rm -f "$data/console.url"
"$bin/tasknode-console" serve --tls --listen "127.0.0.1:$port" --dist "$state/dist" \
  >"$state/console.out" 2>"$state/console.log" &
console_pid=$!
for _ in $(seq 100); do
  [ -s "$data/console.url" ] && break
  kill -0 "$console_pid" 2>/dev/null || { cat "$state/console.log" >&2; die "the console did not start (port $port in use? set TASKNODE_PORT)"; }
  sleep 0.1
done
[ -s "$data/console.url" ] || die "the console did not say where it listens; see $state/console.log"
url=$(cat "$data/console.url")

console() { "$bin/tasknode-console" "$@"; }
host=$(uname -n | tr 'A-Z' 'a-z')

# The demo user's password is shown once by the console; keep it (0600) for later runs.
password_file=$state/demo-user.password
if ! console user list | awk 'NR > 1 {print $1}' | grep -qx demo; then
  say "creating user demo"
  umask 077
  console user create demo --json | sed -n 's/.*"password": "\(.*\)".*/\1/p' >"$password_file"
  umask 022
fi
[ -s "$password_file" ] || die "user demo exists but $password_file is missing; remove $state to start over"

if ! console group list | awk 'NR > 1 {print $1}' | grep -qx "$group"; then
  say "creating classic resource group $group"
  console group create "$group" --network classic
fi
if ! console server list --group "$group" | awk 'NR > 1 {print $1}' | grep -qx "$host"; then
  say "adding this host ($host) to $group"
  console server add --group "$group" --name "$host"
fi

if [ "$(id -u)" = 0 ]; then
  # Tasks never run as root. The agent drops each task to `nobody`, who must reach the task's
  # working directory: the state directory is private, so tasks work under /tmp instead.
  work_dir=$(mktemp -d /tmp/tasknode-quickstart.XXXXXX)
  chmod 711 "$work_dir"
  say "running as root: tasks run as nobody in $work_dir"
  # Enrolling keeps the [tasks] table of the config it finds; the rest is enroll's to write.
  mkdir -p "$(dirname "$agent_conf")"
  cat >"$agent_conf" <<CONF
console_url = "$url"
log_dir = "$state/agent/logs"

[tasks]
user = "nobody"
work_dir = "$work_dir"
CONF
  chmod 600 "$agent_conf"
fi

say "enrolling the agent on this host"
"$bin/tasknode" enroll --console "$url" --console-ca "$data/tls/ca.pem" --user-name demo \
  --password-file "$password_file" --enable-uuid false --config "$agent_conf"

say "starting the agent"
"$bin/tasknode" run --config "$agent_conf" 2>"$state/agent.err" &
agent_pid=$!

say "waiting for the console to show $host available"
available=
for _ in $(seq 300); do
  if console server list --group "$group" --json | tr -d ' \n' | grep -q "\"name\":\"$host\",[^}]*\"status\":\"available\""; then
    available=1
    break
  fi
  kill -0 "$agent_pid" 2>/dev/null || { cat "$state/agent.err" >&2; die "the agent exited"; }
  sleep 0.1
done
[ -n "$available" ] || { console server list >&2; die "$host did not become available within 30 s"; }

console server list --group "$group"

say "submitting a task to group $group"
# shellcheck disable=SC2016 # expanded by the task, on the server
demo_script='echo "hello from $(uname -n), running as $(id -un) in $(pwd)"'
task_id=$(printf '%s\n' "$demo_script" | console task submit --group "$group" --script - --json \
  | sed -n 's/^ *"id": *\([0-9][0-9]*\).*/\1/p' | head -n 1)
[ -n "$task_id" ] || die "submitting the demo task printed no task id"
say "task $task_id: its log"
timeout 60 "$bin/tasknode-console" task log --follow "$task_id" \
  || { console task show "$task_id" >&2; die "task $task_id did not finish within 60 s; see $state/agent/logs/agent.log"; }
task_state=$(console task show "$task_id" --json | sed -n 's/^ *"state": *"\([a-z_]*\)".*/\1/p' | head -n 1)
[ "$task_state" = succeeded ] || { console task show "$task_id" >&2; die "task $task_id ended $task_state"; }
say "task $task_id succeeded"

cat <<MSG

tasknode is running.
  console       $url   (HTTPS with its own CA, $data/tls/ca.pem; admin token: $data/admin.token)
  web console   $url/ui/   (sign in as demo with the password in $password_file,
                or with the admin token; the browser must trust $data/tls/ca.pem)
  admin CLI     TASKNODE_DATA=$data $bin/tasknode-console server list
  agent status  $bin/tasknode status --config $agent_conf
  agent logs    $state/agent/logs/heartbeat.log, $state/agent/logs/agent.log
  console log   $state/console.log
  served agent  $url/dist/agent/tasknode-x86_64 (static; the install scripts download it)
  release       $state/dist (keys: $state/keys); yum repositories under $url/repo/,
                .repo files at $url/yum/{el6,el7,al7,al8}/tasknode.repo

To run a task on group $group and read its log:
  echo 'uptime' | TASKNODE_DATA=$data $bin/tasknode-console task submit --group $group --script -
  TASKNODE_DATA=$data $bin/tasknode-console task log --follow ID

To add another server: add it to a group, then print its one-time install command:
  TASKNODE_DATA=$data $bin/tasknode-console server add --group $group --name OTHER-HOSTNAME
  TASKNODE_DATA=$data $bin/tasknode-console install-command --group $group --user demo
(the console listens on 127.0.0.1 here; for other hosts serve with --listen 0.0.0.0:PORT
 --public-url https://NAME:PORT, which its certificate then covers)
MSG

if [ "${TASKNODE_RUN_ONCE:-}" = 1 ]; then
  say "TASKNODE_RUN_ONCE=1: stopping"
  stop_all
  exit 0
fi
echo "Press Ctrl-C to stop the agent and the console."
wait "$console_pid"
