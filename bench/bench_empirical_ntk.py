"""Benchmark: empirical NTK of finite torch networks, against neural-tangents' empirical_ntk_fn.

    python bench/bench_empirical_ntk.py [--repeats 3] [--resnet] [--nt-slow] [--no-nt]
    python bench/bench_empirical_ntk.py --attention [--skip-mlp --no-nt]
    python bench/bench_empirical_ntk.py --contention [--repeats 5]

(a) MLP 3072-512-512-1 (``nn.Sequential`` of Linear/ReLU, float32, eval) on 100 standard-normal
    inputs, ``outputs="trace"``: every implementation of ``widelimits.finite.empirical_ntk``
    (structured, jacobian, ntk_vector, auto) and neural-tangents 0.6.5 implementations 1
    (Jacobian contraction) and 3 (structured derivatives), jit, ``trace_axes=(-1,)``.
    Targets: ours(structured) / NT(impl 3) <= 2 and NT(impl 1) / ours(structured) >= 50.
(b) The same MLP with 10 outputs: traced and full (N, N, O, O) blocks, our structured and jacobian
    paths against NT impl 3 (``trace_axes=(-1,)`` and ``()``); NT impl 1 (40-115 s, up to 19 GB
    of memory) only with ``--nt-slow``.
(c) ``--resnet``: a CIFAR ResNet-18 (11.2M parameters, BatchNorm in eval mode) on 32 inputs
    3x32x32, traced over its 10 logits, every implementation, with the max relative difference
    to the structured result.  An implementation estimated (from a run on 8 inputs; ~N for
    jacobian, ~N^2 for ntk_vector) to take more than ``--max-s`` seconds per call is measured on
    8 inputs only, which the table says.

(d) ``--attention``: a 2-block ``nn.TransformerEncoder`` (d_model 64, 4 heads, feed-forward 2048,
    eval) on 200 sequences of 16 tokens, mean-pooled into ``nn.Linear(64, 1)``, traced: the
    structured, jacobian and auto implementations (``ntk_vector`` takes about 2 minutes here and
    is left out), on one torch thread, with auto's pick.

Contention mode (issue 14), ``--contention``: the MLP 3072-512-512-1 on 100, 400 and 1000 inputs
with ``threads=1`` and with the default settings, beside each competing load of
``bench/_load.py`` in turn (idle, one core taken, every core shared, a bursty multi-threaded
job), all in one run; the median of ``--repeats`` calls after a warm-up, one-thread and default
calls interleaved.  Targets (as the kernel's): under one-core and all-cores load the default
within 1.3x of one thread under the same load, under the bursty load within 2x; idle, the
default at least 1.7x faster than one thread where there is enough work (1000 inputs).
``--contention --monte-carlo``: the same for `monte_carlo_kernel` over 8 networks of that shape
(NNGP and NTK), whose samples run several at once.

Each of our measurements runs in a fresh process: one warm-up call on 2 inputs, one call whose
peak resident-set growth is recorded (VmHWM reset through /proc/self/clear_refs just before),
then ``--repeats`` timed calls; the best time is reported.  A call over 10 s is timed only once:
the memory call, which already follows the warm-up.
neural-tangents runs in its own environment (``.nt-venv``, see bench/README.md; skipped when
absent) through ``bench/nt_side.py empirical``: best of 3 jitted calls after compilation, and
its whole-process peak RSS (imports and compilation included, about 0.7 GB of it JAX/TF).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _load import KINDS, competing_load, describe_machine_load
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
NT_PYTHON = ROOT / ".nt-venv" / "bin" / "python"
IMPLS = ("structured", "jacobian", "ntk_vector", "auto")
SLOW_CALL_S = 10.0  # a call slower than this is timed once: the memory call itself
SCALING = {"jacobian": 1, "ntk_vector": 2}  # exponent of N in the cost of a call (ResNet)


# ----------------------------------------------------------------------------- models


def mlp(out: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3072, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, out)
    ).eval()


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stem, stages 64/128/256/512 of two BasicBlocks, GAP, Linear."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64))
        blocks, c_in = [], 64
        for i, c in enumerate((64, 128, 256, 512)):
            for j in range(2):
                blocks.append(BasicBlock(c_in, c, 2 if i > 0 and j == 0 else 1))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(torch.relu(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))


def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = ResNet18()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


class Encoder(nn.Module):
    """2-block transformer encoder (d_model 64, 4 heads), mean over tokens, Linear(64, 1)."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(64, 4, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(1))


def encoder() -> nn.Module:
    torch.manual_seed(0)
    return Encoder().eval()


CASES = {  # name: (model builder, input shape without N)
    "mlp1": (lambda: mlp(1), (3072,)),
    "mlp10": (lambda: mlp(10), (3072,)),
    "resnet": (resnet, (3, 32, 32)),
    "encoder": (encoder, (16, 64)),
}


def inputs(case: str, n: int) -> torch.Tensor:
    shape = CASES[case][1]
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- our side (child)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def child(case: str, impl: str, outputs: str, n: int, repeats: int, save: str | None) -> None:
    """Run in a fresh process: print peak extra memory and best time of one configuration."""
    from widelimits.finite import empirical_ntk

    if case == "encoder":
        torch.set_num_threads(1)
    model, x = CASES[case][0](), inputs(case, n)

    def call() -> torch.Tensor:
        return empirical_ntk(model, x, outputs=outputs, implementation=impl)

    empirical_ntk(model, x[:2], outputs=outputs, implementation=impl)  # load code paths
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    k = call()
    first = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    if save:
        torch.save(k, save)
    del k
    times = [first]  # the memory call is the warm-up of the timed calls
    timed = repeats if first < SLOW_CALL_S else 0  # a slow call is timed once, warm
    for _ in range(timed):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    report = {
        "picked": _picked(model, x, outputs) if impl == "auto" else impl,
        "best_s": min(times[1:]) if timed else first,
        "first_s": first,
        "repeats": timed,
        "extra_mib": (peak - before) / 1024,
        "peak_mib": peak / 1024,
    }
    print(json.dumps(report))


def _picked(model, x, outputs) -> str:
    """The implementation ``implementation="auto"`` takes (its rule, recorded on a call)."""
    import widelimits.finite.ntk as ntk

    picked, rule = [], ntk.choose_implementation
    ntk.choose_implementation = lambda *a: picked.append(rule(*a)) or picked[-1]
    try:
        ntk.empirical_ntk(model, x, outputs=outputs)
    finally:
        ntk.choose_implementation = rule
    return picked[0]


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


MONTE_CARLO_SAMPLES = 8


def contention(repeats: int, kinds: list[str], sizes: list[int], monte_carlo: bool) -> dict:
    """``threads=1`` against the default, beside each competing load in turn (one run): the
    empirical NTK of the MLP, or (``monte_carlo``) a Monte Carlo kernel over 8 networks of the
    same shape built from a widelimits description, NNGP and NTK."""
    import widelimits as wl
    from widelimits.finite import empirical_ntk, monte_carlo_kernel

    model = mlp(1)
    net = wl.Serial(wl.Dense(), wl.ReLU(), wl.Dense(), wl.ReLU(), wl.Dense(1))

    def compute(x: torch.Tensor, threads: int | None):
        if monte_carlo:
            return monte_carlo_kernel(net, x, n_samples=MONTE_CARLO_SAMPLES, width=512,
                                      threads=threads)  # fmt: skip
        return empirical_ntk(model, x, threads=threads)

    if monte_carlo:
        print(f"Monte Carlo NNGP + NTK over {MONTE_CARLO_SAMPLES} networks 3072-512-512-1 "
              "(widelimits description), float32, x2=None")  # fmt: skip
    else:
        print("empirical NTK (auto = structured) of the MLP 3072-512-512-1, float32, x2=None")
    print(f"torch {torch.__version__}, default {torch.get_num_threads()} threads; median of "
          f"{repeats} after a warm-up; {describe_machine_load()} before the run\n")  # fmt: skip
    print("load          n    one_t    default  def/1t  1t/def  target")
    rows = {}
    for kind in kinds:
        with competing_load(kind):
            for n in sizes:
                x = inputs("mlp1", n)
                one, default = [], []

                def one_thread(x=x):
                    return compute(x, 1)

                def default_settings(x=x):
                    return compute(x, None)

                one_thread(), default_settings()  # warm-up
                for _ in range(repeats):  # interleaved: a drifting load hits both alike
                    one.append(seconds(one_thread))
                    default.append(seconds(default_settings))
                t1, td = sorted(one)[repeats // 2], sorted(default)[repeats // 2]
                if kind == "idle":
                    target, ok = "1t/def >= 1.7", t1 / td >= 1.7
                else:
                    limit = 2.0 if kind == "bursty" else 1.3
                    target, ok = f"def/1t <= {limit}", td / t1 <= limit
                rows[f"{kind}_{n}"] = {"one_thread_s": t1, "default_s": td, "met": ok}
                print(f"{kind:10s}  {n:4d}  {t1:7.3f}  {td:9.3f}  {td / t1:6.2f}  {t1 / td:6.2f}"
                      f"  {target} {'met' if ok else 'MISSED'}", flush=True)  # fmt: skip
    print(f"\n{describe_machine_load()} after the run")
    print("def/1t: default time over one-thread time under the same load (< 1: the default is "
          "faster); 1t/def: its inverse, the speed-up of the default")  # fmt: skip
    return rows


def ours(case, impl, outputs, n, repeats, save=None) -> dict:
    cmd = [sys.executable, __file__, "--child", case, impl, outputs, str(n)]
    cmd += ["--repeats", str(repeats)] + (["--save", save] if save else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def nt(out: int, impl: int, full: bool = False) -> dict | None:
    if not NT_PYTHON.exists():
        return None
    cmd = [str(NT_PYTHON), str(ROOT / "bench" / "nt_side.py"), "empirical"]
    cmd += ["--out", str(out), "--impl", str(impl)] + (["--full"] if full else [])
    out_ = subprocess.run(cmd, capture_output=True, text=True)
    if out_.returncode:
        return {"error": out_.stderr.strip().splitlines()[-1] if out_.stderr else "failed"}
    return json.loads(out_.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- table


def row(label: str, r: dict | None, note: str = "") -> None:
    if r is None:
        print(f"  {label:34s}  skipped (no .nt-venv)")
    elif "error" in r:
        print(f"  {label:34s}  FAILED: {r['error']}")
    elif "peak_rss_mib" in r:  # neural-tangents
        print(
            f"  {label:34s}  {r['best_s']:9.3f}  {'-':>9s}  {r['peak_rss_mib']:8.0f}"
            f"  compile {r['compile_s']:.1f} s {note}"
        )
    else:
        print(
            f"  {label:34s}  {r['best_s']:9.3f}  {r['extra_mib']:9.0f}  {r['peak_mib']:8.0f}"
            f"  best of {max(r['repeats'], 1)}{note}"
        )


HEADER = f"  {'':34s}  {'time_s':>9s}  {'extra_MiB':>9s}  {'peak_MiB':>8s}"


def ratio(label: str, num: dict | None, den: dict | None, op: str, target: float) -> dict:
    if not num or not den or "error" in num or "error" in den:
        print(f"  {label}: -")
        return {"ratio": None, "target": f"{op} {target}", "met": None}
    value = num["best_s"] / den["best_s"]
    met = value <= target if op == "<=" else value >= target
    print(f"  {label}: {value:.2f}  (target {op} {target}: {'met' if met else 'NOT met'})")
    return {"ratio": value, "target": f"{op} {target}", "met": met}


def compact(r: dict | None) -> dict | None:
    if r is None or "error" in r:
        return r
    keep = ("picked", "best_s", "first_s", "compile_s", "repeats", "extra_mib", "peak_mib",
            "peak_rss_mib")  # fmt: skip
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items() if k in keep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resnet", action="store_true", help="also part (c), ResNet-18")
    parser.add_argument("--nt-slow", action="store_true", help="also NT impl 1 with 10 outputs")
    parser.add_argument("--no-nt", action="store_true", help="skip neural-tangents")
    parser.add_argument("--skip-mlp", action="store_true", help="only part (c)")
    parser.add_argument("--max-s", type=float, default=600.0, help="resnet: per-call limit")
    parser.add_argument("--attention", action="store_true", help="also part (d), an encoder")
    parser.add_argument("--contention", action="store_true",
                        help="one thread vs the default under competing loads")  # fmt: skip
    parser.add_argument("--monte-carlo", action="store_true",
                        help="contention: Monte Carlo kernels instead of one empirical NTK")
    parser.add_argument("--loads", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400, 1000])
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, impl, outputs, n = args.child
        return child(case, impl, outputs, int(n), args.repeats, args.save)
    if args.contention:
        rows = contention(args.repeats, args.loads, args.sizes, args.monte_carlo)
        print("\n" + json.dumps(rows))
        return None

    def nt_(out: int, impl: int, full: bool = False) -> dict | None:
        return None if args.no_nt else nt(out, impl, full)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32")
    print("time: best call; extra: peak RSS growth of one call; peak: whole-process peak RSS\n")
    summary: dict = {"repeats": args.repeats}
    if not args.skip_mlp:
        print("(a) MLP 3072-512-512-1, 100 inputs, traced")
        print(HEADER)
        a = {impl: ours("mlp1", impl, "trace", 100, args.repeats) for impl in IMPLS}
        for impl in IMPLS:
            row(f"widelimits {impl}", a[impl])
        a["nt1"], a["nt3"] = nt_(1, 1), nt_(1, 3)
        row("neural-tangents impl 1", a["nt1"])
        row("neural-tangents impl 3", a["nt3"])
        summary["mlp1"] = {k: compact(v) for k, v in a.items()}
        summary["mlp1_ratios"] = {
            "structured/nt3": ratio(
                "ours(structured) / NT(impl 3)", a["structured"], a["nt3"], "<=", 2
            ),
            "nt1/structured": ratio(
                "NT(impl 1) / ours(structured)", a["nt1"], a["structured"], ">=", 50
            ),
        }

        print("\n(b) MLP 3072-512-512-10, 100 inputs")
        print(HEADER)
        b = {}
        for outputs in ("trace", "full"):
            for impl in ("structured", "jacobian"):
                b[f"{impl}_{outputs}"] = r = ours("mlp10", impl, outputs, 100, args.repeats)
                row(f"widelimits {impl} {outputs}", r)
            b[f"nt3_{outputs}"] = r = nt_(10, 3, full=outputs == "full")
            row(f"neural-tangents impl 3 {outputs}", r)
            if args.nt_slow:
                b[f"nt1_{outputs}"] = r = nt_(10, 1, full=outputs == "full")
                row(f"neural-tangents impl 1 {outputs}", r)
        summary["mlp10"] = {k: compact(v) for k, v in b.items()}
        summary["mlp10_ratios"] = {
            f"structured/nt3_{o}": ratio(
                f"ours(structured) / NT(impl 3), {o}", b[f"structured_{o}"], b[f"nt3_{o}"], "<=", 2
            )
            for o in ("trace", "full")
        }
        if args.nt_slow:
            for o in ("trace", "full"):
                summary["mlp10_ratios"][f"nt1/structured_{o}"] = ratio(
                    f"NT(impl 1) / ours(structured), {o}",
                    b.get(f"nt1_{o}"),
                    b[f"structured_{o}"],
                    ">=",
                    50,
                )

    if args.resnet:
        print("\n(c) CIFAR ResNet-18 (eval), 32 inputs 3x32x32, traced over 10 logits")
        print(HEADER)
        c, diffs = {}, {}
        with tempfile.TemporaryDirectory() as tmp:
            ref_path = f"{tmp}/structured.pt"
            c["structured"] = ours("resnet", "structured", "trace", 32, args.repeats, ref_path)
            row("widelimits structured (n=32)", c["structured"])
            for impl in ("jacobian", "ntk_vector"):
                path = f"{tmp}/{impl}.pt"
                probe = ours("resnet", impl, "trace", 8, 0, path)
                n, r = 8, probe
                if "error" not in probe:
                    # per-example Jacobians cost ~N; N * O NTK-vector products on N: ~N^2
                    estimate = probe["first_s"] * 4 ** SCALING[impl]
                    if estimate <= args.max_s:
                        n, r = 32, ours("resnet", impl, "trace", 32, args.repeats, path)
                    else:
                        r = probe
                c[impl] = {**r, "n": n}
                note = ""
                if "error" not in r and "error" not in c["structured"]:
                    k, ref = torch.load(path), torch.load(ref_path)[:n, :n]
                    diffs[impl] = ((k - ref).abs().max() / ref.abs().max()).item()
                    note = f" max rel diff to structured {diffs[impl]:.1e}"
                    if n == 8:
                        note += f" (8 inputs only: est. {estimate:.0f} s on 32)"
                row(f"widelimits {impl} (n={n})", r, note)
        summary["resnet"] = {
            k: {**compact(v), "n": v.get("n", 32)} if "error" not in v else v for k, v in c.items()
        }
        summary["resnet_rel_diff"] = diffs

    if args.attention:
        print("\n(d) 2-block transformer encoder, 200 sequences of 16 x 64, traced, 1 thread")
        print(HEADER)
        d = {impl: ours("encoder", impl, "trace", 200, args.repeats)
             for impl in ("structured", "jacobian", "auto")}  # fmt: skip
        for impl, r in d.items():
            pick = f" (picked {r['picked']})" if impl == "auto" and "error" not in r else ""
            row(f"widelimits {impl}{pick}", r)
        summary["encoder"] = {k: compact(v) for k, v in d.items()}

    summary["parent_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\n" + json.dumps(summary))


if __name__ == "__main__":
    main()
