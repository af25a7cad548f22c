#!/usr/bin/env python3
"""Prints the BENCHMARKS.md results tables (markdown) from tools/bench.sh summary.json files.

    python3 tools/bench_table.py tools/results/<run>/summary.json [more summary.json ...]

Later files override earlier ones per label ("target scenario").
"""
import json
import sys

TARGETS = ["sseloop", "sseloop-frames", "sseloop-frames-pub", "nchan", "gosse"]


def fmt_m(v):
    return f"{v / 1e6:.2f} M" if v is not None else "–"


def fmt_ms(v):
    return f"{v / 1e3:.2f}" if v is not None else "–"


def main():
    merged = {}
    for path in sys.argv[1:]:
        merged.update(json.load(open(path)))

    def get(target, scenario, key):
        m = merged.get(f"{target} {scenario}")
        if not m or m.get("ok_runs", 0) == 0:
            return None
        return m.get(key)

    def runs(target, scenario):
        m = merged.get(f"{target} {scenario}")
        if not m:
            return "not run"
        bad = m["total_lost"] + m["total_disconnected"]
        return f"{m['ok_runs']}/{m['runs']} ok" + (f", {bad} lost/cut" if bad else "")

    targets = [t for t in TARGETS if any(k.startswith(t + " ") for k in merged)]
    print("| scenario | figure | " + " | ".join(targets) + " |")
    print("|---|---|" + "---|" * len(targets))
    for sc in ["fanout-100", "fanout-1k", "fanout-3k", "fanout-10k"]:
        print(f"| {sc} | deliveries / server CPU-s | "
              + " | ".join(fmt_m(get(t, sc, "median_deliveries_per_server_cpu_sec")) for t in targets) + " |")
        print(f"| {sc} | deliveries / s (wall) | "
              + " | ".join(fmt_m(get(t, sc, "median_deliveries_per_sec")) for t in targets) + " |")
        print(f"| {sc} | runs | " + " | ".join(runs(t, sc) for t in targets) + " |")
    sc = "idle-10k"
    print(f"| {sc} | RSS / connection (B) | "
          + " | ".join(f"{v:.0f}" if (v := get(t, sc, 'median_rss_per_conn_bytes')) else "–" for t in targets) + " |")
    print(f"| {sc} | runs | " + " | ".join(runs(t, sc) for t in targets) + " |")
    for sc in ["latency-100", "latency-1k", "latency-3k", "latency-10k"]:
        print(f"| {sc} @200/s | p50 / p99 / p999 ms | "
              + " | ".join(" / ".join(fmt_ms(get(t, sc, k)) for k in
                                      ("median_latency_p50_us", "median_latency_p99_us", "median_latency_p999_us"))
                           for t in targets) + " |")
        print(f"| {sc} | runs (other cores busy) | "
              + " | ".join(runs(t, sc) + (f" ({b:.2f})" if (b := get(t, sc, 'median_other_cores_busy')) is not None else "")
                           for t in targets) + " |")


if __name__ == "__main__":
    main()
