#!/usr/bin/env python3
"""Draws `booking-app loadgen --find-capacity --json` results as capacity.svg: for each stage, p99
latency against the offered rate of every search step, the SLO as a line and the capacity the
search chose (what a calibration records as perPodRps) marked. hack/calibrate.sh and hack/bench.sh
write it next to their tables; standard library only, drawn by hand like bench_report.py's ladder.

Usage: plot_capacity.py OUT_SVG LABEL=RESULT_JSON [LABEL=RESULT_JSON ...]
RESULT_JSON is loadgen's --json document (its `result.capacity`: the SLO, capacity_rps and the
steps, each with rate and p99_ms), or that capacity object alone."""

import json
import math
import sys
from html import escape

PANEL_W, PANEL_H = 300, 220  # plot area of one stage
LEFT, TOP, GAP, BOTTOM = 64, 76, 56, 72
PASS, FAIL, SLO_RED, CAPACITY_BLUE = "#2e8540", "#d0342c", "#d0342c", "#2f6db5"


def load_capacity(doc):
    """The CapacityResult inside a loadgen --json document (or the object itself)."""
    if isinstance(doc, dict) and isinstance(doc.get("result"), dict):
        doc = doc["result"].get("capacity")
    if not (isinstance(doc, dict) and isinstance(doc.get("steps"), list) and isinstance(doc.get("slo"), dict)):
        raise ValueError("not a --find-capacity result: no result.capacity with slo and steps")
    for step in doc["steps"]:
        if not all(isinstance(step.get(k), (int, float)) for k in ("rate", "p99_ms")):
            raise ValueError(f"a step without a numeric rate and p99_ms: {step!r}")
    return doc


def nice_step(span, ticks=5):
    """A round tick spacing (1, 2 or 5 times a power of ten) giving about `ticks` ticks over span."""
    raw = span / ticks if span > 0 else 1
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def panel(label, cap, x0):
    """SVG elements of one stage's panel, its plot area's left edge at x0."""
    steps = sorted(cap["steps"], key=lambda s: s["rate"])
    slo = float(cap["slo"]["p99_ms"])
    capacity = cap.get("capacity_rps")
    rates = [s["rate"] for s in steps] + ([capacity] if capacity else [])
    tick = nice_step(max(rates, default=1))
    x_max = (math.floor(max(rates, default=1) * 1.08 / tick) + 1) * tick
    # Log scale for p99: a failing step's p99 can be a hundred times the SLO.
    p99s = [s["p99_ms"] for s in steps if s["p99_ms"] > 0] + [slo]
    y_lo = 10 ** math.floor(math.log10(min(min(p99s), slo / 10)))
    y_hi = 10 ** math.ceil(math.log10(max(max(p99s), slo * 2)))

    def x(v):
        return x0 + PANEL_W * v / x_max

    def y(v):
        v = min(max(v, y_lo), y_hi)
        return TOP + PANEL_H * (1 - (math.log10(v) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo)))

    bottom = TOP + PANEL_H
    out = [f'<g class="panel" data-stage="{escape(label)}">',
           f'<text x="{x0 + PANEL_W / 2:.1f}" y="{TOP - 10}" text-anchor="middle" font-weight="bold">'
           f'{escape(label)}</text>',
           f'<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#b0b7c3"/>']
    v = 0
    while v <= x_max + 1e-9:
        gx = x(v)
        out.append(f'<line x1="{gx:.1f}" y1="{TOP}" x2="{gx:.1f}" y2="{bottom}" stroke="#eef0f3"/>')
        out.append(f'<text x="{gx:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#555">{v:,.0f}</text>')
        v += tick
    decade = y_lo
    while decade <= y_hi * 1.0001:
        gy = y(decade)
        out.append(f'<line x1="{x0}" y1="{gy:.1f}" x2="{x0 + PANEL_W}" y2="{gy:.1f}" stroke="#eef0f3"/>')
        out.append(f'<text x="{x0 - 6}" y="{gy + 4:.1f}" text-anchor="end" fill="#555">{decade:g}</text>')
        decade *= 10
    sy = y(slo)
    out.append(f'<line class="slo" data-p99-ms="{slo:g}" x1="{x0}" y1="{sy:.1f}" x2="{x0 + PANEL_W}" y2="{sy:.1f}" '
               f'stroke="{SLO_RED}" stroke-dasharray="6 4"/>')
    out.append(f'<text x="{x0 + PANEL_W - 4}" y="{sy - 5:.1f}" text-anchor="end" fill="{SLO_RED}">'
               f'SLO p99 {slo:g} ms</text>')
    if capacity:
        cx = x(capacity)
        out.append(f'<line class="capacity" data-rps="{capacity:.1f}" x1="{cx:.1f}" y1="{TOP}" x2="{cx:.1f}" '
                   f'y2="{bottom}" stroke="{CAPACITY_BLUE}" stroke-width="2"/>')
        anchor = "end" if cx > x0 + PANEL_W * 0.6 else "start"
        dx = -4 if anchor == "end" else 4
        out.append(f'<text x="{cx + dx:.1f}" y="{bottom - 8}" text-anchor="{anchor}" fill="{CAPACITY_BLUE}">'
                   f'capacity {capacity:,.0f} req/s</text>')
    else:
        out.append(f'<text class="no-capacity" x="{x0 + PANEL_W / 2:.1f}" y="{TOP + 16}" text-anchor="middle" '
                   f'fill="{FAIL}">no rate met the SLO</text>')
    if len(steps) > 1:
        points = " ".join(f"{x(s['rate']):.1f},{y(s['p99_ms']):.1f}" for s in steps)
        out.append(f'<polyline points="{points}" fill="none" stroke="#8a93a3"/>')
    for s in steps:
        px, py = x(s["rate"]), y(s["p99_ms"])
        why = s.get("breach") or "within the SLO"
        tip = f"<title>{s['rate']:,.0f} req/s offered: p99 {s['p99_ms']:.1f} ms, {escape(why)}</title>"
        if s.get("pass"):
            out.append(f'<circle class="step pass" data-rate="{s["rate"]:.1f}" data-p99-ms="{s["p99_ms"]:g}" '
                       f'cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{PASS}">{tip}</circle>')
        else:
            out.append(f'<circle class="step fail" data-rate="{s["rate"]:.1f}" data-p99-ms="{s["p99_ms"]:g}" '
                       f'cx="{px:.1f}" cy="{py:.1f}" r="4" fill="white" stroke="{FAIL}" stroke-width="2">{tip}</circle>')
    out.append(f'<text x="{x0 + PANEL_W / 2:.1f}" y="{bottom + 34}" text-anchor="middle" fill="#333">'
               'offered rate (req/s)</text>')
    out.append("</g>")
    return out


def svg(panels, title=None):
    """The whole chart: one panel per (label, capacity result), side by side."""
    if not panels:
        raise ValueError("nothing to plot")
    width = LEFT + len(panels) * (PANEL_W + GAP) - GAP + 24
    height = TOP + PANEL_H + BOTTOM
    slos = sorted({float(c["slo"]["p99_ms"]) for _, c in panels})
    title = title or ("loadgen --find-capacity: p99 against offered rate, SLO p99 "
                      + ", ".join(f"{s:g}" for s in slos) + " ms")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
             f'<text x="10" y="38" fill="#555">each step: filled = within the SLO, hollow = not (p99, errors '
             'or rate not served); blue: the capacity chosen (perPodRps)</text>',
             f'<text x="14" y="{TOP + PANEL_H / 2:.1f}" fill="#333" transform="rotate(-90 14 {TOP + PANEL_H / 2:.1f})" '
             'text-anchor="middle">p99 ms (log scale)</text>']
    for i, (label, cap) in enumerate(panels):
        parts += panel(label, cap, LEFT + i * (PANEL_W + GAP))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv):
    if len(argv) < 3 or any("=" not in a for a in argv[2:]):
        sys.exit(__doc__)
    panels = []
    for arg in argv[2:]:
        label, path = arg.split("=", 1)
        with open(path) as f:
            try:
                panels.append((label, load_capacity(json.load(f))))
            except ValueError as e:
                sys.exit(f"plot_capacity.py: {path}: {e}")
    with open(argv[1], "w") as f:
        f.write(svg(panels))


if __name__ == "__main__":
    main(sys.argv)
