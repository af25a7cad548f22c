#!/usr/bin/env python3
"""Medians with min-max spread per target and scenario, and ratios to the probe and the peers.

    tools/bench_ratios.py tools/results/<run>/            # table on stdout
    tools/bench_ratios.py --json tools/results/<run>/     # the same as JSON

Reads every `<target>-<scenario>-<i>.json` report bench.sh wrote (labels "<target> <scenario>").
For each scenario and target: the median, min and max over the repeats of deliveries per server
CPU-second and per wall-clock second, p99 latency, the other-cores-busy figure (above ~0.1 the
wall-clock figures are distorted), and how many runs were clean. Ratios: each target's deliveries
per CPU-second divided by the probe's (the bare coalescing writer, the ceiling) and by each
peer's, as the ratio of the medians and, in brackets, the min-max of the per-repeat ratios
(repeat i of every target runs back to back, so a pair shares the machine's background load).

When the run had PERF_STAT=1, each `<target>-<scenario>-<i>.perf.txt` (perf stat -x, counts of
the server's write-family and epoll_wait syscalls over a few seconds inside the measured time)
adds: write syscalls and poll rounds per second, deliveries per fan-out write and events per poll
round. Deliveries and events in the perf window are the run's steady rates times the window, and
fan-out writes are all writes minus one per published event (a publish's response takes at most
one write), so both figures are estimates.

Backplane targets (`<target>-bp`, the same node with --backplane and its own redis-server): a line
under each compares it with `<target>` of the same run: deliveries per CPU-second as the ratio of
the medians [min-max of the per-repeat ratios], the p99 latency it adds (difference of the
medians [min-max of the per-repeat differences]), acknowledged events per second, and from each
`<target>-<scenario>-<i>.redis.txt` (bench.sh) the Redis CPU per 1,000 appended events and the
time Redis spent in each append script (EVALSHA). Acknowledged events per second (measured events
over the measurement window) are printed for every target of the `publish` scenario.

A/B of two builds (bench.sh `SSELOOP_B`, targets `<target>@b`): a "vs <target> (build A)" line
under each `<target>@b` compares it with `<target>` of the same run, with the same figures.

Latency scenarios (`latency-*`): a "latency vs probe" line under each target gives its p99 over
the probe's, as the ratio of the medians and (paired) the median [min-max] of the per-repeat
ratios, and the same paired ratio of the p50.

Issue figures: under each target of `pattern-10k` (every subscriber on one pattern over 100
topics), its deliveries per CPU-second over the same target's `trickle-10k` (one exact topic) of
the same run, as the ratio of the medians [min-max of the per-repeat ratios] (issue 12 asks for
>= 0.9); under each target of a run with --settle-secs (`burst-rss-10k`), the server's RSS after
the settle time minus its RSS once connected, per connection (issue 11 asks for <= 1 KiB).
TLS (issue 24): `tls-trickle-*` over the plaintext `trickle-*` of the same target (>= 0.6 asked),
a ratio column to `sseloop+nginx-tls` (nginx terminating TLS in front of sseloop, both counted;
sseloop alone >= 2x asked), and for the handshake-rate scenarios (`tls-handshake-*`, where a
delivery is one new subscriber) the share of resumed handshakes and resumed over full.
Stdlib only.
"""

import json
import statistics
import sys
from pathlib import Path

# Targets a ratio column is made for, when present in the run.
REFERENCES = ["probe", "nchan", "gosse", "axum", "sseloop+nginx-tls"]

# Scenario -> the scenario its deliveries per CPU-second are divided by, target for target.
BASELINES = {
    "pattern-10k": "trickle-10k",
    "tls-trickle-1k": "trickle-1k",
    "tls-trickle-10k": "trickle-10k",
    "tls-handshake-resumed": "tls-handshake-full",
}


def pick(doc, *path):
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc if isinstance(doc, (int, float)) else None


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def si(v):
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g} {unit}"
    return f"{v:.3g}"


WRITE_EVENTS = ("sendmsg", "sendto", "writev", "write")


def perf_counts(path):
    """{syscall: count} and the counters' running time in seconds from a `perf stat -x,` file."""
    counts, secs = {}, None
    for line in path.read_text().splitlines():
        fields = line.split(",")
        if line.startswith("#") or len(fields) < 4 or ":sys_enter_" not in fields[2]:
            continue
        try:
            counts[fields[2].split(":sys_enter_")[1]] = int(fields[0])
            secs = max(secs or 0.0, int(fields[3]) / 1e9)
        except ValueError:
            continue
    return counts, secs


def perf_figures(doc, path):
    """Write and poll-round figures for one run, or None without a usable perf file."""
    if not path.exists():
        return None
    counts, secs = perf_counts(path)
    per_sec = pick(doc, "delivery", "per_sec")
    events = pick(doc, "publish", "measured_events")
    elapsed = pick(doc, "delivery", "elapsed_secs")
    if not counts or not secs or per_sec is None or not events or not elapsed:
        return None
    writes = sum(counts.get(e, 0) for e in WRITE_EVENTS)
    rounds = counts.get("epoll_wait", 0)
    events_in = events / elapsed * secs
    fan_out_writes = max(writes - events_in, 1.0)
    return {
        "writes_per_sec": writes / secs,
        "rounds_per_sec": rounds / secs,
        "deliveries_per_write": per_sec * secs / fan_out_writes,
        "events_per_round": events_in / rounds if rounds else None,
    }


def redis_figures(path):
    """{key: number} from a bench.sh `.redis.txt` sidecar (`key: value` lines), or None."""
    if not path.exists():
        return None
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        try:
            out[key.strip()] = float(value.strip())
        except ValueError:
            continue
    return out or None


def events_per_sec(doc):
    """Acknowledged events published in the measured window, per wall-clock second (measured
    events less refused publishes; a refusal in the warm-up would be counted here too)."""
    events = pick(doc, "publish", "measured_events")
    errors = pick(doc, "publish", "errors") or 0
    elapsed = pick(doc, "delivery", "elapsed_secs")
    if events is None or not elapsed:
        return None
    return max(events - errors, 0) / elapsed


def resumed_share(doc):
    """The share of resumed TLS handshakes of a handshake-rate (--churn) run, else None."""
    completed, resumed = pick(doc, "churn", "completed"), pick(doc, "churn", "resumed")
    if not completed or resumed is None:
        return None
    return resumed / completed


def load(run_dir):
    groups = {}
    for path in sorted(Path(run_dir).glob("*-[0-9]*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        doc["_perf"] = perf_figures(doc, path.with_suffix(".perf.txt"))
        doc["_redis"] = redis_figures(path.with_suffix(".redis.txt"))
        doc["_repeat"] = path.stem.rsplit("-", 1)[1]
        label = doc.get("label") or ""
        if " " not in label:
            continue
        target, scenario = label.split(" ", 1)
        groups.setdefault(scenario, {}).setdefault(target, []).append(doc)
    return groups


def summarize(groups):
    out = {}
    for scenario, targets in groups.items():
        rows = {}
        for target, runs in targets.items():
            rows[target] = {
                "runs": len(runs),
                "ok_runs": sum(1 for r in runs if r.get("ok") is True),
                "per_cpu_sec": spread([pick(r, "server", "deliveries_per_cpu_sec") for r in runs]),
                "per_sec": spread([pick(r, "delivery", "per_sec") for r in runs]),
                "p99_us": spread([pick(r, "latency_us", "p99") for r in runs]),
                "rss_per_conn_bytes": spread([pick(r, "server", "rss_per_conn_bytes") for r in runs]),
                "other_cores_busy": spread([pick(r, "machine", "other_cores_busy") for r in runs]),
                "events_per_sec": spread([events_per_sec(r) for r in runs]),
                "rss_settled_per_conn_bytes": spread(
                    [pick(r, "server", "rss_settled_over_connected_per_conn_bytes") for r in runs]
                ),
                "resumed_share": spread([resumed_share(r) for r in runs]),
            }
            redis = [r["_redis"] for r in runs if r.get("_redis")]
            if redis:
                rows[target]["redis"] = {
                    k: spread([x.get(k) for x in redis])
                    for k in ("redis_cpu_ms_per_1k_events", "redis_cpu_secs", "appends", "evalsha_usec_per_call", "events_per_call")
                }
            perf = [r["_perf"] for r in runs if r.get("_perf")]
            if perf:
                rows[target]["syscalls"] = {
                    k: spread([p[k] for p in perf])
                    for k in ("writes_per_sec", "rounds_per_sec", "deliveries_per_write", "events_per_round")
                }
        for target, row in rows.items():
            mine = row["per_cpu_sec"]
            ratios, paired = {}, {}
            for ref in REFERENCES:
                theirs = rows.get(ref, {}).get("per_cpu_sec")
                if ref != target and mine and theirs and theirs["median"] > 0:
                    ratios[ref] = mine["median"] / theirs["median"]
                    by_repeat = {
                        r["_repeat"]: pick(r, "server", "deliveries_per_cpu_sec") for r in targets[ref]
                    }
                    pairs = []
                    for r in targets[target]:
                        a, b = pick(r, "server", "deliveries_per_cpu_sec"), by_repeat.get(r["_repeat"])
                        if a is not None and b:
                            pairs.append(a / b)
                    if pairs:
                        paired[ref] = spread(pairs)
            row["per_cpu_sec_ratio_to"] = ratios
            row["per_cpu_sec_paired_ratio_to"] = paired
            base = backplane_base(target)
            if base in rows:
                row["backplane"] = versus(targets[target], targets[base], row, rows[base])
            if scenario.startswith("latency") and target != "probe" and "probe" in rows:
                # Issue 11's latency goal is p99 against the probe's at 100 subscribers.
                row["probe_latency"] = versus(targets[target], targets["probe"], row, rows["probe"])
            if target.endswith("@b") and target[:-2] in rows:
                # An A/B of two builds (bench.sh SSELOOP_B): this build against the other.
                row["build_a"] = versus(targets[target], targets[target[:-2]], row, rows[target[:-2]])
        out[scenario] = rows
    for scenario, base_scenario in BASELINES.items():
        for target, row in out.get(scenario, {}).items():
            base = groups.get(base_scenario, {}).get(target)
            if base:
                row["baseline"] = {
                    "scenario": base_scenario,
                    **versus(groups[scenario][target], base, row, out[base_scenario][target]),
                }
    return out


def backplane_base(target):
    """`X-bp` -> `X`, `X-bp@b` -> `X@b` (the same node without its backplane), else None."""
    stem, build = (target[:-2], "@b") if target.endswith("@b") else (target, "")
    return stem[: -len("-bp")] + build if stem.endswith("-bp") else None


def versus(mine_runs, base_runs, mine, base):
    """One target's runs against another's of the same run (a backplane node against the same
    node without it, build B against build A, a scenario against its baseline scenario): ratios
    and added p99, medians and [min-max] per repeat pair; p99 and p50 latency as ratios too (the
    probe line of latency scenarios)."""
    by_repeat = {r["_repeat"]: r for r in base_runs}
    pairs = [(r, by_repeat[r["_repeat"]]) for r in mine_runs if r["_repeat"] in by_repeat]

    def ratio(fig):
        a, b = fig(mine), fig(base)
        return a["median"] / b["median"] if a and b and b["median"] else None

    def paired(get, op):
        vals = []
        for a, b in pairs:
            x, y = get(a), get(b)
            if x is not None and y is not None:
                v = op(x, y)
                if v is not None:
                    vals.append(v)
        return spread(vals)

    cpu = lambda r: pick(r, "server", "deliveries_per_cpu_sec")
    p99 = lambda r: pick(r, "latency_us", "p99")
    p50 = lambda r: pick(r, "latency_us", "p50")
    div = lambda x, y: x / y if y else None
    p99_added = None
    if mine["p99_us"] and base["p99_us"]:
        p99_added = mine["p99_us"]["median"] - base["p99_us"]["median"]
    return {
        "per_cpu_sec_ratio": ratio(lambda r: r["per_cpu_sec"]),
        "per_cpu_sec_paired": paired(cpu, div),
        "events_per_sec_ratio": ratio(lambda r: r["events_per_sec"]),
        "events_per_sec_paired": paired(events_per_sec, div),
        "p99_added_us": p99_added,
        "p99_added_paired_us": paired(p99, lambda x, y: x - y),
        "p99_ratio": ratio(lambda r: r["p99_us"]),
        "p99_paired_ratio": paired(p99, div),
        "p50_paired_ratio": paired(p50, div),
    }


def table(summary):
    lines = []
    for scenario, rows in summary.items():
        refs = [r for r in REFERENCES if r in rows]
        lines.append(f"{scenario}: median [min-max] over the repeats")
        if scenario.startswith("tls-handshake"):
            lines.append("  (a delivery is one new TLS subscriber: connect, handshake, GET, response head, close)")
        head = f"  {'target':<20} {'deliveries/CPU-s':<24} {'deliveries/s':<24} {'p99 ms':<8} {'ok':<6} {'busy':<5}"
        head += "".join(f" {'x' + r + ' [paired min-max]':<26}" for r in refs)
        lines.append(head)
        for target, row in rows.items():

            def fig(s, fmt=si):
                if not s:
                    return "-"
                return f"{fmt(s['median'])} [{fmt(s['min'])}-{fmt(s['max'])}]"

            p99 = row["p99_us"]
            busy = row["other_cores_busy"]
            p99_ms = "%.2f" % (p99["median"] / 1000) if p99 else "-"
            busy_s = "%.2f" % busy["median"] if busy else "-"
            ok = "%d/%d" % (row["ok_runs"], row["runs"])
            line = (
                f"  {target:<20} {fig(row['per_cpu_sec']):<24} {fig(row['per_sec']):<24}"
                f" {p99_ms:<8} {ok:<6} {busy_s:<5}"
            )
            for ref in refs:
                r = row["per_cpu_sec_ratio_to"].get(ref)
                shown = "%.2f" % r if r is not None else "-"
                pr = row["per_cpu_sec_paired_ratio_to"].get(ref)
                if pr:
                    shown += " [%.2f-%.2f]" % (pr["min"], pr["max"])
                line += f" {shown:<26}"
            lines.append(line)
            sc = row.get("syscalls")
            if sc:
                lines.append(
                    "    syscalls: writes/s %s, poll rounds/s %s, deliveries per write %s,"
                    " events per round %s"
                    % tuple(
                        fig(sc[k], lambda v: "%.3g" % v)
                        for k in ("writes_per_sec", "rounds_per_sec", "deliveries_per_write", "events_per_round")
                    )
                )
            if scenario.startswith("publish") and row["events_per_sec"]:
                lines.append(f"    acknowledged events/s: {fig(row['events_per_sec'])}")
            for key in ("backplane", "build_a"):
                bp = row.get(key)
                if not bp:
                    continue
                parts = []
                if bp["per_cpu_sec_ratio"] is not None:
                    part = "deliveries/CPU-s x%.2f" % bp["per_cpu_sec_ratio"]
                    if bp["per_cpu_sec_paired"]:
                        part += " [%.2f-%.2f]" % (bp["per_cpu_sec_paired"]["min"], bp["per_cpu_sec_paired"]["max"])
                    parts.append(part)
                if bp["p99_added_us"] is not None:
                    part = "p99 %+.2f ms" % (bp["p99_added_us"] / 1000)
                    if bp["p99_added_paired_us"]:
                        pr = bp["p99_added_paired_us"]
                        part += " [%+.2f..%+.2f]" % (pr["min"] / 1000, pr["max"] / 1000)
                    parts.append(part)
                if bp["events_per_sec_ratio"] is not None:
                    part = "events/s x%.2f" % bp["events_per_sec_ratio"]
                    if bp["events_per_sec_paired"]:
                        part += " [%.2f-%.2f]" % (bp["events_per_sec_paired"]["min"], bp["events_per_sec_paired"]["max"])
                    parts.append(part)
                against = backplane_base(target) if key == "backplane" else target[:-2] + " (build A)"
                lines.append(f"    vs {against}: " + ", ".join(parts))
            lat = row.get("probe_latency")
            if lat and lat["p99_ratio"] is not None:
                part = "p99 x%.2f" % lat["p99_ratio"]
                pr = lat["p99_paired_ratio"]
                if pr:
                    part += " (paired x%.2f [%.2f-%.2f])" % (pr["median"], pr["min"], pr["max"])
                pr = lat["p50_paired_ratio"]
                if pr:
                    part += ", p50 paired x%.2f [%.2f-%.2f]" % (pr["median"], pr["min"], pr["max"])
                lines.append("    latency vs probe: " + part)
            bl = row.get("baseline")
            if bl and bl["per_cpu_sec_ratio"] is not None:
                part = "x%.2f" % bl["per_cpu_sec_ratio"]
                if bl["per_cpu_sec_paired"]:
                    part += " [%.2f-%.2f]" % (bl["per_cpu_sec_paired"]["min"], bl["per_cpu_sec_paired"]["max"])
                lines.append(f"    deliveries/CPU-s vs {target} {bl['scenario']}: {part}")
            if row.get("resumed_share"):
                lines.append("    resumed handshakes: %s" % fig(row["resumed_share"], lambda v: "%.0f%%" % (100 * v)))
            settled = row.get("rss_settled_per_conn_bytes")
            if settled:
                lines.append(
                    "    RSS settled - connected per connection: %s" % fig(settled, lambda v: "%+.0f B" % v)
                )
            rd = row.get("redis")
            if rd and rd["redis_cpu_ms_per_1k_events"]:
                lines.append(
                    "    redis: %s ms CPU per 1,000 appended events, %s CPU-s, %s appends, EVALSHA %s us/call"
                    " carrying %s events"
                    % (
                        fig(rd["redis_cpu_ms_per_1k_events"], lambda v: "%.1f" % v),
                        fig(rd["redis_cpu_secs"], lambda v: "%.2f" % v),
                        fig(rd["appends"]),
                        fig(rd["evalsha_usec_per_call"], lambda v: "%.1f" % v),
                        fig(rd["events_per_call"], lambda v: "%.1f" % v),
                    )
                )
            if not row["per_cpu_sec"] and row["rss_per_conn_bytes"]:
                rss = fig(row["rss_per_conn_bytes"], lambda v: "%.0f B" % v)
                lines.append(f"    RSS per connection: {rss}")
        lines.append("")
    return "\n".join(lines)


def main(argv):
    as_json = "--json" in argv
    dirs = [a for a in argv if a != "--json"]
    if len(dirs) != 1:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: bench_ratios.py [--json] RESULTS_DIR", file=sys.stderr)
        return 2
    summary = summarize(load(dirs[0]))
    if not summary:
        print(f"bench_ratios: no reports in {dirs[0]}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1) if as_json else table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
