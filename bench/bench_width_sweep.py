"""Benchmark: one point of a width sweep at a large width against the reference width.

Trains the sweep's network (one hidden layer, leaky ReLU 0.1, no bias, one logit) under the NTK
scaling on 1024 digits (0-4 vs 5-9), float32, full-batch SGD at lr 0.02, with the sweep's
records (about 30 log-spaced steps: train/test loss and accuracy, mean |logit|, per-layer
tangent-kernel diagonal on 128 training images), exactly as `width_sweep` does for one
(scaling, width, seed). Each width runs in a fresh child process, which reports

- the total time of the training loop with its records, and the time per step;
- the peak resident-set growth during training (VmHWM reset just before training, as in
  bench_fc_kernel.py; ``ru_maxrss`` would include the interpreter's and the data's), and the
  whole process's peak.

The same point at width 128 is measured in the same run, and the ratios are printed.

    python bench/bench_width_sweep.py [--width 65536] [--steps 2000] [--threads 2]

With ``--steps`` below 2000 the 2000-step time is also extrapolated from the time per step
(records are log-spaced, so almost all of their cost falls in the first steps' decade and the
extrapolation slightly overestimates).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from widelimits.limits.sweep import (
    _network,
    _train,
    load_binary_task,
    named_scaling,
    record_steps,
)

REF_WIDTH = 128
FULL_STEPS = 2000


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def child(width: int, steps: int, records: int, n_train: int, threads: int) -> None:
    """Run in a fresh process: train one sweep point and print a JSON line."""
    torch.set_num_threads(threads)
    data = load_binary_task(n_train, 0, torch.float32)
    net = _network(1, 0.1)
    scaling = named_scaling("NTK", 1, REF_WIDTH)
    torch.manual_seed(0)
    model = net.build(data[0].shape[1], width, parametrization=scaling, seed=0,
                      dtype=torch.float32)  # fmt: skip
    grid = record_steps(steps, records)
    kernel_x = data[0][:128]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    out = _train(model, data, 0.02, grid, kernel_x)
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    rec = out["records"]
    print(json.dumps({
        "width": width, "steps": steps, "records": len(grid), "seconds": seconds,
        "extra_mib": (peak - before) / 1024, "peak_mib": peak / 1024,
        "final_train_loss": rec["train_loss"][-1], "final_test_accuracy": rec["test_accuracy"][-1],
        "kernel_ratio": rec["kernel_ratio"][-1],
    }))  # fmt: skip


def measure(width: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", str(width), "--steps", str(args.steps),
           "--records", str(args.records), "--n-train", str(args.n_train),
           "--threads", str(args.threads)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=FULL_STEPS)
    parser.add_argument("--records", type=int, default=30)
    parser.add_argument("--n-train", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child, args.steps, args.records, args.n_train, args.threads)

    print(f"one sweep point: NTK scaling, 1 hidden layer, {args.n_train} examples, "
          f"{args.steps} full-batch steps, ~{args.records} records, float32")  # fmt: skip
    print(f"torch {torch.__version__}, {args.threads} threads\n")
    rows = [measure(w, args) for w in (REF_WIDTH, args.width)]
    print("width   total_s   ms/step   extra_MiB  peak_MiB  train_loss  test_acc  kernel_ratio")
    for r in rows:
        print(f"{r['width']:6d}  {r['seconds']:8.2f}  {1e3 * r['seconds'] / r['steps']:8.2f}  "
              f"{r['extra_mib']:9.1f}  {r['peak_mib']:8.1f}  {r['final_train_loss']:10.4f}  "
              f"{r['final_test_accuracy']:8.4f}  {r['kernel_ratio']:12.5f}")  # fmt: skip
    small, big = rows
    print(f"\nratio width {args.width} / width {REF_WIDTH}: time "
          f"{big['seconds'] / small['seconds']:.1f}x, extra memory "
          f"{big['extra_mib'] / max(small['extra_mib'], 1e-3):.1f}x, peak memory "
          f"{big['peak_mib'] / small['peak_mib']:.2f}x")  # fmt: skip
    if args.steps != FULL_STEPS:
        per_step = big["seconds"] / big["steps"]
        print(f"extrapolated to {FULL_STEPS} steps at width {args.width}: "
              f"{per_step * FULL_STEPS:.0f} s ({per_step * 1e3:.1f} ms/step)")  # fmt: skip


if __name__ == "__main__":
    main()
