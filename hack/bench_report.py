#!/usr/bin/env python3
"""Turns hack/bench.sh's results.json into bench/results.md (a table) and bench/results.svg (a bar
chart drawn by hand: standard library only). Usage: bench_report.py RESULTS_JSON OUT_MD OUT_SVG"""

import json
import math
import sys
from html import escape

# What each stage is compared with, and the ratio the roadmap asks for (reported, not asserted).
LIMITS = {
    "postgres": ("pgbench, same transaction", 0.8),
    "redis": ("redis-benchmark EVALSHA booking.lua", 0.5),
    "kafka": ("bare axum endpoint, same loadgen", 0.6),
}
MEASURED = {
    "postgres": "booking-app stage postgres",
    "redis": "booking-app stage redis",
    "kafka": "booking-app stage kafka, acceptance (202)",
}


def fmt(value, digits=1):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def comparisons(doc):
    """One comparison per table line: (stage, measured label, row, limit label, limit row, target)."""
    rows = {(r["kind"], r["stage"]): r for r in doc["rows"]}
    lines = []
    for stage in ("postgres", "redis", "kafka"):
        mine, limit = rows.get(("stage", stage)), rows.get(("limit", stage))
        if mine is None:
            continue
        label, target = LIMITS[stage]
        lines.append((stage, MEASURED[stage], mine, label, limit, target))
        if stage == "kafka" and mine.get("drain_rps") is not None:
            drain = {"rps": mine["drain_rps"], "p50_ms": None, "p99_ms": None}
            lines.append(("kafka", "stage kafka worker drain (decisions/s)", drain,
                          "its acceptance rate", mine, 1.0))
    return lines


def ratio(mine, limit):
    if not limit or not limit.get("rps"):
        return None
    return mine["rps"] / limit["rps"]


def markdown(doc, lines):
    m, p = doc["machine"], doc["parameters"]
    out = [
        "# Benchmark: each stage next to the limit of its own store",
        "",
        f"Run {doc['date']} on {m['cores']} cores ({m['cpu']}, {m['kernel']}), commit `{doc['commit']}`.",
        f"{p['seconds']} s measured after {p['warmup']} s warm-up per run, concurrency {p['concurrency']} "
        f"for every tool, seed {p['seed']}. Produced by `make bench` (hack/bench.sh); raw numbers in "
        "results.json, chart in results.svg.",
        "",
        "| stage | measured | req/s | p50 ms | p99 ms | limit (same run) | limit req/s | limit p50 ms "
        "| limit p99 ms | ratio | target |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for stage, label, mine, limit_label, limit, target in lines:
        r = ratio(mine, limit)
        out.append(
            f"| {stage} | {label} | {fmt(mine['rps'])} | {fmt(mine.get('p50_ms'), 2)} | "
            f"{fmt(mine.get('p99_ms'), 2)} | {limit_label} | {fmt(limit and limit.get('rps'))} | "
            f"{fmt(limit and limit.get('p50_ms'), 2)} | {fmt(limit and limit.get('p99_ms'), 2)} | "
            f"{fmt(r, 2)} | ≥ {target} |"
        )
    out += [
        "",
        "Every tool shares the same cores with the store it drives (and loadgen with booking-app), "
        "so a ratio compares the whole path on one machine, not the service alone.",
        "",
    ]
    out += cores_table(doc)
    return "\n".join(out)


# Columns of the CPU table: which processes a run's `cores` keys belong to.
CORE_COLUMNS = [
    ("client", lambda k: k == "tool"),
    ("booking-app / bare", lambda k: k.startswith("app-") or k == "bare"),
    ("worker", lambda k: k.startswith("worker-")),
    ("postgres", lambda k: k == "postgres"),
    ("redis", lambda k: k == "redis"),
    ("kafka", lambda k: k == "kafka"),
]


def cores_table(doc):
    """Where the CPU went in each run: cores kept busy on average, by process."""
    runs = [r for r in doc["rows"] if r.get("cores")]
    if not runs:
        return []
    out = [
        "Cores kept busy on average while each run's client ran (CPU seconds / wall seconds; the "
        "client's warm-up, and for stage kafka its wait for the drain, included):",
        "",
        "| run | " + " | ".join(c for c, _ in CORE_COLUMNS) + " | total |",
        "|---|" + "---:|" * (len(CORE_COLUMNS) + 1),
    ]
    for r in runs:
        name = f"stage {r['stage']}" if r["kind"] == "stage" else r.get("tool", f"limit of {r['stage']}")
        cells = [sum(v for k, v in r["cores"].items() if match(k)) for _, match in CORE_COLUMNS]
        out.append(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {sum(cells):.2f} |")
    out.append("")
    return out


def svg(doc, lines):
    """Horizontal bars, log scale: each stage's req/s above its limit's."""
    bars = []
    drawn = []
    for stage, label, mine, limit_label, limit, _ in lines:
        bars.append((label, mine["rps"], "#2f6db5"))
        drawn.append(id(mine))
        # The drain's limit is the acceptance rate, already drawn as a bar of its own.
        if limit and limit.get("rps") and id(limit) not in drawn:
            bars.append((limit_label, limit["rps"], "#b0b7c3"))
    left, width, bar_h, gap, top = 330, 520, 18, 6, 50
    height = top + len(bars) * (bar_h + gap) + 40
    values = [v for _, v, _ in bars if v and v > 0]
    lo = 10 ** math.floor(math.log10(min(values))) if values else 1
    hi = 10 ** math.ceil(math.log10(max(values))) if values else 10

    def x(v):
        return left + width * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo) or 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="10" y="22" font-size="15" font-weight="bold">flashsale: req/s per stage (blue) and '
        f'its limit (grey), log scale — {escape(doc["date"])}, {doc["machine"]["cores"]} cores</text>',
    ]
    decade = lo
    while decade <= hi:
        gx = x(decade)
        parts.append(f'<line x1="{gx:.1f}" y1="{top - 8}" x2="{gx:.1f}" y2="{height - 30}" stroke="#e3e6eb"/>')
        parts.append(f'<text x="{gx:.1f}" y="{height - 14}" text-anchor="middle" fill="#555">{decade:,.0f}</text>')
        decade *= 10
    for i, (label, value, color) in enumerate(bars):
        y = top + i * (bar_h + gap)
        parts.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{max(x(value) - left, 1):.1f}" height="{bar_h}" fill="{color}"/>')
        parts.append(f'<text x="{x(value) + 4:.1f}" y="{y + 13}">{value:,.0f}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    with open(argv[1]) as f:
        doc = json.load(f)
    lines = comparisons(doc)
    with open(argv[2], "w") as f:
        f.write(markdown(doc, lines))
    with open(argv[3], "w") as f:
        f.write(svg(doc, lines))


if __name__ == "__main__":
    main(sys.argv)
