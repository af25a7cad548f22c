#!/usr/bin/env python3
"""Renders docs/bench-chart.svg from a tools/bench.sh summary.json, no third-party packages.

    python3 tools/chart.py [--out docs/bench-chart.svg] SUMMARY.json [SUMMARY.json ...]

(later files override earlier ones per "target scenario" label)

Left panel: deliveries per server CPU-second (fanout-N scenarios, 64 B events, rate max) versus
subscribers. Right panel: p50 (dashed) and p99 (solid) publish->receive latency at 200 events/s (latency-N
scenarios) versus subscribers. One line per target; both axes are logarithmic.
"""
import json
import math
import sys

COLORS = {
    "sseloop": "#1f77b4",
    "sseloop-frames": "#2ca02c",
    "nchan": "#d62728",
    "gosse": "#ff7f0e",
}
SUBS = {"100": 100, "1k": 1000, "3k": 3000, "10k": 10000}


def series(summary, kind, key):
    """{target: [(subs, value)]} from labels "target kind-N"."""
    out = {}
    for label, med in summary.items():
        target, _, scenario = label.partition(" ")
        name, _, n = scenario.partition("-")
        if name != kind or n not in SUBS or key not in med:
            continue
        if med.get("ok_runs", 0) == 0:
            continue
        out.setdefault(target, []).append((SUBS[n], med[key]))
    for pts in out.values():
        pts.sort()
    return out


def panel(x0, y0, w, h, title, ylabel, data, scale, fmt, dashed=None):
    """SVG for one panel; data {target: [(subs, value)]}, dashed {target: [...]} optional."""
    s = []
    xs = [math.log10(v) for v in SUBS.values()]
    xmin, xmax = min(xs) - 0.1, max(xs) + 0.1
    vals = [v * scale for pts in list(data.values()) + list((dashed or {}).values())
            for _, v in pts if v > 0]
    # Logarithmic y: the targets differ by orders of magnitude.
    lo = math.floor(math.log10(min(vals))) if vals else 0
    hi = math.ceil(math.log10(max(vals))) if vals else 1
    if hi == lo:
        hi += 1

    def px(n):
        return x0 + (math.log10(n) - xmin) / (xmax - xmin) * w

    def py(v):
        return y0 + h - (math.log10(max(v * scale, 10 ** lo)) - lo) / (hi - lo) * h

    s.append(f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" font-weight="bold">{title}</text>')
    s.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>')
    for e in range(lo, hi + 1):
        v = 10 ** e
        y = y0 + h - h * (e - lo) / (hi - lo)
        s.append(f'<line x1="{x0}" y1="{y}" x2="{x0 + w}" y2="{y}" stroke="#eee"/>')
        s.append(f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end" font-size="11">{fmt(v)}</text>')
    for label, n in SUBS.items():
        x = px(n)
        s.append(f'<line x1="{x}" y1="{y0}" x2="{x}" y2="{y0 + h}" stroke="#eee"/>')
        s.append(f'<text x="{x}" y="{y0 + h + 16}" text-anchor="middle" font-size="11">{n:,}</text>')
    s.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 34}" text-anchor="middle" font-size="12">subscribers (log scale)</text>')
    s.append(f'<text transform="translate({x0 - 52},{y0 + h / 2}) rotate(-90)" text-anchor="middle" font-size="12">{ylabel}</text>')
    for group, dash in ((data, ""), (dashed or {}, ' stroke-dasharray="5,4"')):
        for target, pts in sorted(group.items()):
            c = COLORS.get(target, "#555")
            path = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in pts)
            s.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
            for n, v in pts:
                s.append(f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3" fill="{c}"/>')
    return s


def main():
    args = sys.argv[1:]
    out = "docs/bench-chart.svg"
    if len(args) >= 2 and args[0] == "--out":
        out, args = args[1], args[2:]
    if not args:
        sys.exit(__doc__)
    summary = {}
    for path in args:
        summary.update(json.load(open(path)))
    thr = series(summary, "fanout", "median_deliveries_per_server_cpu_sec")
    p99 = series(summary, "latency", "median_latency_p99_us")
    p50 = series(summary, "latency", "median_latency_p50_us")
    W, H = 980, 420
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>']
    s += panel(90, 40, 340, 280, "Throughput: 64 B events, rate max", "M deliveries per server CPU-s (log)",
               thr, 1e-6, lambda v: f"{v:g}")
    s += panel(590, 40, 340, 280, "Latency at 200 events/s (solid p99, dashed p50)", "publish→receive, ms (log)",
               p99, 1e-3, lambda v: f"{v:g}", dashed=p50)
    x = 90
    for target in sorted(set(thr) | set(p99)):
        c = COLORS.get(target, "#555")
        s.append(f'<rect x="{x}" y="{H - 30}" width="14" height="4" fill="{c}"/>')
        s.append(f'<text x="{x + 20}" y="{H - 24}">{target}</text>')
        x += 150
    s.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(s) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
