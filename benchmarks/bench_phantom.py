"""Phantom generation speed on one core: seconds per subject, per stage, and for writing the files.

    python benchmarks/bench_phantom.py [--subjects 3] [--region lumbar] [--preset t1w]

Not a test: the issue's target is one lumbar subject in at most 2 s on one core. Wall time on a shared
machine includes other processes' load, so CPU time (process_time) is printed next to it.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: one core, as the target says

import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mr2ct.core.config import PhantomConfig, PhantomPreset, Region  # noqa: E402
from mr2ct.phantom.generate import generate_subject, write_subject  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--region", default="lumbar", choices=[r.value for r in Region])
    parser.add_argument("--preset", default="t1w", choices=[p.value for p in PhantomPreset])
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    config = PhantomConfig(preset=PhantomPreset(args.preset), region=Region(args.region), subjects=args.subjects)
    generate_subject(config, 0)  # warm-up: imports and first-touch allocations
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.subjects):
            wall, cpu = time.perf_counter(), time.process_time()
            subject = generate_subject(config, index)
            generate_wall, generate_cpu = time.perf_counter() - wall, time.process_time() - cpu
            wall, cpu = time.perf_counter(), time.process_time()
            write_subject(subject, Path(tmp) / subject.name)
            rows.append((generate_wall, generate_cpu, time.perf_counter() - wall, time.process_time() - cpu,
                         subject.timings, subject.mr.shape, subject.ct.shape))
    print(f"{args.subjects} {args.region} {args.preset} subjects, one core")
    for generate_wall, generate_cpu, write_wall, write_cpu, timings, mr_shape, ct_shape in rows:
        stages = ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in timings.items())
        print(f"  generate {generate_wall:.2f} s wall / {generate_cpu:.2f} s cpu; write {write_wall:.2f} / "
              f"{write_cpu:.2f}; MR {mr_shape}, CT {ct_shape}; stages (wall): {stages}")
    columns = np.array([row[:4] for row in rows])
    mean = columns.mean(axis=0)
    print(f"mean per subject: generate {mean[0]:.2f} s wall / {mean[1]:.2f} s cpu, "
          f"generate + write {mean[0] + mean[2]:.2f} s wall / {mean[1] + mean[3]:.2f} s cpu")


if __name__ == "__main__":
    main()
