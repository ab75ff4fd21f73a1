#!/usr/bin/env bash
# The control plane at fleet scale: one console on SQLite beside two consoles sharing one
# PostgreSQL, on this machine, with the load generator beside them:
#   - HB_AGENTS simulated agents heartbeating every 10 s (100,000);
#   - FLEET_TASKS tasks queued to one group of FLEET_SERVERS simulated servers, each holding a
#     long poll (10,000 tasks, 5,000 servers);
#   - failover (PostgreSQL only): FO_AGENTS agents heartbeating to two consoles, one killed with
#     SIGKILL; the time until every agent has had a heartbeat answered again.
# BENCH_RUNS runs of each (default 3); BENCH_QUICK=1 runs small versions (a smoke test).
# The PostgreSQL cluster is a throwaway one (Debian's initdb and postgres on a private port and
# socket, default durability settings), stopped on exit.
# Both databases live in /dev/shm (tmpfs) unless BENCH_HA_DISK=1: this machine's disk takes
# about 2.4 ms per fsync, which alone caps a commit-at-a-time store near 400 commits/s; on tmpfs
# the numbers are the consoles' and the database's own cost.
#
#   scripts/bench-ha.sh --records   print one JSON record per metric and run (bench.sh)
#   scripts/bench-ha.sh --write     also put the rows into docs/benchmarks.md
#                                   (scripts/bench.sh ha runs this)
set -euo pipefail

cd "$(dirname "$0")/.."
MODE=${1:---records}
RUNS=${BENCH_RUNS:-3}
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  HB_AGENTS=2000 HB_SECS=10s FLEET_SERVERS=200 FLEET_TASKS=1000 FO_AGENTS=1000 SETTLE_MAX=${SETTLE_MAX:-0}
else
  HB_AGENTS=100000 HB_SECS=30s FLEET_SERVERS=5000 FLEET_TASKS=10000 FO_AGENTS=10000
fi
# Failover: agents heartbeat every FO_INTERVAL (10,000 at 1 s: the request rate of 100,000 at
# 10 s), so the wait for each agent's next heartbeat (the floor of the measure) is small beside
# what the move costs.
FO_INTERVAL=1s
# Dispatch runs (BENCH_HA_FLEET_RUNS, default BENCH_RUNS), each given at most FLEET_TIMEOUT.
FLEET_RUNS=${BENCH_HA_FLEET_RUNS:-$RUNS}
FLEET_TIMEOUT=${BENCH_HA_FLEET_TIMEOUT:-300s}
OUT=docs/benchmarks.md
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

PGBIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -1)
if [ -z "$PGBIN" ]; then
  say "installing postgresql"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
    || die "could not install postgresql"
  PGBIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -1)
fi

cargo build --release --locked -p tasknode-console -p tasknode-bench -p tasknode >&2
CONSOLE=$PWD/target/release/tasknode-console
LOADGEN=$PWD/target/release/tasknode-loadgen
# 5,000 long polls and a pool of heartbeat connections: more than 1,024 descriptors.
ulimit -n "$(ulimit -Hn)"

if [ "${BENCH_HA_DISK:-0}" = 1 ]; then WORK=$(mktemp -d); else WORK=$(mktemp -d -p /dev/shm); fi
chmod 711 "$WORK"
# Install commands need an agent binary to offer (no install script runs here).
mkdir "$WORK/agents"
cp target/release/tasknode "$WORK/agents/tasknode-x86_64"
PIDS=()
PG_PID=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$PG_PID" ]; then kill -INT "$PG_PID" 2>/dev/null || true; wait "$PG_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
RECORDS=$WORK/records.jsonl
: >"$RECORDS"
LOAD=$WORK/load.txt
: >"$LOAD"
note_load() { awk '{print $1}' /proc/loadavg >>"$LOAD"; }

# ---- a throwaway PostgreSQL ---------------------------------------------------------------
as_pg() {
  if [ "$(id -u)" = 0 ]; then setpriv --reuid postgres --regid postgres --init-groups -- "$@"; else "$@"; fi
}
PG=$WORK/pg
mkdir -m 700 "$PG" "$PG/sock"
python3 -c 'import secrets; print(secrets.token_hex(24))' >"$PG/pwfile"
cp "$PG/pwfile" "$WORK/db-password"
chmod 600 "$PG/pwfile" "$WORK/db-password"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$PG"
as_pg "$PGBIN/initdb" --pgdata "$PG/data" --username postgres --auth-local=trust \
  --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-sync --pwfile="$PG/pwfile" >"$WORK/initdb.log" \
  || die "initdb failed: $(cat "$WORK/initdb.log")"
rm -f "$PG/pwfile"
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PG_ARGS=(-D "$PG/data" -p "$PGPORT" -k "$PG/sock" -c listen_addresses=127.0.0.1 -c max_connections=200)
if [ "$(id -u)" = 0 ]; then
  setpriv --reuid postgres --regid postgres --init-groups -- "$PGBIN/postgres" "${PG_ARGS[@]}" >"$WORK/postgres.log" 2>&1 &
else
  "$PGBIN/postgres" "${PG_ARGS[@]}" >"$WORK/postgres.log" 2>&1 &
fi
PG_PID=$!
for _ in $(seq 100); do
  as_pg "$PGBIN/pg_isready" -q -h "$PG/sock" -p "$PGPORT" && break
  sleep 0.1
done
as_pg "$PGBIN/pg_isready" -q -h "$PG/sock" -p "$PGPORT" || die "postgres did not start: $(cat "$WORK/postgres.log")"
psql_() { as_pg "$PGBIN/psql" -X -q -A -t -h "$PG/sock" -p "$PGPORT" -U postgres "$@"; }

# start_console NAME FLAGS...: a console on a free port; sets CONSOLE_URL, CONSOLE_PID.
start_console() {
  local data=$WORK/$1
  shift
  rm -f "$data/console.url"
  "$CONSOLE" serve --data "$data" --listen 127.0.0.1:0 --agent-dir "$WORK/agents" "$@" >"$data.out" 2>>"$data.log" &
  CONSOLE_PID=$!
  PIDS+=("$CONSOLE_PID")
  for _ in $(seq 300); do
    [ -s "$data/console.url" ] && break
    sleep 0.1
  done
  [ -s "$data/console.url" ] || die "console $data did not start: $(cat "$data.log")"
  CONSOLE_URL=$(cat "$data/console.url")
}
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# record_json FILE PREFIX KEY:UNIT...: one record per key of the loadgen's JSON answer.
record_json() {
  python3 - "$@" >>"$RECORDS" <<'PY'
import json, sys
path, prefix, *keys = sys.argv[1:]
r = json.load(open(path))
for k in keys:
    key, unit = k.split(":", 1)
    print(json.dumps({"metric": f"{prefix}_{key}", "unit": unit, "value": r[key]}))
PY
}

# enroll_all NAME URL TOKEN: the heartbeat agents and the fleet's servers, through one console.
enroll_all() {
  local name=$1 url=$2 token=$3
  say "$name: enrolling $HB_AGENTS agents and $FLEET_SERVERS servers"
  "$LOADGEN" enroll --console "$url" --token-file "$token" --agents "$HB_AGENTS" \
    --state "$WORK/$name-agents.json" --concurrency 64 >"$WORK/$name-enroll.json"
  record_json "$WORK/$name-enroll.json" "ha_enroll_${HB_AGENTS}_agents_$name" seconds:s
  "$LOADGEN" enroll --console "$url" --token-file "$token" --agents "$FLEET_SERVERS" --group fleet \
    --first 1000000 --state "$WORK/$name-fleet.json" --concurrency 64 >/dev/null
}

# settle: waits until the 1-minute load average is under 1, at most SETTLE_MAX (300 s; none in
# BENCH_QUICK mode). A bulk enrollment leaves work behind it (on PostgreSQL: autovacuum of
# 115,000 new rows in three tables, the checkpoint of their writes) that runs for minutes on the
# same 2 cores (docs/benchmarks.md, the fifth round).
settle() {
  local waited=0
  while awk '{exit !($1 >= 1.0)}' /proc/loadavg && [ "$waited" -lt "${SETTLE_MAX:-300}" ]; do
    sleep 5
    waited=$((waited + 5))
  done
  say "$1: settled after ${waited} s (1-minute load average $(cut -d' ' -f1 /proc/loadavg))"
}

# measure NAME URL...: the heartbeat and dispatch benchmarks against these consoles.
measure() {
  local name=$1 token=$2
  shift 2
  settle "$name"
  local consoles=()
  for u in "$@"; do consoles+=(--console "$u"); done
  for run in $(seq "$RUNS"); do
    say "$name: $HB_AGENTS agents heartbeating every 10 s for $HB_SECS, run $run of $RUNS"
    note_load
    "$LOADGEN" heartbeat "${consoles[@]}" --state "$WORK/$name-agents.json" --interval 10s \
      --duration "$HB_SECS" --connections 512 >"$WORK/$name-hb$run.json"
    record_json "$WORK/$name-hb$run.json" "ha_heartbeat_${HB_AGENTS}_agents_$name" \
      p50_ms:ms p99_ms:ms max_ms:ms errors:count rate_per_s:heartbeats/s lag_p99_ms:ms
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); r["errors"] and print("failed heartbeats:", r["error_kinds"], file=sys.stderr)' \
      "$WORK/$name-hb$run.json"
  done
  for run in $(seq "$FLEET_RUNS"); do
    say "$name: $FLEET_TASKS tasks to $FLEET_SERVERS long-polling servers, run $run of $FLEET_RUNS"
    note_load
    # A run that does not finish within FLEET_TIMEOUT still reports what it did (unfinished > 0).
    "$LOADGEN" fleet "${consoles[@]}" --token-file "$token" --state "$WORK/$name-fleet.json" \
      --group fleet --tasks "$FLEET_TASKS" --timeout "$FLEET_TIMEOUT" >"$WORK/$name-fleet$run.json" || true
    [ -s "$WORK/$name-fleet$run.json" ] || die "dispatch benchmark on $name failed"
    record_json "$WORK/$name-fleet$run.json" "ha_dispatch_${FLEET_TASKS}_tasks_${FLEET_SERVERS}_servers_$name" \
      started_per_s:tasks/s finished_per_s:tasks/s dispatch_p50_ms:ms dispatch_p99_ms:ms lost:count twice:count \
      unfinished:count
    # What a timed-out run left queued must not count against the next one.
    [ "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['unfinished'])" "$WORK/$name-fleet$run.json")" = 0 ] || break
  done
}

# ---- one console on SQLite ----------------------------------------------------------------
start_console sqlite
SQLITE_PID=$CONSOLE_PID
enroll_all sqlite "$CONSOLE_URL" "$WORK/sqlite/admin.token"
measure sqlite "$WORK/sqlite/admin.token" "$CONSOLE_URL"
stop_pid "$SQLITE_PID"

# ---- two consoles on PostgreSQL -----------------------------------------------------------
psql_ -c 'CREATE DATABASE tasknode' postgres
DB=(--database "postgres://postgres@127.0.0.1:$PGPORT/tasknode" --database-password-file "$WORK/db-password")
start_console pga "${DB[@]}"
A_PID=$CONSOLE_PID A_URL=$CONSOLE_URL
start_console pgb "${DB[@]}"
B_PID=$CONSOLE_PID B_URL=$CONSOLE_URL
# The database keeps the admin token's digest: either console takes the first one's token.
TOKEN=$WORK/pga/admin.token
enroll_all pg2 "$A_URL" "$TOKEN"
"$LOADGEN" enroll --console "$A_URL" --token-file "$TOKEN" --agents "$FO_AGENTS" --group ha \
  --first 2000000 --state "$WORK/ha-agents.json" --concurrency 64 >/dev/null
measure pg2 "$TOKEN" "$A_URL" "$B_URL"
stop_pid "$A_PID"
stop_pid "$B_PID"

for run in $(seq "$RUNS"); do
  say "pg2: failover of $FO_AGENTS agents heartbeating every $FO_INTERVAL, run $run of $RUNS"
  start_console pga "${DB[@]}" --heartbeat-interval "$FO_INTERVAL"
  A_PID=$CONSOLE_PID A_URL=$CONSOLE_URL
  start_console pgb "${DB[@]}" --heartbeat-interval "$FO_INTERVAL"
  B_PID=$CONSOLE_PID B_URL=$CONSOLE_URL
  note_load
  "$LOADGEN" failover --console "$A_URL" --console "$B_URL" --token-file "$TOKEN" \
    --state "$WORK/ha-agents.json" --group ha --kill-pid "$A_PID" --interval "$FO_INTERVAL" \
    --before 8s --after 10s >"$WORK/failover$run.json" || die "failover benchmark failed"
  wait "$A_PID" 2>/dev/null || true
  record_json "$WORK/failover$run.json" "ha_failover_${FO_AGENTS}_agents_pg2" \
    all_back_s:s worst_delay_ms:ms unanswered:count stopped:count
  stop_pid "$B_PID"
done

if [ "$MODE" = --records ]; then
  cat "$RECORDS"
  exit 0
fi

say "writing the ha rows of $OUT"
python3 - "$RECORDS" "$OUT" "$RUNS" "$QUICK" "$LOAD" "$HB_AGENTS" "$FLEET_TASKS" "$FLEET_SERVERS" "$FO_AGENTS" \
  "$FO_INTERVAL" "$FLEET_RUNS" "$FLEET_TIMEOUT" <<'PY'
import datetime, json, statistics, subprocess, sys
records, out, runs, quick, load, hb, tasks, servers, fo, fo_interval, fleet_runs, fleet_timeout = sys.argv[1:13]
rows = {}
for line in open(records):
    r = json.loads(line)
    rows.setdefault((r["metric"], r["unit"]), []).append(float(r["value"]))
def target(m, v):
    if m.startswith("ha_heartbeat_") and m.endswith("_p99_ms") and not m.endswith("_lag_p99_ms"):
        return f"< 20 ms: {'met' if v < 20 else 'MISSED'}"
    if m.startswith("ha_heartbeat_") and m.endswith("_errors"):
        return f"0: {'met' if v == 0 else 'MISSED'}"
    if m.startswith("ha_dispatch_") and m.endswith("_started_per_s"):
        return f">= 1000 tasks/s: {'met' if v >= 1000 else 'MISSED'}"
    if m.startswith("ha_dispatch_") and (m.endswith("_lost") or m.endswith("_twice") or m.endswith("_unfinished")):
        return f"0: {'met' if v == 0 else 'MISSED'}"
    if m.startswith("ha_failover_") and m.endswith("_all_back_s"):
        return f"< 10 s: {'met' if v < 10 else 'MISSED'}"
    if m.startswith("ha_failover_") and m.endswith("_stopped"):
        return f"0: {'met' if v == 0 else 'MISSED'}"
    return ""
# Records of every run: the worst run counts for the counts that must be 0.
new = [f"| {m} | {u} | {statistics.median(v):.3f} | {min(v):.3f} | {max(v):.3f} | "
       f"{target(m, max(v) if u == 'count' else statistics.median(v))} |"
       for (m, u), v in sorted(rows.items())]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
loads = [float(x) for x in open(load).read().split()] or [0.0]
note = (f"- fleet-scale rows (`ha_*`): measured alone by `scripts/bench.sh ha` on {when}, commit {commit}, "
        f"{runs} runs ({fleet_runs} of the dispatch benchmark){' in BENCH_QUICK mode (smaller loads)' if quick == '1' else ''}, same machine, "
        f"databases on tmpfs, each half measured once the 1-minute load average after its enrollment was under 1 (at most 300 s); "
        f"1-minute load average before each measurement {min(loads):.1f} to {max(loads):.1f}")
bullet = (f"- `ha_*`: the control plane at fleet scale, release consoles and the load generator on this 2-core machine: `sqlite` is one "
          f"console on SQLite, `pg2` two consoles sharing one PostgreSQL (a throwaway cluster on loopback, default durability settings: "
          f"fsync and synchronous commit on), the load spread over both. Both databases are on tmpfs: this machine's disk takes about "
          f"2.4 ms per fsync, which alone caps a store that commits one transaction at a time (SQLite, `synchronous=FULL`) near 400 "
          f"commits/s, so on disk SQLite enrolls about 140 agents/s and dispatches about 140 tasks/s (3 and 4 commits each); on tmpfs "
          f"the rows measure the consoles' and the database's own work. `ha_heartbeat_N_agents_*`: {hb} simulated agents "
          f"(`tasknode-loadgen heartbeat`, agent i on console i mod n) each heartbeating every 10 s from a random phase, open loop, at most "
          f"512 in flight; latency from send to full answer, `rate_per_s` the rate achieved (planned: N / 10 s), `lag_p99_ms` how late "
          f"the load generator sent against the schedule (it shares the cores). `ha_enroll_*_s`: enrolling them (server add, install "
          f"command, enroll: three calls each, 64 at once). `ha_dispatch_T_tasks_S_servers_*`: S simulated VPC servers "
          f"(`tasknode-loadgen fleet`) each holding a long poll and heartbeating every 10 s as the agent does, and reporting every task it is given started and "
          f"finished at once, while T tasks (`true`) are submitted to their group 32 at a time: `started_per_s` is T over the time from "
          f"the first submit to the last accepted start, `finished_per_s` to the last accepted finish, `dispatch_*_ms` from a task's "
          f"submit to its start; `lost` (not succeeded in the console's list afterwards) and `twice` (started twice) must be 0 in every "
          f"run (the column shows the worst run); `unfinished`: tasks not done when the run gave up (after {fleet_timeout}). `ha_failover_N_agents_pg2_*`: {fo} simulated agents (`tasknode-loadgen failover`) "
          f"heartbeating every {fo_interval}, half to each console, moving on as the agent does (no answer or 5xx: the next console, at once); "
          f"after 8 s one console is killed with SIGKILL. `all_back_s`: from the kill until every agent has had a heartbeat answered "
          f"again (its floor is the {fo_interval} interval: an agent notices at its next heartbeat); `worst_delay_ms`: the most the move delayed "
          f"any heartbeat past its schedule; `unanswered`: heartbeats neither console answered; `stopped`: the agents' servers the "
          f"surviving console shows stopped right after. One SQLite console has no failover: it has no row.")
lines = open(out).read().split("\n")
lines = [l for l in lines if not l.startswith("| ha_") and not l.startswith("- fleet-scale rows") and not l.startswith("- `ha_*`")]
header = next(i for i, l in enumerate(lines) if l.startswith("| metric"))
table_end = next((i for i in range(header, len(lines)) if not lines[i].startswith("| ")), len(lines))
lines[table_end:table_end] = new
lines.insert(header - 1, note)
measures = next(i for i, l in enumerate(lines) if l == "## What each measures")
end = next((i for i in range(measures + 2, len(lines)) if not lines[i].startswith("- ")), len(lines))
lines.insert(end, bullet)
open(out, "w").write("\n".join(lines))
PY
say "done: $OUT"
