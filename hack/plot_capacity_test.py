#!/usr/bin/env python3
"""Unit tests of hack/plot_capacity.py (run by `make lint`: python3 -m unittest discover -s hack
-p '*_test.py'). The chart is parsed back as XML and its marks checked against the data."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_capacity  # noqa: E402

NS = {"s": "http://www.w3.org/2000/svg"}


def loadgen_doc(steps, capacity, slo=200):
    """A document shaped like `loadgen --find-capacity --json` prints."""
    return {"url": "http://127.0.0.1:1", "seed": 1,
            "result": {"capacity": {"slo": {"p99_ms": slo, "max_error_rate": 0.01},
                                    "capacity_rps": capacity, "steps": steps},
                       "calibration": {"perPodRps": capacity or 0.0, "sloP99Ms": slo}, "runs": []}}


def step(rate, p99, ok, breach=None):
    s = {"rate": rate, "achieved_rps": rate, "p99_ms": p99, "error_rate": 0.0, "pass": ok}
    if breach:
        s["breach"] = breach
    return s


SEARCH = [step(500, 3.1, True), step(1000, 4.0, True), step(2000, 950.0, False, "p99 950.0 ms > 200 ms"),
          step(1500, 120.0, True), step(1750, 410.0, False, "p99 410.0 ms > 200 ms")]


def parse(text):
    return ET.fromstring(text)


class PlotCapacity(unittest.TestCase):
    def test_every_step_is_a_mark_above_or_below_the_slo_line(self):
        root = parse(plot_capacity.svg([("redis", plot_capacity.load_capacity(loadgen_doc(SEARCH, 1500.0)))]))
        slo = root.find(".//s:line[@class='slo']", NS)
        self.assertEqual(slo.get("data-p99-ms"), "200")
        slo_y = float(slo.get("y1"))
        marks = root.findall(".//s:circle", NS)
        self.assertEqual(len(marks), len(SEARCH))
        for m in marks:
            p99, y = float(m.get("data-p99-ms")), float(m.get("cy"))
            # SVG y grows downwards: within the SLO is below the line's y.
            self.assertEqual(p99 <= 200, y > slo_y, (p99, y, slo_y))
            self.assertEqual("pass" in m.get("class"), p99 <= 200)
        # Marks run left to right by offered rate.
        xs = [(float(m.get("data-rate")), float(m.get("cx"))) for m in marks]
        self.assertEqual(sorted(xs), sorted(xs, key=lambda r: r[1]))

    def test_the_chosen_capacity_is_marked_where_its_step_is(self):
        root = parse(plot_capacity.svg([("redis", plot_capacity.load_capacity(loadgen_doc(SEARCH, 1500.0)))]))
        cap = root.find(".//s:line[@class='capacity']", NS)
        self.assertEqual(float(cap.get("data-rps")), 1500.0)
        best = [m for m in root.findall(".//s:circle", NS) if m.get("data-rate") == "1500.0"][0]
        self.assertAlmostEqual(float(cap.get("x1")), float(best.get("cx")), places=1)
        self.assertIn("capacity 1,500 req/s", ET.tostring(root, encoding="unicode"))

    def test_no_capacity_says_so_and_draws_no_capacity_line(self):
        doc = loadgen_doc([step(100, 900.0, False, "p99 900.0 ms > 200 ms")], None)
        root = parse(plot_capacity.svg([("postgres", plot_capacity.load_capacity(doc))]))
        self.assertIsNone(root.find(".//s:line[@class='capacity']", NS))
        self.assertEqual(root.find(".//s:text[@class='no-capacity']", NS).text, "no rate met the SLO")

    def test_one_panel_per_stage(self):
        panels = [(s, plot_capacity.load_capacity(loadgen_doc(SEARCH, 1500.0))) for s in ("postgres", "redis", "kafka")]
        root = parse(plot_capacity.svg(panels))
        self.assertEqual([g.get("data-stage") for g in root.findall("s:g", NS)], ["postgres", "redis", "kafka"])

    def test_what_is_not_a_capacity_result_is_refused(self):
        for bad in ({"run": {"report": {}}}, {"result": {"capacity": {"slo": {"p99_ms": 1}, "steps": [{"rate": 1}]}}}):
            with self.assertRaises(ValueError):
                plot_capacity.load_capacity(bad)
        with self.assertRaises(ValueError):
            plot_capacity.svg([])

    def test_the_command_writes_the_file_and_fails_on_a_bad_input(self):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plot_capacity.py")
        with tempfile.TemporaryDirectory() as d:
            good, bad, out = (os.path.join(d, n) for n in ("good.json", "bad.json", "capacity.svg"))
            with open(good, "w") as f:
                json.dump(loadgen_doc(SEARCH, 1500.0), f)
            with open(bad, "w") as f:
                f.write('{"run": {}}')
            subprocess.run([sys.executable, script, out, f"kafka={good}"], check=True)
            with open(out) as f:
                self.assertEqual(len(parse(f.read()).findall(".//s:circle", NS)), len(SEARCH))
            failed = subprocess.run([sys.executable, script, out, f"kafka={bad}"], capture_output=True, text=True)
            self.assertNotEqual(failed.returncode, 0)
            self.assertIn("not a --find-capacity result", failed.stderr)


class BenchReportCapacity(unittest.TestCase):
    """bench_report.py draws capacity.svg from the calibration rows of make bench's results.json."""

    def rows(self, steps):
        import bench_report
        row = {"kind": "calibration", "stage": "postgres", "variant": "batch", "per_pod_rps": 1500.0,
               "slo_p99_ms": 200, "step_rates": steps}
        return bench_report, bench_report.Rows({"rows": [row], "parameters": {"concurrency": 256}})

    def test_rows_with_each_steps_p99_become_a_panel(self):
        bench_report, rows = self.rows([{"rate": s["rate"], "p99_ms": s["p99_ms"], "pass": s["pass"]} for s in SEARCH])
        panels = bench_report.capacity_panels(rows)
        self.assertEqual([label for label, _ in panels], ["stage postgres (batch)"])
        root = parse(plot_capacity.svg(panels))
        self.assertEqual(len(root.findall(".//s:circle", NS)), len(SEARCH))
        self.assertEqual(float(root.find(".//s:line[@class='capacity']", NS).get("data-rps")), 1500.0)

    def test_rows_of_runs_before_the_chart_are_not_plotted(self):
        bench_report, rows = self.rows([{"rate": 500, "pass": True}])
        self.assertEqual(bench_report.capacity_panels(rows), [])


if __name__ == "__main__":
    unittest.main()
