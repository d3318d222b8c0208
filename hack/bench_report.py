#!/usr/bin/env python3
"""Turns hack/bench.sh's results.json into bench/results.md (tables: each ratio beside its target,
met or not), bench/results.svg (the ladder: req/s per rung at the flash-sale concurrency beside
the bare floor and each store's limit) and, when the calibration rows carry each step's p99,
capacity.svg beside it (hack/plot_capacity.py: p99 against offered rate per stage, the SLO and the
chosen capacity); drawn by hand, standard library only.

Usage: bench_report.py RESULTS_JSON OUT_MD OUT_SVG [PREVIOUS_RESULTS_JSON]
The previous run's results (the committed ones, before this run replaced them) give the c=16
history rows a column to compare with."""

import json
import math
import os
import sys
from html import escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_capacity  # noqa: E402


def fmt(value, digits=1):
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(value):
    """A ratio with the digits it needs: 0.004 is not 0.00."""
    if value is None:
        return "n/a"
    return f"{value:,.3f}" if abs(value) < 0.1 else f"{value:,.2f}"


def pct(value):
    return "n/a" if value is None else f"{value * 100:+.0f}%"


class Rows:
    """Lookup of this run's rows by kind, stage, variant and concurrency."""

    def __init__(self, doc):
        self.rows = doc["rows"]
        self.high = doc["parameters"]["concurrency"]

    def find(self, kind, stage, variant=None, concurrency=None, tool=None):
        found = None
        for r in self.rows:
            if r.get("kind") != kind or r.get("stage") != stage:
                continue
            if variant is not None and (r.get("variant") or "") != variant:
                continue
            if concurrency is not None and r.get("concurrency") != concurrency:
                continue
            if tool is not None and r.get("tool") != tool:
                continue
            found = r
        return found

    def variants(self, stage):
        seen = []
        for r in self.rows:
            if r.get("kind") == "stage" and r.get("stage") == stage and (r.get("variant") or "") not in seen:
                seen.append(r.get("variant") or "")
        return seen


def rps(row):
    return row.get("rps") if row else None


def served(row):
    """What a target counts: the 2xx answers per second (a 503 shed is answered, not served);
    the whole rate for rows that do not tell them apart (references, drains)."""
    if not row:
        return None
    admitted = row.get("admitted_rps")
    return admitted if admitted is not None else row.get("rps")


def div(a, b):
    return a / b if a is not None and b else None


# ------------------------------------------------------------------------------ targets

def targets(rows):
    """The Must-show list: (what, measured text, value, target text, met or None when unmeasured)."""
    c = rows.high
    bare = rows.find("limit", "bare", concurrency=c)
    # Acceptance is the API's and the broker's: the row whose worker waited for the load to end
    # (what an older run without variants recorded otherwise).
    kafka = rows.find("stage", "kafka", variant="api-alone", concurrency=c) or rows.find("stage", "kafka", concurrency=c)
    drain = rows.find("drain", "kafka")
    redis = rows.find("stage", "redis", concurrency=c)
    rb = rows.find("limit", "redis", concurrency=c)
    pg_batch = rows.find("stage", "postgres", variant="batch", concurrency=c)
    pg_per = rows.find("stage", "postgres", variant="per-booking", concurrency=c)
    out = []

    def add(what, measured, value, target, ok):
        out.append((what, measured, value, target, None if value is None else ok(value)))

    r = div(served(kafka), rps(bare))
    add(f"stage kafka acceptance (202/s) / bare axum, c={c}",
        f"{fmt(served(kafka))} / {fmt(rps(bare))} req/s", r, "≥ 0.6", lambda v: v >= 0.6)
    r = div(kafka and kafka.get("p99_ms"), bare and bare.get("p99_ms"))
    add(f"stage kafka p99 / bare axum p99, c={c}",
        f"{fmt(kafka and kafka.get('p99_ms'), 2)} / {fmt(bare and bare.get('p99_ms'), 2)} ms", r, "≤ 2", lambda v: v <= 2)
    d = rps(drain)
    add("stage kafka drain, decisions/s (one worker, queue measured on its own)",
        f"{fmt(d)} decisions/s", d, "≥ 10,000", lambda v: v >= 10_000)
    add("stage kafka drain / its acceptance",
        f"{fmt(d)} / {fmt(served(kafka))}", div(d, served(kafka)), "≥ 1", lambda v: v >= 1)
    floor = min([v for v in (rps(bare), rps(rb)) if v], default=None)
    add(f"stage redis / min(bare axum, redis-benchmark booking.lua), c={c}",
        f"{fmt(served(redis))} / min({fmt(rps(bare))}, {fmt(rps(rb))})", div(served(redis), floor), "≥ 0.5", lambda v: v >= 0.5)
    add(f"stage postgres POSTGRES_DECIDE=batch / per-booking, c={c}",
        f"{fmt(served(pg_batch))} / {fmt(served(pg_per))} req/s", div(served(pg_batch), served(pg_per)), "≥ 5", lambda v: v >= 5)
    checked = [r for r in rows.rows if r.get("kind") in ("stage", "spike", "calibration") and r.get("invariants_ok") is not None]
    broken = [r for r in checked if not r["invariants_ok"]]
    out.append(("every sale's invariants (closed loops, spikes, calibration steps): nothing oversold, nothing lost",
                f"{len(checked) - len(broken)} of {len(checked)} runs hold", None, "all",
                (not broken) if checked else None))
    return out


def verdict(ok):
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


# ------------------------------------------------------------------------------ tables

def stage_label(row):
    label = f"stage {row['stage']}"
    if row["stage"] == "kafka":
        label += " acceptance (202)"
    if row.get("variant"):
        label += f" ({row['variant']})"
    return label


LIMIT_TOOL = {"postgres": "pgbench, same transaction", "redis": "redis-benchmark EVALSHA booking.lua",
              "kafka": "ProducerPerformance (broker)"}


def ladder(rows):
    """Rungs at the high concurrency: (label, row, limit label, limit row)."""
    c = rows.high
    bare = rows.find("limit", "bare", concurrency=c)
    out = [("bare axum floor (loadgen)", bare, None, None)]
    for stage in ("postgres", "redis", "kafka"):
        # The per-booking form first: the ladder climbs.
        for variant in sorted(rows.variants(stage), key=lambda v: (v != "per-booking", v)):
            mine = rows.find("stage", stage, variant=variant, concurrency=c)
            if mine:
                limit = rows.find("limit", stage, concurrency=(1 if stage == "kafka" else c))
                out.append((stage_label(mine), mine, LIMIT_TOOL[stage], limit))
        if stage == "kafka" and rows.find("drain", "kafka"):
            out.append(("stage kafka drain (decisions/s)", rows.find("drain", "kafka"), None, None))
    return [r for r in out if r[1]]


def shed_and_errors(row):
    """`503 / other errors` of a closed loop (a 503 is shedding, an answer; not a failure)."""
    k = row.get("classes")
    if not k:
        return "" if row.get("errors") is None else str(row["errors"])
    return f"{k.get('503', 0)} / {k.get('errors', 0)}"


def ladder_table(rows):
    bare = rps(rows.find("limit", "bare", concurrency=rows.high))
    out = [
        f"| rung (c={rows.high}) | 2xx/s | p50 ms | p99 ms | × bare | its store's limit | limit req/s | × limit | 503 / errors | invariants |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for label, mine, limit_label, limit in ladder(rows):
        inv = mine.get("invariants_ok")
        out.append(
            f"| {label} | {fmt(served(mine))} | {fmt(mine.get('p50_ms'), 2)} | {fmt(mine.get('p99_ms'), 2)} | "
            f"{ratio(div(served(mine), bare))} | {limit_label or ''} | {fmt(rps(limit)) if limit_label else ''} | "
            f"{ratio(div(served(mine), rps(limit))) if limit_label else ''} | {shed_and_errors(mine)} | "
            f"{'' if inv is None else ('ok' if inv else '**violated**')} |"
        )
    return out


def references_table(rows):
    out = ["| reference | concurrency | req/s | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    for r in rows.rows:
        if r.get("kind") == "limit":
            c = "1 producer" if r["stage"] == "kafka" else r.get("concurrency", "")
            out.append(f"| {r.get('tool', r['stage'])} | {c} | {fmt(rps(r))} | "
                       f"{fmt(r.get('p50_ms'), 2)} | {fmt(r.get('p99_ms'), 2)} |")
    return out


def client_table(rows):
    """wrk next to loadgen on the same target at the same concurrency."""
    out = []
    for r in rows.rows:
        if r.get("kind") != "client":
            continue
        if r["stage"] == "bare":
            lg = rows.find("limit", "bare", concurrency=r.get("concurrency"))
            target = "bare axum"
        else:
            lg = rows.find("stage", r["stage"], variant=r.get("variant") or "", concurrency=r.get("concurrency"))
            target = stage_label({"stage": r["stage"], "variant": r.get("variant")})
        errors = sum(r.get(k, 0) for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
        out.append(f"| {target} | {r.get('concurrency', '')} | {fmt(rps(lg))} | {fmt(lg and lg.get('p99_ms'), 2)} | "
                   f"{fmt(rps(r))} | {fmt(r.get('p99_ms'), 2)} | {r.get('non_2xx', 0)} / {errors} | {ratio(div(rps(lg), rps(r)))} |")
    if not out:
        return []
    return ["| target | connections | loadgen req/s | loadgen p99 ms | wrk req/s | wrk p99 ms | wrk non-2xx / socket errors | loadgen / wrk |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"] + out


def spike_table(rows):
    out = []
    c = rows.high
    for r in rows.rows:
        if r.get("kind") != "spike":
            continue
        k = r.get("classes", {})
        inv = r.get("invariants_ok")
        shed = k.get("503", 0)
        with_retry = k.get("503_retry_after", 0)
        shed_text = f"{shed} ({with_retry} with Retry-After)" if shed else "0"
        out.append(
            f"| {stage_label(r)} | {fmt(r.get('sustained_rps'))} | {fmt(r.get('offered_rps'))} | {fmt(rps(r))} | "
            f"{k.get('2xx', 0)} | {k.get('409', 0)} | {shed_text} | "
            f"{k.get('errors', 0)} | {r.get('missed_sends', 0)} | {fmt(r.get('admitted_p99_ms'), 2)} | {fmt(r.get('p99_ms'), 2)} | "
            f"{'' if inv is None else ('ok' if inv else '**violated**')} |"
        )
    if not out:
        return []
    return [f"| stage | sustained at c={c} req/s | offered req/s | answered req/s | 2xx | 409 | 503 | errors / timeouts | missed sends | p99 admitted (2xx) ms | p99 all ms | invariants |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"] + out


def previous_rows(previous):
    """The previous run's rows at c=16, keyed like this run's: (kind, stage, variant)."""
    if not previous:
        return {}, None
    c_old = previous.get("parameters", {}).get("concurrency")
    out = {}
    for r in previous.get("rows", []):
        c = r.get("concurrency", c_old)
        if c != 16:
            continue
        kind, stage = r.get("kind"), r.get("stage")
        # Runs before the flash-sale bench recorded the bare floor as stage kafka's limit.
        if kind == "limit" and r.get("tool") == "bare axum":
            stage = "bare"
        out[(kind, stage, r.get("variant") or "")] = r
    return out, f"{previous.get('date', '?')}, `{previous.get('commit', '?')}`"


def history_table(rows, previous):
    old, when = previous_rows(previous)
    out = [f"| run at c=16 | req/s | p50 ms | p99 ms | previous run{f' ({when})' if when else ''} req/s |",
           "|---|---:|---:|---:|---:|"]
    any_row = False
    for r in rows.rows:
        if r.get("concurrency") != 16 or r.get("kind") not in ("stage", "limit"):
            continue
        any_row = True
        label = stage_label(r) if r["kind"] == "stage" else r.get("tool", r["stage"])
        before = old.get((r["kind"], r["stage"], r.get("variant") or ""))
        if before is None and r["kind"] == "stage" and r.get("variant"):
            before = old.get((r["kind"], r["stage"], ""))  # the one form of stage postgres before
        out.append(f"| {label} | {fmt(rps(r))} | {fmt(r.get('p50_ms'), 2)} | {fmt(r.get('p99_ms'), 2)} | {fmt(rps(before))} |")
    return out if any_row else []


# How far apart the calibration and the bench may be and still "agree": the search stops within
# 5% and a run on this shared 2-core machine moves by about 10% (bench/README.md).
AGREEMENT = 0.15


def calibration_reading(r):
    """What a calibration row says, as bench/README.md ("Calibration agreement") explains it."""
    diff, slo, bench_p99 = r.get("difference"), r.get("slo_p99_ms"), r.get("bench_p99_ms")
    if diff is None or slo is None or bench_p99 is None:
        return "n/a"
    if not r.get("per_pod_rps"):
        return "**no rate met the SLO**"
    if diff > AGREEMENT:
        # More in the open loop, with few requests in flight, than 256 clients got: the stage's
        # throughput falls as its concurrency rises.
        return "**disagrees**: higher, throughput falls with concurrency"
    if bench_p99 <= slo:
        return "agrees" if diff >= -AGREEMENT else "**disagrees**: lower"
    # Past the SLO at c=256 the closed loop measures throughput the SLO does not allow.
    return "SLO-bound (lower, as expected)"


def calibration_table(rows):
    out = []
    for r in rows.rows:
        if r.get("kind") != "calibration":
            continue
        steps = ", ".join(f"{s['rate']:,}{'✓' if s['pass'] else '✗'}" for s in r.get("step_rates", []))
        out.append(f"| {stage_label(r)} | {fmt(r.get('bench_rps'))} | {fmt(r.get('bench_p99_ms'), 1)} | "
                   f"{fmt(r.get('per_pod_rps'))} | {fmt(r.get('p99_ms'), 1)} | {pct(r.get('difference'))} | "
                   f"{calibration_reading(r)} | {steps} | {'ok' if r.get('invariants_ok') else '**violated**'} |")
    if not out:
        return []
    return [f"| stage | bench c={rows.high} req/s | bench p99 ms | find-capacity perPodRps | p99 there ms | difference | reading (±{AGREEMENT:.0%}) | steps (req/s, ✓ within SLO) | invariants |",
            "|---|---:|---:|---:|---:|---:|---|---|---|"] + out


def capacity_panels(rows):
    """The calibration rows as plot_capacity panels: (label, capacity result), for the rows whose
    steps carry their p99 (runs before the chart existed recorded only rate and verdict)."""
    panels = []
    for r in rows.rows:
        steps = r.get("step_rates") or []
        if r.get("kind") != "calibration" or not steps or not all("p99_ms" in s for s in steps):
            continue
        panels.append((stage_label(r), plot_capacity.load_capacity({
            "slo": {"p99_ms": r.get("slo_p99_ms")},
            "capacity_rps": r.get("per_pod_rps") or None,
            "steps": steps})))
    return panels


def applied_by(r):
    """How the bench applied the sales (runs before `appliers` was recorded used one kubectl)."""
    k = r.get("appliers")
    if k is None:
        return "kubectl, one multi-document file"
    return f"{k} kubectl apply --server-side at once"


def operator_table(rows):
    r = rows.find("operator", "operator")
    if not r:
        return []
    sized = r.get("sized_s")
    rss = r.get("peak_rss_mib")
    ok_t = sized is not None and sized < r.get("target_sized_s", 10)
    ok_m = rss is not None and rss < r.get("target_rss_mib", 64)
    return [
        "| measure | value | target | |",
        "|---|---:|---:|---|",
        f"| {r['sales']} FlashSales applied at once: apply start → all sized (desiredReplicas, sizing, observedGeneration) | "
        f"{fmt(sized, 2)} s ({r['sized']} of {r['sales']}) | < {r.get('target_sized_s', 10)} s | {verdict(ok_t if sized is not None else False)} |",
        f"| operator peak RSS (VmHWM, whole run incl. deletion) | {fmt(rss, 1)} MiB | < {r.get('target_rss_mib', 64)} MiB | {verdict(ok_m)} |",
        f"| per sale, listed → sized (p50 / max) | {fmt(r.get('per_sale_p50_s'), 2)} / {fmt(r.get('per_sale_max_s'), 2)} s | | |",
        f"| the apply itself ({applied_by(r)}) | {fmt(r.get('apply_s'), 2)} s | | |",
        f"| reconciles / failed / mean duration / operator CPU | {r.get('reconciles')} / {r.get('reconcile_failures')} / "
        f"{fmt(r.get('reconcile_mean_s'), 3)} s / {fmt(r.get('cpu_s'), 2)} s | | |",
    ]


# Columns of the CPU table: which processes a run's `cores` keys belong to.
CORE_COLUMNS = [
    ("client", lambda k: k == "tool"),
    ("booking-app / bare", lambda k: k.startswith("app-") or k == "bare"),
    ("worker", lambda k: k.startswith("worker-")),
    ("postgres", lambda k: k == "postgres"),
    ("redis", lambda k: k == "redis"),
    ("kafka", lambda k: k == "kafka"),
]


def run_name(r):
    kind = r["kind"]
    c = r.get("concurrency")
    if kind == "stage":
        return f"{stage_label(r)}, c={c}"
    if kind == "spike":
        return f"{stage_label(r)} spike"
    if kind == "client":
        return f"wrk → {'bare axum' if r['stage'] == 'bare' else stage_label(r)}, c={c}"
    if kind == "calibration":
        return f"find-capacity {stage_label(r)}"
    if r["stage"] == "kafka":
        return f"{r.get('tool', r['stage'])}, 1 producer"
    return f"{r.get('tool', r['stage'])}, c={c}"


def cores_table(rows):
    """Where the CPU went in each run: cores kept busy on average, by process."""
    runs = [r for r in rows.rows if r.get("cores")]
    if not runs:
        return []
    out = [
        "| run | " + " | ".join(c for c, _ in CORE_COLUMNS) + " | total |",
        "|---|" + "---:|" * (len(CORE_COLUMNS) + 1),
    ]
    for r in runs:
        cells = [sum(v for k, v in r["cores"].items() if match(k)) for _, match in CORE_COLUMNS]
        out.append(f"| {run_name(r)} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {sum(cells):.2f} |")
    return out


def markdown(doc, previous):
    rows = Rows(doc)
    m, p = doc["machine"], doc["parameters"]
    c = rows.high
    out = [
        f"# Benchmark: the stages at flash-sale concurrency (c={c})",
        "",
        f"Run {doc['date']} on {m['cores']} cores ({m['cpu']}, {m['kernel']}), commit `{doc['commit']}`, "
        f"{fmt(doc.get('elapsed_s', 0) / 60, 0)} min, load average at the end {m.get('load_at_end', 'n/a')}. "
        f"Closed loop {p['seconds']} s measured after {p['warmup']} s warm-up at concurrency "
        f"{' and '.join(str(x) for x in p.get('concurrencies', [c]))}; spikes open loop at "
        f"{p.get('spike_factor', 2)}× each stage's c={c} rate for {p.get('spike_seconds', 5)} s "
        f"(at most {p.get('spike_in_flight', '?')} in flight); every request a new user's, quantity 1, "
        f"with an Idempotency-Key, on an event too large to sell out; seed {p['seed']}. Produced by "
        "`make bench` (hack/bench.sh); raw numbers in results.json, the ladder in results.svg, the "
        "method in README.md here.",
        "",
        f"## Targets (c={c})",
        "",
        "| target | measured | ratio / value | target | |",
        "|---|---|---:|---:|---|",
    ]
    for what, measured, value, target, ok in targets(rows):
        shown = "" if value is None and ok is not None else (ratio(value) if value is None or value < 1000 else fmt(value, 0))
        out.append(f"| {what} | {measured} | {shown} | {target} | {verdict(ok)} |")
    out += ["", f"## The ladder (c={c})", "", "![the ladder](results.svg)", ""] + ladder_table(rows)
    sections = [
        ("References, same run", references_table(rows),
         "ProducerPerformance is one producer sending as fast as it can (no concurrency setting); its "
         "latency includes the time records wait in its own buffer."),
        (f"Is the client the bottleneck? loadgen next to wrk (same server, same connections)", client_table(rows),
         "wrk gives every request a new user and Idempotency-Key (hack/bench/wrk-booking.lua) and checks "
         "nothing; loadgen's numbers are the ones with invariants. Stage kafka under wrk runs with no "
         "worker (its backlog is never decided)."),
        ("Spike: open loop at twice the sustained rate", spike_table(rows),
         "Latency counts from each request's intended send time. 503 is load shedding (with Retry-After "
         "where the server sent it); errors are other statuses and requests with no answer; missed "
         "sends were due but never left (the in-flight cap was full until the give-up time)."),
        ("History: c=16 (the concurrency of earlier runs)", history_table(rows, previous), ""),
        ("Calibration agreement: loadgen --find-capacity against the same setup", calibration_table(rows),
         f"SLO p99 ≤ {p.get('calibrate_slo_p99_ms', 200)} ms, error rate ≤ 1%, {p.get('calibrate_seconds', 5)} s "
         "per step. How to read it: bench/README.md."
         + ("\n\nEvery step of each search, p99 against the offered rate, with the SLO and the capacity "
            "chosen (capacity.svg):\n\n![p99 against offered rate per stage](capacity.svg)"
            if capacity_panels(rows) else "")),
        ("Operator at scale", operator_table(rows), ""),
        ("Cores kept busy on average while each run's client ran", cores_table(rows),
         "CPU seconds / wall seconds; the client's warm-up and its wait for stage kafka's decisions included. "
         "Every process shares the same cores, so a ratio compares whole paths on one machine."),
    ]
    for title, table, note in sections:
        if not table:
            continue
        out += ["", f"## {title}", ""] + table
        if note:
            out += ["", note]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ chart

def svg(doc):
    """The ladder, horizontal bars on a log scale: each rung (blue), its store's limit (grey)
    beneath it, the bare floor (dark) on top and as a dashed line; targets as red ticks."""
    rows = Rows(doc)
    bare = rps(rows.find("limit", "bare", concurrency=rows.high))
    rb = rps(rows.find("limit", "redis", concurrency=rows.high))
    per = served(rows.find("stage", "postgres", variant="per-booking", concurrency=rows.high))
    kafka = served(rows.find("stage", "kafka", variant="api-alone", concurrency=rows.high)
                or rows.find("stage", "kafka", concurrency=rows.high))
    bars = []  # (label, value, color, target or None)
    for label, mine, limit_label, limit in ladder(rows):
        target = None
        if mine.get("kind") == "stage" and mine["stage"] == "kafka" and bare:
            target = 0.6 * bare
        elif mine.get("kind") == "stage" and mine["stage"] == "redis":
            floor = min([v for v in (bare, rb) if v], default=None)
            target = floor and 0.5 * floor
        elif mine.get("kind") == "stage" and mine.get("variant") == "batch" and per:
            target = 5 * per
        elif mine.get("kind") == "drain":
            target = max(10_000, kafka or 0)
        color = "#444b57" if mine.get("kind") == "limit" else "#2f6db5"
        bars.append((label, served(mine), color, target))
        if limit_label and rps(limit):
            # One limit bar per store, after the last rung it limits (both forms of stage postgres).
            bars = [b for b in bars if b[0] != limit_label]
            bars.append((limit_label, rps(limit), "#b0b7c3", None))
    left, width, bar_h, gap, top = 330, 520, 18, 6, 50
    height = top + len(bars) * (bar_h + gap) + 56
    values = [v for _, v, _, t in bars if v and v > 0] + [t for *_, t in bars if t]
    lo = 10 ** math.floor(math.log10(min(values))) if values else 1
    hi = 10 ** math.ceil(math.log10(max(values))) if values else 10

    def x(v):
        return left + width * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo) or 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">flashsale ladder at c={rows.high}: req/s per rung '
        f'(blue), its store\'s limit (grey), bare axum (dark); log scale</text>',
        f'<text x="10" y="38" fill="#555">{escape(doc["date"])}, {doc["machine"]["cores"]} cores, commit '
        f'{escape(doc["commit"])}; red tick: the target</text>',
    ]
    decade = lo
    while decade <= hi:
        gx = x(decade)
        parts.append(f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" y2="{height - 44}" stroke="#e3e6eb"/>')
        parts.append(f'<text x="{gx:.1f}" y="{height - 28}" text-anchor="middle" fill="#555">{decade:,.0f}</text>')
        decade *= 10
    if bare:
        bx = x(bare)
        parts.append(f'<line x1="{bx:.1f}" y1="{top - 6}" x2="{bx:.1f}" y2="{height - 44}" stroke="#444b57" stroke-dasharray="4 3"/>')
    for i, (label, value, color, target) in enumerate(bars):
        y = top + i * (bar_h + gap)
        grey = ' fill="#666"' if color == "#b0b7c3" else ""
        parts.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end"{grey}>{escape(label)}</text>')
        if value:
            parts.append(f'<rect x="{left}" y="{y}" width="{max(x(value) - left, 1):.1f}" height="{bar_h}" fill="{color}"/>')
            parts.append(f'<text x="{x(value) + 4:.1f}" y="{y + 13}">{value:,.0f}</text>')
        if target:
            tx = x(target)
            parts.append(f'<line x1="{tx:.1f}" y1="{y - 2}" x2="{tx:.1f}" y2="{y + bar_h + 2}" stroke="#d0342c" stroke-width="2"/>')
    parts.append(f'<text x="10" y="{height - 8}" fill="#555">req/s (decisions/s for the drain); '
                 'made by make bench (hack/bench.sh), table in bench/results.md</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv):
    if len(argv) not in (4, 5):
        sys.exit(__doc__)
    with open(argv[1]) as f:
        doc = json.load(f)
    previous = None
    if len(argv) == 5:
        try:
            with open(argv[4]) as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = None
    with open(argv[2], "w") as f:
        f.write(markdown(doc, previous))
    with open(argv[3], "w") as f:
        f.write(svg(doc))
    panels = capacity_panels(Rows(doc))
    if panels:
        with open(os.path.join(os.path.dirname(os.path.abspath(argv[3])), "capacity.svg"), "w") as f:
            f.write(plot_capacity.svg(panels, f"make bench, calibration agreement ({doc['date']}): "
                                      "p99 against offered rate per stage"))


if __name__ == "__main__":
    main(sys.argv)
