"""Rows of docs/benchmarks.md for the benchmarks that run alone (`scripts/bench.sh agent`,
`scripts/bench.sh packaging`): records in, table rows with median, min, max and the target out,
merged into the table in order, with the note that says when and how they were measured."""

import datetime
import json
import statistics
import subprocess


def read(records):
    """{(metric, unit): [value, ...]} from a file of one JSON record per line."""
    rows = {}
    for line in open(records):
        r = json.loads(line)
        rows.setdefault((r["metric"], r["unit"]), []).append(float(r["value"]))
    return rows


def table(rows, targets):
    """One table row per metric; `targets` maps a metric to (text, test of the median)."""
    def target(m, v):
        if m not in targets:
            return ""
        text, ok = targets[m]
        return f"{text}: {'met' if ok(v) else 'MISSED'}"
    return [f"| {m} | {u} | {statistics.median(v):.3f} | {min(v):.3f} | {max(v):.3f} | {target(m, statistics.median(v))} |"
            for (m, u), v in sorted(rows.items())]


def stamp():
    """(short commit, UTC time) of this measurement."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return commit, when


def merge(lines, new, note, drop):
    """`lines` without those starting with a prefix of `drop`, with `new` in order among the rows
    kept and `note` above the table."""
    lines = [l for l in lines if not l.startswith(tuple(drop))]
    header = next(i for i, l in enumerate(lines) if l.startswith("| metric"))
    for row in new:
        at = next(i for i in range(header + 2, len(lines) + 1)
                  if i == len(lines) or not lines[i].startswith("| ") or lines[i] > row)
        lines.insert(at, row)
    lines.insert(header - 1, note)
    return lines
