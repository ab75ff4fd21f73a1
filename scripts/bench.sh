#!/usr/bin/env bash
# Benchmarks: agent size and idle memory, console heartbeat capacity beside nginx,
# install-to-available, and release packaging beside rpmbuild + createrepo_c. Each is run BENCH_RUNS times (default 3); docs/benchmarks.md gets the
# median, min and max of each, with the machine and commit. Everything runs on loopback and
# stops by itself. BENCH_QUICK=1 runs small versions (a smoke test of this script).
#
# Takes about 10 minutes on 2 cores (3 runs); needs root for the install benchmark (chroot).
# `scripts/bench.sh signin` runs only the sign-in-under-a-flood benchmark
# (scripts/bench-signin.sh) and updates only its rows; `scripts/bench.sh ha` runs only the
# fleet-scale benchmarks, SQLite beside two consoles on PostgreSQL (scripts/bench-ha.sh:
# 100,000 agents heartbeating, 10,000 tasks to 5,000 servers, failover), and updates only theirs;
# `scripts/bench.sh agent` runs only the agent's size and idle memory and updates only `agent_*`;
# `scripts/bench.sh packaging` runs only release packaging beside rpmbuild and createrepo_c
# (scripts/bench-packaging.sh) and updates only its rows.
set -euo pipefail

cd "$(dirname "$0")/.."
if [ "${1:-}" = signin ]; then
  exec scripts/bench-signin.sh --write
fi
if [ "${1:-}" = ha ]; then
  exec scripts/bench-ha.sh --write
fi
if [ "${1:-}" = packaging ]; then
  exec scripts/bench-packaging.sh --write
fi
AGENT_ONLY=0
[ "${1:-}" = agent ] && AGENT_ONLY=1
RUNS=${BENCH_RUNS:-3}
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  BEATS=10 AGENTS=1000 HB_SECS=10s SAT_SECS=5s
else
  BEATS=60 AGENTS=10000 HB_SECS=30s SAT_SECS=10s
fi
CONNECTIONS=64
OUT=docs/benchmarks.md

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---- what it needs ----------------------------------------------------------------------
need=()
for pair in nginx:nginx musl-gcc:musl-tools python3:python3 busybox:busybox-static useradd:passwd curl:curl \
  rpmbuild:rpm rpmsign:rpm createrepo_c:createrepo-c gpg:gnupg; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } \
    || die "could not install ${need[*]}"
fi
rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
  || rustup target add x86_64-unknown-linux-musl || die "could not add the musl target"

say "building release binaries"
# The static agent is built as `tasknode-dist build` builds it: the agent profile (Cargo.toml).
if [ "$AGENT_ONLY" = 1 ]; then
  # Only the static agent is measured (not the glibc reference, whose row is kept): a debug
  # console answers its heartbeats, which spares release builds of over 10 minutes on 2 cores.
  cargo build --locked -p tasknode-console
else
  cargo build --release --locked -p tasknode-console -p tasknode-bench -p tasknode -p tasknode-dist
  # The self-update benchmark moves an agent to a second real build: 0.2.0.
  TASKNODE_VERSION=0.2.0 cargo build --profile agent --locked --target x86_64-unknown-linux-musl -p tasknode
  mkdir -p target/update-bench
  cp target/x86_64-unknown-linux-musl/agent/tasknode target/update-bench/tasknode-0.2.0
  AGENT_V2=$PWD/target/update-bench/tasknode-0.2.0
fi
cargo build --profile agent --locked --target x86_64-unknown-linux-musl -p tasknode
CONSOLE=$PWD/target/release/tasknode-console
[ "$AGENT_ONLY" = 1 ] && CONSOLE=$PWD/target/debug/tasknode-console
LOADGEN=$PWD/target/release/tasknode-loadgen
AGENT=$PWD/target/x86_64-unknown-linux-musl/agent/tasknode
DIST=$PWD/target/release/tasknode-dist
file "$AGENT" | grep -q 'static' || die "$AGENT is not statically linked"

WORK=$(mktemp -d)
PIDS=()
MOUNTS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
record() { printf '{"metric":"%s","unit":"%s","value":%s}\n' "$1" "$2" "$3" >>"$RESULTS"; }
# seconds since $1 (a `date +%s.%N`)
since() { python3 -c "import time; print(time.time() - $1)"; }

mkdir -p "$WORK/agents"
cp "$AGENT" "$WORK/agents/tasknode-x86_64"

# start_console DIR FLAGS...: starts a console on a free port; sets CONSOLE_URL, CONSOLE_PID.
start_console() {
  local data=$1
  shift
  "$CONSOLE" serve --data "$data" --listen 127.0.0.1:0 --agent-dir "$WORK/agents" "$@" \
    >"$data.out" 2>"$data.log" &
  CONSOLE_PID=$!
  PIDS+=("$CONSOLE_PID")
  for _ in $(seq 100); do
    [ -s "$data/console.url" ] && break
    sleep 0.1
  done
  [ -s "$data/console.url" ] || die "console did not start: $(cat "$data.log")"
  CONSOLE_URL=$(cat "$data/console.url")
}

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# ---- agent size -------------------------------------------------------------------------
say "agent binary size"
for _ in $(seq "$RUNS"); do
  record agent_binary_static_musl MiB "$(python3 -c "import os; print(os.path.getsize('$AGENT') / 1048576)")"
  [ "$AGENT_ONLY" = 1 ] \
    || record agent_binary_glibc MiB "$(python3 -c "import os; print(os.path.getsize('target/release/tasknode') / 1048576)")"
done

# ---- agent idle RSS after N heartbeats ---------------------------------------------------
say "agent idle RSS after $BEATS heartbeats ($RUNS runs)"
for run in $(seq "$RUNS"); do
  data=$WORK/rss$run
  cut -d' ' -f1 /proc/loadavg >>"$WORK/rss-load"
  start_console "$data" --heartbeat-interval 1s
  export TASKNODE_DATA=$data TASKNODE_CONSOLE=$CONSOLE_URL
  "$CONSOLE" user create bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["password"])' >"$WORK/pw"
  chmod 600 "$WORK/pw"
  "$CONSOLE" group create rss --network classic >/dev/null
  "$CONSOLE" server add --group rss --name "$(uname -n | tr 'A-Z' 'a-z')" >/dev/null
  conf=$WORK/agent$run/conf/tasknode.conf
  "$AGENT" enroll --console "$CONSOLE_URL" --user-name bench --password-file "$WORK/pw" \
    --enable-uuid false --config "$conf" >/dev/null
  "$AGENT" run --config "$conf" 2>/dev/null &
  agent=$!
  PIDS+=("$agent")
  log=$WORK/agent$run/logs/heartbeat.log
  for _ in $(seq $((BEATS * 2 + 20))); do
    [ -f "$log" ] && [ "$(wc -l <"$log")" -ge "$BEATS" ] && break
    sleep 1
  done
  [ "$(wc -l <"$log")" -ge "$BEATS" ] || die "the agent did not heartbeat $BEATS times"
  rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$agent/status")
  record agent_idle_rss MiB "$(python3 -c "print($rss_kb / 1024)")"
  stop_pid "$agent"
  stop_pid "$CONSOLE_PID"
  unset TASKNODE_DATA TASKNODE_CONSOLE
done

# What each setting of the agent's build bought and cost, for the notes under the table.
AGENT_NOTES=$(cat <<'NOTES'
- agent size, what each setting buys (static x86_64 agent, stripped; one build each, one after another on 2026-12-06) and costs:
  - `opt-level = "s"` for the whole agent build (`[profile.agent]`, which `tasknode-dist build`, this script and `scripts/run.sh` use; the console and tests keep `release`): 5.727 to 4.418 MiB (-1.31 MiB). Cost: its CPU-bound code (TLS, JSON, SHA-256 of an update) is optimised for size; not measured apart from the `update_agent_s` and `task_*` rows of a full run.
  - `tracing_subscriber::filter::Targets` instead of `EnvFilter` (the workspace no longer enables `env-filter`; the console adds it): 6.215 to 5.727 MiB (-0.49 MiB, regex leaves the agent). Cost: `TASKNODE_LOG` takes `target=level` lists only (no span or field matchers), and a filter it cannot read now stops the agent with an error naming `TASKNODE_LOG` instead of being ignored.
  - tried and not kept: `opt-level = "z"` or `"s"` for the tasknode package alone (`[profile.release.package.tasknode]`: 6.54 and 6.62 MiB, bigger, since its dependencies stay at 3); `panic = "abort"`: the agent relies on tokio catching a task's panic (the update download task's `JoinError` is logged and the agent carries on; a log-service connection's panic ends only that connection), so unwind stays. `lto = "fat"`, `codegen-units = 1` and `strip = true` were already set, and the runtime was already `current_thread` (no worker threads to trim).
NOTES
)

if [ "$AGENT_ONLY" = 1 ]; then
  say "writing the agent rows of $OUT"
  python3 - "$RESULTS" "$OUT" "$RUNS" "$QUICK" "$(tr '\n' ' ' <"$WORK/rss-load")" "$AGENT_NOTES" <<'PY'
import sys
sys.dont_write_bytecode = True  # no __pycache__ in the checkout
sys.path.insert(0, "scripts")
import benchrows
results, out, runs, quick, loads, notes = sys.argv[1:7]
rows = benchrows.read(results)
new = benchrows.table(rows, {"agent_binary_static_musl": ("<= 5 MiB", lambda v: v <= 5),
                             "agent_idle_rss": ("<= 4 MiB", lambda v: v <= 4)})
commit, when = benchrows.stamp()
note = (f"- agent rows (`agent_binary_static_musl`, `agent_idle_rss`): measured alone by `scripts/bench.sh agent` on {when}, commit {commit}, {runs} runs"
        f"{' in BENCH_QUICK mode' if quick == '1' else ''}, same machine, a debug console answering; 1-minute load average before each idle-memory run: {loads.strip()}")
lines = open(out).read().split("\n")
if "- agent size, what each setting buys" in "\n".join(lines):
    start = next(i for i, l in enumerate(lines) if l.startswith("- agent size, what each setting buys"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  - ")), len(lines))
    del lines[start:end]
lines = benchrows.merge(lines, new, note, [f"| {m} |" for m, _ in rows] + ["- agent rows ("])
size = next(i for i, l in enumerate(lines) if l.startswith("- `agent_binary_*`"))
lines[size] = ("- `agent_binary_*`: size of the static agent as packages ship it (`cargo build --profile agent --target "
               "x86_64-unknown-linux-musl`: static, stripped, fat LTO, optimised for size) and, for reference, the glibc build (`--release`).")
after = next(i for i, l in enumerate(lines) if l.startswith("- `agent_idle_rss`")) + 1
lines[after:after] = notes.split("\n")
open(out, "w").write("\n".join(lines))
PY
  say "done: $OUT"
  exit 0
fi

# ---- console heartbeat capacity ----------------------------------------------------------
say "console heartbeat capacity: $AGENTS agents at a 10 s interval, and saturation beside nginx"
data=$WORK/capacity
start_console "$data" --heartbeat-interval 10s
"$LOADGEN" enroll --console "$CONSOLE_URL" --token-file "$data/admin.token" --agents "$AGENTS" \
  --state "$WORK/nodes.json" --concurrency 32 >"$WORK/enroll.json"
for run in $(seq "$RUNS"); do
  "$LOADGEN" heartbeat --console "$CONSOLE_URL" --state "$WORK/nodes.json" --interval 10s \
    --duration "$HB_SECS" >"$WORK/hb$run.json"
  python3 - "$WORK/hb$run.json" >>"$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for k, unit in [("rate_per_s", "heartbeats/s"), ("p50_ms", "ms"), ("p99_ms", "ms"), ("max_ms", "ms"), ("errors", "count")]:
    print(json.dumps({"metric": f"console_{r['agents']}_agents_10s_{k}", "unit": unit, "value": r[k]}))
PY
  "$LOADGEN" saturate --console "$CONSOLE_URL" --state "$WORK/nodes.json" \
    --connections "$CONNECTIONS" --duration "$SAT_SECS" >"$WORK/sat$run.json"
done
stop_pid "$CONSOLE_PID"

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx;
  scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:18404; location / { return 204; } }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
sleep 1
for run in $(seq "$RUNS"); do
  "$LOADGEN" saturate --url http://127.0.0.1:18404/ --connections "$CONNECTIONS" \
    --duration "$SAT_SECS" >"$WORK/nginx$run.json"
done
stop_pid "$NGINX_PID"
python3 - "$WORK" "$RUNS" >>"$RESULTS" <<'PY'
import json, sys
work, runs = sys.argv[1], int(sys.argv[2])
for i in range(1, runs + 1):
    c = json.load(open(f"{work}/sat{i}.json"))
    n = json.load(open(f"{work}/nginx{i}.json"))
    for name, r in [("console", c), ("nginx_204", n)]:
        print(json.dumps({"metric": f"saturation_{name}_rate", "unit": "requests/s", "value": r["rate_per_s"]}))
        print(json.dumps({"metric": f"saturation_{name}_p99", "unit": "ms", "value": r["p99_ms"]}))
    print(json.dumps({"metric": "saturation_console_over_nginx", "unit": "ratio", "value": c["rate_per_s"] / n["rate_per_s"]}))
PY

# ---- install-to-available ------------------------------------------------------------------
INSTALL_NOTE=
if [ "$(id -u)" = 0 ]; then
  say "install-to-available ($RUNS runs, each in a fresh chroot)"
  data=$WORK/install
  start_console "$data" --heartbeat-interval 1s
  export TASKNODE_DATA=$data TASKNODE_CONSOLE=$CONSOLE_URL
  "$CONSOLE" user create inst >/dev/null
  "$CONSOLE" group create inst --network vpc >/dev/null
  for run in $(seq "$RUNS"); do
    uuid=$(printf '4c4c4544-0042-3510-8051-b4c04f3330%02d' "$run")
    "$CONSOLE" server add --group inst --name "$uuid" >/dev/null
    root=$WORK/root$run
    mkdir -p "$root"/{bin,etc,tmp,proc,dev,home,root,var/lib,sys/class/dmi/id}
    chmod 1777 "$root/tmp"
    cp "$(command -v busybox)" "$root/bin/busybox"
    chroot "$root" /bin/busybox --install -s /bin
    # curl: the printed command's fetcher (busybox wget cannot read the link from stdin).
    for prog in useradd userdel curl; do
      p=$(command -v "$prog")
      for f in "$p" $(ldd "$p" | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$f")"
        cp -L "$f" "$root$f"
      done
    done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"
    printf 'root:*:19000:0:99999:7:::\n' >"$root/etc/shadow"
    printf '127.0.0.1 localhost %s\n' "$(uname -n)" >"$root/etc/hosts"
    printf 'CentOS release 6.10 (Final)\n' >"$root/etc/redhat-release"
    printf '%s\n' "$uuid" >"$root/sys/class/dmi/id/product_uuid"
    for m in proc dev; do mount --bind "/$m" "$root/$m"; MOUNTS+=("$root/$m"); done
    cmd=$("$CONSOLE" install-command --group inst --user inst --json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["command"])')
    start=$(date +%s.%N)
    chroot "$root" /bin/sh -c "$cmd" >"$WORK/install$run.log" 2>&1 || die "install failed: $(cat "$WORK/install$run.log")"
    end=$(date +%s.%N)
    record install_to_available s "$(python3 -c "print($end - $start)")"
    chroot "$root" /bin/sh -c '/home/admin/tasknode/bin/serverctl stop' >/dev/null 2>&1 || true
    for m in proc dev; do umount -l "$root/$m"; done
  done
  stop_pid "$CONSOLE_PID"
  unset TASKNODE_DATA TASKNODE_CONSOLE
else
  INSTALL_NOTE="install-to-available was not measured: it needs root (chroot)."
fi

# ---- task dispatch and log streaming -----------------------------------------------------
if [ "$QUICK" = 1 ]; then DISPATCH_TASKS=20 LOG_MB=20; else DISPATCH_TASKS=200 LOG_MB=200; fi
say "tasks: dispatch of $DISPATCH_TASKS, one at a time, and a ${LOG_MB} MB log, classic and vpc ($RUNS runs)"
VPC_UUID=4c4c4544-0042-3510-8051-b4c04f33beef
# start_task_agent NETWORK: a group named NETWORK with this host in it, and a release agent for it.
start_task_agent() {
  local network=$1 home=$WORK/$1-agent$run root=
  local conf=$home/conf/tasknode.conf name
  name=$(uname -n | tr 'A-Z' 'a-z')
  if [ "$network" = vpc ]; then
    # A VPC server is known by its DMI UUID: this one reports its own, from a host root of its own.
    root=$home/root
    name=$VPC_UUID
    mkdir -p "$root/sys/class/dmi/id" "$root/proc"
    cp /proc/meminfo "$root/proc/meminfo"
    echo "$VPC_UUID" >"$root/sys/class/dmi/id/product_uuid"
  fi
  "$CONSOLE" group create "$network" --network "$network" >/dev/null
  "$CONSOLE" server add --group "$network" --name "$name" >/dev/null
  env ${root:+TASKNODE_ROOT="$root"} "$AGENT" enroll --console "$CONSOLE_URL" --user-name disp --password-file "$WORK/pw" \
    --enable-uuid "$([ "$network" = vpc ] && echo true || echo false)" --config "$conf" >/dev/null
  printf '\n[logs]\nlisten = "127.0.0.1:0"\n\n[tasks]\nlog_max_bytes = %s\n' $((LOG_MB * 1000000 + 1000000)) >>"$conf"
  if [ "$(id -u)" = 0 ]; then
    # Tasks never run as root: as root, the agent runs them as nobody, who must reach work/.
    printf 'user = "nobody"\n' >>"$conf"
    chmod 711 "$WORK" "$home"
  fi
  env ${root:+TASKNODE_ROOT="$root"} "$AGENT" run --config "$conf" 2>/dev/null &
  PIDS+=("$!")
  TASK_AGENTS+=("$!")
}
for run in $(seq "$RUNS"); do
  data=$WORK/dispatch$run
  start_console "$data" --heartbeat-interval 1s
  export TASKNODE_DATA=$data TASKNODE_CONSOLE=$CONSOLE_URL
  "$CONSOLE" user create disp --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["password"])' >"$WORK/pw"
  chmod 600 "$WORK/pw"
  TASK_AGENTS=()
  start_task_agent classic
  start_task_agent vpc
  for _ in $(seq 100); do
    [ "$("$CONSOLE" server list --json | grep -c '"status": "available"')" = 2 ] && break
    sleep 0.2
  done
  for network in classic vpc; do
    "$LOADGEN" dispatch --console "$CONSOLE_URL" --token-file "$data/admin.token" --group "$network" \
      --tasks "$DISPATCH_TASKS" --log-mb "$LOG_MB" >"$WORK/dispatch-$network$run.json" \
      || die "task benchmark on the $network group failed"
  done
  python3 - "$WORK/dispatch-classic$run.json" "$WORK/dispatch-vpc$run.json" >>"$RESULTS" <<'PY'
import json, sys
classic, vpc = (json.load(open(p)) for p in sys.argv[1:3])
for key in ("p50", "p99", "max"):
    print(json.dumps({"metric": f"task_dispatch_{key}_ms", "unit": "ms", "value": classic[f"dispatch_{key}_ms"]}))
print(json.dumps({"metric": "task_dispatch_vpc_p50_ms", "unit": "ms", "value": vpc["dispatch_p50_ms"]}))
print(json.dumps({"metric": "task_log_vpc_pushed", "unit": "MB/s", "value": vpc["log_mb_per_s"]}))
print(json.dumps({"metric": "task_log_vpc_read", "unit": "MB/s", "value": vpc["log_read_mb_per_s"]}))
print(json.dumps({"metric": "task_log_classic_read", "unit": "MB/s", "value": classic["log_read_mb_per_s"]}))
PY
  for p in "${TASK_AGENTS[@]}"; do stop_pid "$p"; done
  stop_pid "$CONSOLE_PID"
  unset TASKNODE_DATA TASKNODE_CONSOLE
done

# ---- packaging -------------------------------------------------------------------------------
BENCH_RUNS=$RUNS BENCH_QUICK=$QUICK scripts/bench-packaging.sh --records >>"$RESULTS"

# ---- the report ----------------------------------------------------------------------------
# ---- self-update ---------------------------------------------------------------------------
if [ "$QUICK" = 1 ]; then ROLL_AGENTS=50; else ROLL_AGENTS=500; fi
say "self-update: a real agent moving to 0.2.0, and $ROLL_AGENTS simulated agents converging in batches of 25% ($RUNS runs)"
keyhex=$("$DIST" keygen --out "$WORK/upkeys" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifest_public_key"])')
"$DIST" build --out "$WORK/updist" --version 0.2.0 --targets none --keys "$WORK/upkeys" \
  --agent "$AGENT_V2" --source-date-epoch 1700000000 >/dev/null
host=$(uname -n | tr 'A-Z' 'a-z')
for run in $(seq "$RUNS"); do
  data=$WORK/update$run
  start_console "$data" --heartbeat-interval 1s --dist "$WORK/updist"
  export TASKNODE_DATA=$data TASKNODE_CONSOLE=$CONSOLE_URL
  "$CONSOLE" user create upd --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["password"])' >"$WORK/uppw"
  chmod 600 "$WORK/uppw"
  "$CONSOLE" group create upd --network classic >/dev/null
  "$CONSOLE" server add --group upd --name "$host" >/dev/null
  home=$WORK/upd-agent$run
  mkdir -p "$home/bin"
  cp "$AGENT" "$home/bin/tasknode"
  "$home/bin/tasknode" enroll --console "$CONSOLE_URL" --user-name upd --password-file "$WORK/uppw" \
    --enable-uuid false --config "$home/conf/tasknode.conf" >/dev/null
  printf '\n[logs]\nlisten = "127.0.0.1:0"\n\n[update]\ntrusted_keys = ["%s"]\n' "$keyhex" >>"$home/conf/tasknode.conf"
  "$home/bin/tasknode" run --config "$home/conf/tasknode.conf" 2>/dev/null &
  upd_pid=$!
  PIDS+=("$upd_pid")
  for _ in $(seq 100); do
    "$CONSOLE" server list --json | grep -q '"status": "available"' && break
    sleep 0.2
  done
  "$CONSOLE" release publish "$WORK/updist/releases/0.2.0/manifest.stable.json" >/dev/null
  t0=$(date +%s.%N)
  "$CONSOLE" release pin --group upd --version 0.2.0 >/dev/null
  for _ in $(seq 600); do
    "$CONSOLE" server list --json | python3 -c '
import json, sys
s = [x for x in json.load(sys.stdin) if x["group"] == "upd"][0]
sys.exit(0 if s["version"] == "0.2.0" and (s.get("update") or {}).get("state") == "current" else 1)' && break
    sleep 0.1
  done
  record update_agent_s s "$(since "$t0")"
  # The longest wait between two answered heartbeats from the pin to the end of probation.
  python3 - "$home/logs/heartbeat.log" "$t0" >>"$RESULTS" <<'PY'
import datetime, json, sys
t0 = float(sys.argv[2])
times = []
for line in open(sys.argv[1]):
    stamp, rest = line.split(" ", 1)
    if "status=200" not in rest:
        continue
    t = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    times.append(t)
times = sorted(times)
before = [t for t in times if t < t0]
after = [t for t in times if t >= t0]
window = before[-1:] + after
gap = max(b - a for a, b in zip(window, window[1:]))
print(json.dumps({"metric": "update_heartbeat_gap_s", "unit": "s", "value": round(gap, 3)}))
PY
  stop_pid "$upd_pid"
  "$LOADGEN" enroll --console "$CONSOLE_URL" --token-file "$data/admin.token" --agents "$ROLL_AGENTS" \
    --state "$WORK/roll$run.json" --concurrency 16 >/dev/null
  "$LOADGEN" rollout --console "$CONSOLE_URL" --token-file "$data/admin.token" --state "$WORK/roll$run.json" \
    --version 0.2.0 --batch 25% --interval 1s --update-time 2s >"$WORK/roll$run.out" \
    || die "rollout benchmark failed"
  python3 - "$WORK/roll$run.out" >>"$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"metric": f"rollout_{r['agents']}_agents_25pct_converge_s", "unit": "s", "value": r["converge_s"]}))
PY
  stop_pid "$CONSOLE_PID"
  unset TASKNODE_DATA TASKNODE_CONSOLE
done

# ---- sign-in under a password flood ----------------------------------------------------------
BENCH_RUNS=$RUNS scripts/bench-signin.sh --records >>"$RESULTS"

# ---- the control plane at fleet scale: SQLite beside two consoles on PostgreSQL --------------
BENCH_RUNS=$RUNS BENCH_QUICK=$QUICK scripts/bench-ha.sh --records >>"$RESULTS"

say "writing $OUT"
python3 - "$RESULTS" "$OUT" "$RUNS" "$QUICK" "$INSTALL_NOTE" "$(cat "$WORK/enroll.json")" "$AGENT_NOTES" <<'PY'
import json, os, platform, statistics, subprocess, sys, datetime
results, out, runs, quick, install_note, enroll, agent_notes = sys.argv[1:8]
rows = {}
for line in open(results):
    r = json.loads(line)
    rows.setdefault((r["metric"], r["unit"]), []).append(float(r["value"]))
def cmd(*a):
    return subprocess.run(a, capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
mem = next((int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
targets = {
    "agent_binary_static_musl": ("<= 5 MiB", lambda v: v <= 5),
    "agent_idle_rss": ("<= 4 MiB", lambda v: v <= 4),
    "dist_build_over_rpmbuild_createrepo": ("<= 0.5", lambda v: v <= 0.5),
    "index_1000_rpms_ours_over_createrepo_c": ("<= 0.5", lambda v: v <= 0.5),
    "install_to_available": ("< 3 s", lambda v: v < 3),
    "task_dispatch_p50_ms": ("<= 50 ms", lambda v: v <= 50),
    "update_heartbeat_gap_s": ("< 2 s", lambda v: v < 2),
    "signin_flood_probe_max_ms": ("< 2000 ms", lambda v: v < 2000),
    "signin_flood_other_answers": ("0", lambda v: v == 0),
}
for (m, _), _v in rows.items():
    if m.endswith("_10s_p99_ms"):
        targets[m] = ("< 20 ms", lambda v: v < 20)
    if m.startswith("ha_heartbeat_") and m.endswith("_p99_ms") and not m.endswith("_lag_p99_ms"):
        targets[m] = ("< 20 ms", lambda v: v < 20)
    if m.startswith("ha_heartbeat_") and m.endswith("_errors"):
        targets[m] = ("0", lambda v: v == 0)
    if m.startswith("ha_dispatch_") and m.endswith("_started_per_s"):
        targets[m] = (">= 1000 tasks/s", lambda v: v >= 1000)
    if m.startswith("ha_dispatch_") and (m.endswith("_lost") or m.endswith("_twice") or m.endswith("_unfinished")):
        targets[m] = ("0", lambda v: v == 0)
    if m.startswith("ha_failover_") and m.endswith("_all_back_s"):
        targets[m] = ("< 10 s", lambda v: v < 10)
    if m.startswith("ha_failover_") and m.endswith("_stopped"):
        targets[m] = ("0", lambda v: v == 0)
lines = [
    "# Benchmarks",
    "",
    "Written by `scripts/bench.sh`; do not edit by hand. Every number is over "
    f"{runs} runs (median, min, max){' in BENCH_QUICK mode (smaller loads)' if quick == '1' else ''}.",
    "",
    f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
    f"- commit: {cmd('git', 'rev-parse', '--short', 'HEAD')}",
    f"- machine: {os.cpu_count()} cores ({cpu}), {mem} MiB memory, {platform.system()} {platform.release()}",
    f"- rustc: {cmd('rustc', '--version')}",
    f"- simulated agents enrolled before the runs: {json.loads(enroll)['enrolled']} "
    f"(in {json.loads(enroll)['seconds']:.1f} s, one-time tokens)",
    "",
    "| metric | unit | median | min | max | target |",
    "| --- | --- | --- | --- | --- | --- |",
]
for (m, unit), vals in sorted(rows.items()):
    med = statistics.median(vals)
    target = ""
    for key, (text, ok) in targets.items():
        if m == key or m.startswith(key):
            target = f"{text}: {'met' if ok(med) else 'MISSED'}"
    lines.append(f"| {m} | {unit} | {med:.3f} | {min(vals):.3f} | {max(vals):.3f} | {target} |")
lines += [
    "",
    "## What each measures",
    "",
    "- `agent_binary_*`: size of the static agent as packages ship it (`cargo build --profile agent --target x86_64-unknown-linux-musl`: "
    "static, stripped, fat LTO, optimised for size) and, for reference, the glibc build (`--release`).",
    "- `agent_idle_rss`: VmRSS of the static agent after it has sent "
    f"{'10' if quick == '1' else '60'} heartbeats (console asks for one a second), idle otherwise.",
    *agent_notes.split("\n"),
    "- `console_N_agents_10s_*`: N simulated agents (`tasknode-loadgen heartbeat`), each heartbeating every 10 s from a random phase, "
    "against the release console on this machine; the load generator shares the 2 cores. Latency is from send to full response.",
    "- `saturation_*`: back-to-back requests over "
    f"{64} connections (`tasknode-loadgen saturate`): console heartbeats (authenticated, JSON, recorded in memory) beside nginx answering "
    "a static 204 on the same machine in the same run, the ceiling of this machine and client; `saturation_console_over_nginx` is the ratio.",
    "- `install_to_available`: seconds from starting the printed install command (`echo 'url = \"LINK\"' | curl -fsSL -K - | sh`) in a fresh chroot (busybox, CentOS 6 release files) to the "
    "script's exit, which it reaches once the console shows the server available.",
    "- `dist_build_4_dists_s`: `tasknode-dist build --targets el6,el7,al7,al8` of the release agent: four signed RPMs (xz level 2) and four signed "
    "repositories. `rpmbuild_createrepo_4_dists_s` is the same work by the usual tools in the same run: `rpmbuild -bb` (xz level 2, SHA-256 "
    "file digests), `rpmsign --addsign`, `createrepo_c --no-database` and `gpg --detach-sign` of repomd.xml, for each dist; "
    "`dist_build_over_rpmbuild_createrepo` is ours over theirs, run by run.",
    "- `index_N_rpms_*`: repodata (primary, filelists, other; gzip; SHA-256) for N small generated RPMs from scratch: "
    "`tasknode-dist index` (which also signs repomd.xml) beside `createrepo_c --no-database`; the ratio is ours over theirs. "
    "`reindex_N_rpms_tasknode_dist_s` indexes the same directory again, reusing what the old metadata lists.",
    "- `task_dispatch_*`: from submitting a task (`POST /api/v1/tasks`) to the first instruction of its script (it prints `date +%s%N`), "
    "tasks submitted one at a time to a classic group served by the release agent on this host, over loopback (`tasknode-loadgen dispatch`); "
    "`task_dispatch_vpc_p50_ms` is the same for a VPC group. `task_log_vpc_pushed`: a task writing 200 MB (20 in quick mode) on the VPC server, "
    "megabytes per second from its submit until the console holds the whole log its agent pushed. `task_log_*_read`: reading that log back through "
    "`GET /api/v1/tasks/ID/log`, 1 MiB at a time: from the console's disk (vpc), or through the console from the classic agent's log service.",
    "- `update_agent_s`: the release agent (0.1.0) on this host, heartbeating every second, from `release pin` of 0.2.0 (a second real release build, "
    "published from a signed manifest) until the console shows it running 0.2.0 and done: manifest check, download, a trial of 3 heartbeats, swap, exec, "
    "and 3 heartbeats of probation. `update_heartbeat_gap_s`: the longest time between two answered heartbeats in that window (heartbeat.log; "
    "the interval itself is 1 s).",
    "- `rollout_N_agents_25pct_converge_s`: N simulated agents (`tasknode-loadgen rollout`) heartbeating every second, from starting a rollout "
    "in batches of 25% until all run the new version; each simulated update takes 2 s, so four batches cost at least 4 x (2 s + a heartbeat).",
    "- `signin_flood_*`: a valid web sign-in (`POST /ui/login`, answered 303) from 127.0.0.1, where the user signed in once before the flood, "
    "20 times one after another while 2000 wrong-password sign-ins are kept in flight from 200 other loopback addresses over 1,000 sprayed "
    "user names (`tasknode-loadgen signin`, from 3 s after the flood starts, release console on this machine). `probe_*_ms`: those sign-ins' "
    "latency; `probes_ok`: how many got in. `fresh_address_*`: the same user, in turn with those, each time from an address the console has "
    "never seen, which stands no better than a fresh attacking address. `answers_per_s`, `429_share`: what the flood was answered (401 after "
    "a check, 429 past the queue or while an address or user name backs off); `other_answers`: anything else (errors, dropped connections).",
    "- `ha_*`: the control plane at fleet scale (`scripts/bench-ha.sh`), one console on SQLite (`sqlite`) beside two consoles sharing one "
    "PostgreSQL (`pg2`): 100,000 simulated agents heartbeating every 10 s (`ha_heartbeat_*`), 10,000 tasks to 5,000 simulated servers "
    "each holding a long poll (`ha_dispatch_*`: tasks/s from the first submit to the last start; `lost` and `twice` must be 0), and "
    "SIGKILL of one of the two consoles under heartbeat load (`ha_failover_*`: until every agent is answered again); the script's header "
    "and `scripts/bench.sh ha` say more.",
]
if install_note:
    lines += ["", install_note]
lines += ["", "Reproduce: `scripts/bench.sh` (`BENCH_RUNS=5` for more runs, `BENCH_QUICK=1` for a quick check).", ""]
open(out, "w").write("\n".join(lines))
PY
say "done: $OUT"
