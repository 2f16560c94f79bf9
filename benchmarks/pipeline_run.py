"""Time a `curate run` end to end and sample the peak RSS of its whole process tree.

Dask workers are separate processes, so ``/usr/bin/time`` alone under-reports:
this samples driver + every worker every 0.2 s (psutil) and reports the peak sum.

    python benchmarks/pipeline_run.py pipelines/fashion_mnist.yaml --run-dir /tmp/fm -- --force
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import psutil


def tree_rss(p: psutil.Process) -> int:
    total = 0
    for q in [p, *p.children(recursive=True)]:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("extra", nargs="*", help="more `curate run` arguments (after --)")
    a = ap.parse_args()
    cmd = [os.path.join(os.path.dirname(sys.executable), "curate"), "run", a.pipeline, "--run-dir", a.run_dir,
           "--quiet", "--no-card", *a.extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    summary = json.load(open(os.path.join(a.run_dir, "summary.json"))) if proc.returncode == 0 else {}
    print(f"exit {proc.returncode}; wall {wall:.1f} s; peak RSS of the process tree {peak / 2**30:.2f} GiB; "
          f"load average {os.getloadavg()[0]:.1f}")
    for d, s in summary.get("stages", {}).items():
        print(f"  {d:<24} {s.get('seconds', 0):>7.1f} s  rows {s.get('rows')}")
    if summary:
        print("  accounting", summary["accounting"])


if __name__ == "__main__":
    main()
