"""Bad inputs to the command line: `parse_architecture` (--arch) and `widelimits` itself.

Every bad input gives a `ValueError` (parser) or exit status 2 with one line on stderr that
names the option (CLI), never a traceback and never a hang.  The references are independent of
the code under test: layers built by hand in Python, `inspect.signature` of the layer classes,
and the sizes written into the input files' headers.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import widelimits as wl
from widelimits.cli import main
from widelimits.layers.spec import MAX_DEPTH, MAX_LENGTH, MAX_WORK, parse_architecture

# ----------------------------------------------------------------------------- the parser
GOOD = [
    ("Dense(512), ReLU(), Dense(1)", wl.Serial(wl.Dense(512), wl.ReLU(), wl.Dense(1))),
    ("Dense(W_std=1.5, b_std=0.1)", wl.Dense(W_std=1.5, b_std=0.1)),
    ("ReLU", wl.ReLU()),
    ("Dense(\n 3 ) ,  Erf() # a comment", wl.Serial(wl.Dense(3), wl.Erf())),
    ("LeakyReLU(-0.5)", wl.LeakyReLU(-0.5)),
    ("Conv(None, (3, 3), padding='circular'), ReLU(), GlobalAvgPool(), Dense(1)",
     wl.Serial(wl.Conv(None, (3, 3), padding="circular"), wl.ReLU(), wl.GlobalAvgPool(),
               wl.Dense(1))),
    ("Residual(Dense(), ReLU(), Dense()), Dense(1)",
     wl.Serial(wl.Residual(wl.Dense(), wl.ReLU(), wl.Dense()), wl.Dense(1))),
    ("FanOut(2), Parallel(Dense(), Dense(W_std=2.0)), FanInSum()",
     wl.Serial(wl.FanOut(2), wl.Parallel(wl.Dense(), wl.Dense(W_std=2.0)), wl.FanInSum())),
    ("Polynomial([1, -2.5, 3])", wl.Polynomial([1, -2.5, 3])),
    ("Myrtle(5)", wl.Myrtle(5)),
    ("Ｄｅｎｓｅ(2)", wl.Dense(2)),  # fullwidth letters: Python normalizes identifiers (NFKC)
]  # fmt: skip


@pytest.mark.parametrize("spec, expected", GOOD)
def test_good_architectures_build_the_network_written_in_python(spec, expected):
    assert repr(parse_architecture(spec)) == repr(expected)


# (text, what the message must say besides "--arch")
NASTY = [
    ("", "is empty"),
    ("   ", "is empty"),
    (",", "not a list of layers"),
    (",,,", "not a list of layers"),
    ("Dense(,)", "not a list of layers"),
    ("Dense(", "not a list of layers"),
    ("Dense())", "not a list of layers"),
    ("Dense() ReLU()", "not a list of layers"),
    ("\x00", "not a list of layers"),
    ("Dense()\x00", "not a list of layers"),
    ("Dense(W_std=1, W_std=2)", "'W_std' twice"),
    ("Dense() + ReLU()", "not a layer or a literal"),
    ("Dense(1 + 1)", "not a layer or a literal"),
    ("Dense(2 * 3)", "not a layer or a literal"),
    ("Dense(10 ** 10 ** 10)", "not a layer or a literal"),
    ("Dense()[0]", "not a layer or a literal"),
    ("Dense(1)[::-1]", "not a layer or a literal"),
    ("Dense().W_std", "not a layer or a literal"),
    ("torch.nn.ReLU()", "not a layer or a literal"),
    ("wl.Dense(1)", "not a layer or a literal"),
    ("__import__('os').system('true')", "not a layer or a literal"),
    ("Dense(), __import__('os').system('true')", "not a layer or a literal"),
    ("exec('1')", "not a layer or a literal"),
    ("Dense()()", "not a layer or a literal"),
    ("Dense(**{'out': 1})", "unpacks arguments"),
    ("Dense(*[1])", "unpacks arguments"),
    ("Dense(*())", "unpacks arguments"),
    ("lambda x: x", "not a layer or a literal"),
    ("Elementwise(lambda x: x)", "not a layer or a literal"),
    ("[Dense() for _ in range(3)]", "not a layer or a literal"),
    ("(Dense() for _ in range(3))", "not a layer or a literal"),
    ("{Dense()}", "not a layer or a literal"),
    ("{'a': Dense()}", "not a layer or a literal"),
    ("f'{Dense()}'", "not a layer or a literal"),
    ("(x := Dense())", "not a layer or a literal"),
    ("Dense() if True else ReLU()", "not a layer or a literal"),
    ("not Dense()", "not a layer or a literal"),
    ("Dense(-True)", "sign goes only before a number"),
    ("Dense(--1)", "sign goes only before a number"),
    ("Dense(1j)", "not a layer or a literal"),
    ("Dense(b'1')", "not a layer or a literal"),
    ("Dense(...)", "not a layer or a literal"),
    ("Dense(1e400)", "1e400 is not a finite number"),
    ("Dense(W_std=-1e999)", "1e999 is not a finite number"),
    ("Dense(99999999999999999999999)", "too large"),
    ("Dense(" + "9" * 5000 + ")", "not a list of layers"),  # past Python's 4300 digits
    ("Dense('" + "x" * 9000 + "')", "Dense"),  # a long string, refused by Dense
    ("x" * (MAX_LENGTH + 1), f"more than the {MAX_LENGTH} allowed"),
    ("(" * 1000 + ")" * 1000, f"more than {MAX_DEPTH} deep"),
    ("Serial(" * 40 + "Dense()" + ")" * 40, f"more than {MAX_DEPTH} deep"),
    ("Dense(" + "-" * 5000 + "1)", f"more than {MAX_DEPTH} deep"),
    ("Dense(" + "1+" * 3000 + "1)", f"more than {MAX_DEPTH} deep"),
    ("Dense(" + "not " * 2000 + "1)", f"more than {MAX_DEPTH} deep"),
    ("Bogus()", "'Bogus' is not a layer or a literal"),
    ("Dence(1)", "did you mean Dense"),
    ("relu", "did you mean ReLU"),
    ("Layer()", "'Layer' is not a layer"),
    ("Activation()", "'Activation' is not a layer"),
    ("None", "item 1 (None) is not a layer"),
    ("Dense(), 1", "item 2 (1) is not a layer"),
    ("Dense(), 'ReLU'", "item 2 ('ReLU') is not a layer"),
    ("Dense(), (ReLU(), Dense())", "is not a layer"),
    ("Dense(foo=1)", "Dense has no argument 'foo'"),
    ("Dense(1, 2, 3, 4, 5, 6, 7)", "too many positional arguments"),
    ("FanOut()", "missing a required argument: 'n'"),
    ("Dense('x')", "Dense: Dense(out=...)"),
    ("Dense(-1)", "Dense: "),
    ("Dense(True)", "Dense: "),
    ("Dense(W_std=-1)", "Dense: "),
    ("FanOut(0)", "FanOut: "),
    ("FanOut(2.5)", "FanOut: "),
    ("Serial('x')", "Serial: "),
    ("Myrtle(3)", "Myrtle: "),
    ("GELU(approximate=True)", "GELU: "),
    # sizes that made the kernel loop for hours: refused by the parser's work limit (or by
    # the layer itself, whose message then names it)
    ("Conv(None, 1000000000)", "Conv"),
    ("Conv(None, (3, 1000000000))", "Conv"),
    ("AvgPool(1000000000)", "AvgPool"),
    ("FanOut(100000000), FanInSum()", "FanOut"),
    ("Dense(), FanOut(4000), FanInProd()", "FanOut"),
    ("Monomial(1000000)", "Monomial"),
    ("Hermite(100000)", "Hermite"),
    ("Dense(), " * 1200 + "Dense()", "characters"),
]


@pytest.mark.parametrize("spec, fragment", NASTY, ids=[f"nasty{i}" for i in range(len(NASTY))])
def test_nasty_architectures_raise_value_errors_that_say_what_is_wrong(spec, fragment):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="--arch") as info:
        parse_architecture(spec)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 1500  # one readable line
    assert time.perf_counter() - start < 2.0


def test_the_work_limit_is_stated_and_reached_exactly():
    """Cost = squared branch counts + windows per axis: 64^2 = 4096 passes, one more not."""
    assert MAX_WORK == 64**2
    assert isinstance(parse_architecture("FanOut(64), FanInSum()"), wl.Serial)
    with pytest.raises(ValueError, match=f"costs 4097 .* more than the {MAX_WORK} allowed"):
        parse_architecture("FanOut(64), FanInSum(), Conv(None, 1)")
    with pytest.raises(ValueError, match=r"costs 4102 .*the largest is FanOut\(n=64\)"):
        parse_architecture("FanOut(64), FanInSum(), Conv(None, (3, 3))")


LAYER_NAMES = sorted(
    name for name in wl.layers.__all__
    if name not in ("Layer", "BuildContext", "SpatialFeatures", "Activation")
)  # fmt: skip


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_an_unknown_keyword_lists_the_layers_arguments(name):
    layer = getattr(wl.layers, name)
    target = getattr(layer, "keywords_from", None)  # **kwargs forwarded to that class
    params = [
        "*" * (p.kind is p.VAR_POSITIONAL) + p.name
        for p in inspect.signature(layer).parameters.values()
        if target is None or p.kind is not p.VAR_KEYWORD
    ] + ([] if target is None else list(inspect.signature(target).parameters))
    with pytest.raises(ValueError, match=f"--arch .*{name} has no argument 'bogus'") as info:
        parse_architecture(f"{name}(bogus=1)")
    listed = str(info.value).split("its arguments are ")[1].split(":")[0]
    assert listed.split(", ") == (params or ["none"])


def test_parse_architecture_names_the_option_it_is_given():
    with pytest.raises(ValueError, match="^--network 'Dense"):
        parse_architecture("Dense(foo=1)", name="--network")
    with pytest.raises(TypeError, match="must be a string"):
        parse_architecture(None)


# Random text from the tokens of layer descriptions and of everything else Python has.
TOKENS = [
    "Dense", "ReLU", "Conv", "FanOut", "FanInSum", "FanInProd", "Parallel", "Serial", "Residual",
    "AvgPool", "GlobalAvgPool", "Erf", "Monomial", "Polynomial", "Myrtle", "Bogus", "torch",
    "lambda", "x", "_", "None", "True", "not", "if", "else", "for", "in", "await", "yield",
    "0", "1", "-1", "3", "2.5", "1e400", "1000000000", "99999999999999999999999", "0x10", "1j",
    "'same'", "'circular'", "'x'", "f'{1}'", "b'1'", "...",
    "+", "-", "*", "**", "/", "@", ".", ":", ":=", "=", "==", "~", "<<", "|",
    "(", ")", "(", ")", "[", "]", "{", "}", ",", ",", " ", "\n", "#",
    "out=", "W_std=", "b_std=", "kernel_size=", "padding=", "n=", "degree=", "foo=",
]  # fmt: skip


def _parse_bounded(spec: str) -> None:
    start = time.perf_counter()
    try:
        net = parse_architecture(spec)
    except ValueError as err:
        assert str(err).startswith("--arch ")
    else:
        assert isinstance(net, wl.Layer)
    assert time.perf_counter() - start < 2.0


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(st.lists(st.sampled_from(TOKENS), max_size=30))
def test_fuzz_token_soup_gives_a_layer_or_a_value_error(tokens):
    _parse_bounded("".join(tokens))


def _calls():
    """Well-formed calls of layers (known or not) with literal or nested arguments."""
    names = st.sampled_from(TOKENS[:16])
    literals = st.one_of(
        st.integers(-10, 10**10).map(str), st.floats(allow_nan=False).map(repr),
        st.sampled_from(["None", "True", "'same'", "'valid'", "(3, 3)", "[1, 2]", "inf"]),
    )  # fmt: skip

    def call(args):
        return st.tuples(names, args, st.sampled_from(["", "out=", "n=", "W_std=", "bogus="]))

    return st.recursive(
        literals,
        lambda inner: call(st.lists(inner, max_size=3)).map(
            lambda t: f"{t[0]}({t[2] if t[1] and t[2] else ''}{', '.join(t[1])})"
        ),
        max_leaves=12,
    )


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(_calls(), min_size=1, max_size=4))
def test_fuzz_layer_calls_give_a_layer_or_a_value_error(items):
    _parse_bounded(", ".join(items))


# ------------------------------------------------------------------------------------ CLI
def _fake_npy(path, shape, dtype="<f4"):
    """A .npy file of ``shape`` that takes no disk space (sparse: the checks read headers)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": dtype, "fortran_order": False, "shape": shape}
        )
        f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    np.save(tmp / "x.npy", rng.standard_normal((6, 4)))
    np.save(tmp / "img.npy", rng.standard_normal((3, 2, 5, 5)))
    np.save(tmp / "y.npy", np.arange(6) % 2)
    np.save(tmp / "strings.npy", np.array(["a", "b"]))
    np.save(tmp / "complex.npy", np.zeros((6, 4), complex))
    np.save(tmp / "objects.npy", np.array([{}], dtype=object), allow_pickle=True)
    np.savez(tmp / "two.npz", a=np.zeros((6, 4)), b=np.ones((6, 4)))
    (tmp / "empty.npy").write_bytes(b"")
    with zipfile.ZipFile(tmp / "junk.npz", "w") as z:
        z.writestr("a.npy", b"\x93NUMPY garbage")
    (tmp / "text.npy").write_text("1, 2, 3\n")
    (tmp / "folder.npy").mkdir()
    _fake_npy(tmp / "huge_images.npy", (2, 1, 2048, 2048))
    _fake_npy(tmp / "many.npy", (10**8, 3))
    _fake_npy(tmp / "truncated.npy", (6, 3)).write_bytes((tmp / "truncated.npy").read_bytes()[:-9])
    return tmp


def _compute(t, arch="Dense(), ReLU(), Dense(1)", data="x.npy", *more):
    return ["kernel", "compute", "--arch", arch, "--data", str(t / data), "--out",
            str(t / "k.zarr"), "--no-progress", *more]  # fmt: skip


def _solve(t, *more):
    return ["kernel", "solve", "--arch", "Dense(), ReLU(), Dense(1)", "--data", str(t / "x.npy"),
            "--targets", str(t / "y.npy"), "--no-progress", *more]  # fmt: skip


def _arch(spec):
    return lambda t: _compute(t, spec, "img.npy")


# (argv from the files' folder, the option the message must name, more it must say)
CLI_CASES = [
    (lambda t: _compute(t, data="missing.npy"), "--data", "no such file"),
    (lambda t: _compute(t, data="folder.npy"), "--data", "not a file"),
    (lambda t: _compute(t, data="empty.npy"), "--data", "not a readable"),
    (lambda t: _compute(t, data="text.npy"), "--data", "not a readable"),
    (lambda t: _compute(t, data="objects.npy"), "--data", "dtype object"),
    (lambda t: _compute(t, data="strings.npy"), "--data", "inputs must be numbers"),
    (lambda t: _compute(t, data="complex.npy"), "--data", "complex numbers"),
    (lambda t: _compute(t, data="two.npz"), "--key", "'a', 'b'"),
    (lambda t: _compute(t, "Dense()", "two.npz", "--key", "zz"), "--key 'zz'", "'a', 'b'"),
    (lambda t: _compute(t, "Dense()", "x.npy", "--data2", str(t / "strings.npy")), "--data2",
     "numbers"),
    (lambda t: [*_compute(t)[:-2], str(t / "x.npy"), "--no-progress"], "--out", "is a file"),
    (lambda t: _compute(t, "Dense(", "x.npy"), "--arch", "not a list of layers"),
    (_arch("Dense() + 1"), "--arch", "not a layer or a literal"),
    (_arch("Dense()[0]"), "--arch", "not a layer or a literal"),
    (_arch("Dense(**{'a': 1})"), "--arch", "unpacks arguments"),
    (_arch("(" * 300 + ")" * 300), "--arch", "deep"),
    (_arch("Dense(foo=1)"), "--arch", "out, W_std, b_std, parametrization, trainable"),
    (_arch("Conv(None, 1000000000), ReLU(), GlobalAvgPool(), Dense(1)"), "--arch", "Conv"),
    (_arch("FanOut(100000000), FanInSum(), Dense(1)"), "--arch", "FanOut"),
    (lambda t: _compute(t, "Conv(None, 3), GlobalAvgPool(), Dense(1)", "huge_images.npy"),
     "--arch", "one pair of examples needs"),
    (lambda t: _compute(t, "Dense(), Dense(1)", "many.npy"), "--out", "on disk"),
    (lambda t: _compute(t, "Dense()", "x.npy", "--get", "bogus"), "--get", "invalid choice"),
    (lambda t: _compute(t, "Dense()", "x.npy", "--tile", "big"), "--tile", "invalid int"),
    (lambda t: _compute(t, "Dense()", "x.npy", "--dtype", "float16"), "--dtype", "invalid"),
    (lambda t: _compute(t, "Dense()", "x.npy", "--tile", str(10**9)), "--tile", "GiB of memory"),
    (lambda t: _compute(t, "Dense()", "x.npy", "--workers", "0"), "--workers", "at least 1"),
    (lambda t: _solve(t, "--tol", "nan"), "--tol", "positive finite"),
    (lambda t: _solve(t, "--tol", "-1"), "--tol", "positive finite"),
    (lambda t: _solve(t, "--max-iter", "0"), "--max-iter", "at least 1"),
    (lambda t: _solve(t, "--targets", str(t / "strings.npy")), "--targets", "2 rows"),
    (lambda t: _solve(t, "--test-data", str(t / "x.npy"), "--test-targets",
                      str(t / "strings.npy")), "--test-targets", "6 examples"),  # fmt: skip
    (lambda t: _solve(t, "--targets", str(t / "missing.npy")), "--targets", "no such file"),
    (lambda t: _solve(t, "--targets", str(t / "truncated.npy")), "--targets", "truncated"),
    (lambda t: _compute(t, data="junk.npz"), "--data", "not a readable"),
    (lambda t: _solve(t, "--targets", str(t / "empty.npy")), "--targets", "not a readable"),
    (lambda t: _solve(t, "--test-data", str(t / "x.npy"), "--test-targets",
                      str(t / "nope.npy")), "--test-targets", "no such file"),  # fmt: skip
    (lambda t: _solve(t, "--test-data", str(t / "strings.npy")), "--test-data", "numbers"),
    (lambda t: ["kernel", "solve", "--store", str(t / "x.npy"), "--targets", str(t / "y.npy")],
     "--store", "is a file"),
    (lambda t: ["kernel", "solve", "--store", str(t / "k.zarr"), "--cross", str(t / "x.npy"),
                "--targets", str(t / "y.npy")], "--cross", "is a file"),  # fmt: skip
    (lambda t: _solve(t, "--preconditioner", "magic"), "--preconditioner", "invalid choice"),
    (lambda t: _solve(t, "--rank", "1.5"), "--rank", "invalid int"),
    (lambda t: ["linear", "--widths", "64", str(10**11), "--out", str(t / "lin")], "--widths",
     "GiB of memory"),
    (lambda t: ["linear", "--d", str(10**11), "--out", str(t / "lin")], "--d", "GiB of memory"),
    (lambda t: ["linear", "--quick", "--out", str(t / "x.npy")], "--out", "not a folder"),
    (lambda t: ["linear", "--widths", "64", "1e3"], "--widths", "whole number"),
    (lambda t: ["limits", "sweep", "--widths", str(10**11), "--out", str(t / "sw")], "--widths",
     "GiB of memory"),
    (lambda t: ["limits", "sweep", "--limit-particles", str(10**12), "--out", str(t / "sw")],
     "--limit-particles", "GiB of memory"),
    (lambda t: ["limits", "sweep", "--scalings", "bogus"], "--scalings", "invalid choice"),
    (lambda t: ["limits", "plane", "--out", str(t / "x.npy")], "--out", "not a folder"),
    (lambda t: ["demo", "--threads", "0"], "--threads", "at least 1"),
    (lambda t: ["demo", "--out", str(t / "x.npy")], "--out", "not a folder"),
    (lambda t: ["demo", "--seed", "x"], "--seed", "invalid int"),
    (lambda t: ["bogus"], "COMMAND", "invalid choice"),
]  # fmt: skip


def _main_status(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return exc.code


@pytest.mark.parametrize("make_argv, option, fragment", CLI_CASES,
                         ids=[f"cli{i}" for i in range(len(CLI_CASES))])  # fmt: skip
def test_cli_bad_inputs_exit_2_with_one_line_naming_the_option(
    make_argv, option, fragment, files, capsys
):
    argv = make_argv(files)
    start = time.perf_counter()
    assert _main_status(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err
    assert option in lines[0] and fragment in lines[0]
    assert time.perf_counter() - start < 20
    assert not (files / "k.zarr").exists()  # refused before any store was made


def test_genuine_bugs_keep_their_traceback(monkeypatch, files):
    """Only user errors become one line; anything else (a bug) propagates, and --traceback
    shows user errors' tracebacks too."""
    import widelimits.scale.cli as scale_cli

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(scale_cli, "_run_compute", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(_compute(files))
    with pytest.raises(ValueError, match="--arch"):
        main(["--traceback", *_compute(files, "Dense(foo=1)")])


@pytest.mark.parametrize("arch", ["Conv(None, 1000000000), ReLU(), GlobalAvgPool(), Dense(1)",
                                  "FanOut(100000000), FanInSum(), Dense(1)"])  # fmt: skip
def test_huge_sizes_end_quickly_in_a_fresh_process(arch, files):
    """The two architectures that used to hang: a separate process that must end in 30 s."""
    argv = [sys.executable, "-m", "widelimits.cli", *_compute(files, arch, "img.npy")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.startswith("widelimits: error: --arch") and "Traceback" not in proc.stderr
