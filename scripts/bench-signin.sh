#!/usr/bin/env bash
# Sign-in under a password flood: a valid web sign-in, timed while 2,000 wrong-password
# sign-ins are in flight, sprayed over 200 loopback addresses and 1,000 user names (never the
# valid one): from the address the user signed in from before the flood, and from fresh ones.
# BENCH_RUNS runs (default 3), each on a fresh release console.
#
#   scripts/bench-signin.sh --records   print one JSON record per metric and run (bench.sh)
#   scripts/bench-signin.sh --write     also put the rows into docs/benchmarks.md
#                                       (scripts/bench.sh signin runs this)
set -euo pipefail

cd "$(dirname "$0")/.."
MODE=${1:---records}
RUNS=${BENCH_RUNS:-3}
ATTACKERS=${BENCH_SIGNIN_ATTACKERS:-2000}
OUT=docs/benchmarks.md
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

cargo build --release --locked -p tasknode-console -p tasknode-bench >&2
CONSOLE=$PWD/target/release/tasknode-console
LOADGEN=$PWD/target/release/tasknode-loadgen
# Every attacker holds a connection: the load generator needs more than 1,024 descriptors.
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d)
CONSOLE_PID=
cleanup() {
  if [ -n "$CONSOLE_PID" ]; then kill "$CONSOLE_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
RECORDS=$WORK/records.jsonl
: >"$RECORDS"

for run in $(seq "$RUNS"); do
  say "sign-in under a flood of $ATTACKERS wrong passwords, run $run of $RUNS"
  data=$WORK/console$run
  "$CONSOLE" serve --data "$data" --listen 127.0.0.1:0 >"$data.out" 2>"$data.log" &
  CONSOLE_PID=$!
  for _ in $(seq 100); do [ -s "$data/console.url" ] && break; sleep 0.1; done
  [ -s "$data/console.url" ] || die "console did not start: $(cat "$data.log")"
  url=$(cat "$data/console.url")
  TASKNODE_DATA=$data TASKNODE_CONSOLE=$url "$CONSOLE" user create valid --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["password"])' >"$WORK/pw"
  chmod 600 "$WORK/pw"
  "$LOADGEN" signin --console "$url" --user valid --password-file "$WORK/pw" \
    --attackers "$ATTACKERS" --addresses 200 --warmup 3s --probes 20 >"$WORK/signin$run.json" \
    || die "sign-in benchmark failed"
  kill "$CONSOLE_PID"; wait "$CONSOLE_PID" 2>/dev/null || true
  CONSOLE_PID=
  python3 - "$WORK/signin$run.json" >>"$RECORDS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for key, unit in [("probe_p50_ms", "ms"), ("probe_max_ms", "ms"), ("probe_min_ms", "ms")]:
    print(json.dumps({"metric": f"signin_flood_{key}", "unit": unit, "value": r[key]}))
print(json.dumps({"metric": "signin_flood_probes_ok", "unit": "of 20", "value": r["probes_ok"]}))
print(json.dumps({"metric": "signin_flood_fresh_address_probes_ok", "unit": "of 20", "value": r["fresh_probes_ok"]}))
print(json.dumps({"metric": "signin_flood_fresh_address_probe_p50_ms", "unit": "ms", "value": r["fresh_probe_p50_ms"]}))
print(json.dumps({"metric": "signin_flood_answers_per_s", "unit": "answers/s", "value": r["flood_answers_per_s"]}))
answered = r["flood_401"] + r["flood_429"] + r["flood_other"]
print(json.dumps({"metric": "signin_flood_429_share", "unit": "ratio", "value": r["flood_429"] / max(answered, 1)}))
print(json.dumps({"metric": "signin_flood_other_answers", "unit": "count", "value": r["flood_other"]}))
PY
done

if [ "$MODE" = --records ]; then
  cat "$RECORDS"
  exit 0
fi

say "writing the sign-in rows of $OUT"
python3 - "$RECORDS" "$OUT" "$RUNS" "$ATTACKERS" <<'PY'
import datetime, json, statistics, subprocess, sys
records, out, runs, attackers = sys.argv[1:5]
rows = {}
for line in open(records):
    r = json.loads(line)
    rows.setdefault((r["metric"], r["unit"]), []).append(float(r["value"]))
def target(m, v):
    if m == "signin_flood_probe_max_ms":
        return f"< 2000 ms: {'met' if v < 2000 else 'MISSED'}"
    if m == "signin_flood_other_answers":
        return f"0: {'met' if v == 0 else 'MISSED'}"
    return ""
new = [f"| {m} | {u} | {statistics.median(v):.3f} | {min(v):.3f} | {max(v):.3f} | {target(m, statistics.median(v))} |"
       for (m, u), v in sorted(rows.items())]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
note = (f"- sign-in rows (`signin_*`): measured alone by `scripts/bench.sh signin` on {when}, commit {commit}, "
        f"{runs} runs, same machine")
bullet = ("- `signin_flood_*`: a valid web sign-in (`POST /ui/login`, answered 303) from 127.0.0.1, where the user signed in once before the flood, "
          f"20 times one after another while {attackers} wrong-password sign-ins are kept in flight from 200 other loopback addresses over 1,000 "
          "sprayed user names (`tasknode-loadgen signin`, from 3 s after the flood starts, release console on this machine). `probe_*_ms`: those "
          "sign-ins' latency; `probes_ok`: how many got in. `fresh_address_*`: the same user, in turn with those, each time from an address the "
          "console has never seen, which stands no better than a fresh attacking address. `answers_per_s`, `429_share`: what the flood was "
          "answered (401 after a check, 429 past the queue or while an address or user name backs off); `other_answers`: anything else "
          "(errors, dropped connections).")
lines = open(out).read().split("\n")
lines = [l for l in lines if not l.startswith("| signin_") and not l.startswith("- sign-in rows") and not l.startswith("- `signin_flood_*`")]
# The rows go at the end of the metrics table (the first one), not of later tables.
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
