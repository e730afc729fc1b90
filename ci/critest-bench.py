#!/usr/bin/env python3
"""critest --benchmark results of crid and containerd side by side (ci/critest --benchmark).

  ci/critest-bench.py CRID_DATA_DIR CONTAINERD_DATA_DIR

Each directory holds the *_benchmark_data.json files critest writes with
--benchmarking-output-dir: per benchmark, the operations of one lifecycle and, per sample, the
duration of each operation (ns) and the sample's start and end (ns since the epoch). Prints, per
benchmark and operation, p50 and p90 of each runtime in ms and the ratio crid / containerd
(below 1: crid is faster); per benchmark, the lifecycle (sum of its operations) the same way and
the throughput, samples completed per second between the first start and the last end (ratio
above 1: crid is faster). Exits 1 when a benchmark of one runtime has no samples.
"""
import glob
import json
import os
import sys


def percentile(values, p):
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-p * len(ordered) // 100))
    return ordered[rank - 1]


def load(directory):
    results = {}
    for path in sorted(glob.glob(os.path.join(directory, "*_benchmark_data.json"))):
        name = os.path.basename(path)[: -len("_benchmark_data.json")]
        with open(path) as f:
            results[name] = json.load(f)
    return results


def columns(samples):
    """Operation name -> durations in ms; 'lifecycle' -> their sums."""
    names = samples.get("operationsNames") or []
    points = [p for p in samples.get("datapoints") or [] if len(p.get("operationsDurationsNs") or []) == len(names)]
    out = {name: [p["operationsDurationsNs"][i] / 1e6 for p in points] for i, name in enumerate(names)}
    if len(names) > 1:
        out["lifecycle"] = [sum(p["operationsDurationsNs"]) / 1e6 for p in points]
    return names + (["lifecycle"] if len(names) > 1 else []), out, points


def throughput(points):
    if not points:
        return 0.0
    span_s = (max(p["endTime"] for p in points) - min(p["startTime"] for p in points)) / 1e9
    return len(points) / span_s if span_s > 0 else 0.0


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    crid, containerd = load(sys.argv[1]), load(sys.argv[2])
    status = 0
    print("critest --benchmark: ms per operation, ratio = crid / containerd (below 1: crid is faster)")
    header = "%-28s %4s %4s %9s %9s %6s   %9s %9s %6s" % (
        "benchmark / operation", "n", "n", "crid p50", "ctrd p50", "ratio", "crid p90", "ctrd p90", "ratio")
    for bench in sorted(set(crid) | set(containerd)):
        if bench not in crid or bench not in containerd:
            print("%s: only %s wrote results" % (bench, "crid" if bench in crid else "containerd"))
            status = 1
            continue
        names, a, a_points = columns(crid[bench])
        _, b, b_points = columns(containerd[bench])
        print()
        print("%s (%d at a time)" % (bench, max(crid[bench].get("numParallel", 1), 1)))
        print(header)
        for name in names:
            if not a.get(name) or not b.get(name):
                print("%-28s no samples" % name)
                status = 1
                continue
            a50, b50, a90, b90 = (percentile(a[name], 50), percentile(b[name], 50),
                                  percentile(a[name], 90), percentile(b[name], 90))
            print("%-28s %4d %4d %9.1f %9.1f %5.2fx   %9.1f %9.1f %5.2fx" % (
                "  " + name, len(a[name]), len(b[name]), a50, b50, a50 / b50 if b50 else float("inf"),
                a90, b90, a90 / b90 if b90 else float("inf")))
        ta, tb = throughput(a_points), throughput(b_points)
        print("%-28s crid %.2f/s, containerd %.2f/s: %.2fx" % (
            "  throughput", ta, tb, ta / tb if tb else float("inf")))
    if not crid or not containerd:
        print("no benchmark data from %s" % ("crid" if not crid else "containerd"))
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
