"""Print a compact table from a pytest-benchmark JSON file.

    pytest bench/ --benchmark-only --benchmark-json=bench.json
    python bench/report.py bench.json

(bench/pytest.ini is the configuration there: it collects bench_*.py with benchmarks enabled.)
Columns: op, shape, mode, backend, median time, effective GB/s, the floor time (bytes /
peak bandwidth) and the fraction of it achieved.
"""
import json
import sys


def rows(data):
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        median = b["stats"]["median"]
        peak = info.get("peak_gbps")
        floor_us = info["bytes"] / (peak * 1e9) * 1e6 if peak else None
        yield (info.get("op", b["name"]), info.get("shape", ""), info.get("mode", ""), info.get("backend", ""),
               median * 1e6, info.get("gbps"), floor_us, info.get("floor_fraction"), info.get("device", ""))


def main(path):
    with open(path) as f:
        data = json.load(f)
    head = ("op", "shape", "mode", "backend", "median_us", "GB/s", "floor_us", "of_floor", "device")
    fmt = "{:<27} {:<28} {:<6} {:<7} {:>11} {:>8} {:>9} {:>8}  {}"
    print(fmt.format(*head))
    for op, shape, mode, backend, us, gbps, floor_us, frac, dev in sorted(rows(data)):
        print(fmt.format(op, shape, mode, backend, f"{us:.1f}", f"{gbps:.1f}" if gbps is not None else "-",
                         f"{floor_us:.1f}" if floor_us is not None else "-",
                         f"{100 * frac:.0f}%" if frac is not None else "-", dev))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
