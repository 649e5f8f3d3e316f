"""Bad or unusual inputs to ``net.kernel`` and to Dense / LayerNorm / Dropout: each one either
works and gives the right answer (checked against an independent computation), or raises an
error of the right type whose message names the offending argument."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse
import torch

import widelimits as wl
from widelimits.layers._fused import fused


def fc_net():
    return wl.Serial(wl.Dense(W_std=1.4, b_std=0.1), wl.ReLU(), wl.Dense(1))


def conv_net():
    return wl.Serial(wl.Conv(None, 3), wl.ReLU(), wl.GlobalAvgPool(), wl.Dense(1))


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def with_value(x: torch.Tensor, index, value) -> torch.Tensor:
    x = x.clone()
    x[index] = value
    return x


# --- inputs: (x1, x2) -> (error type, pattern naming the argument) ----------------------------

X = randn(4, 5)
BAD_INPUTS = {
    "nan_x1": (with_value(X, (1, 2), float("nan")), None, ValueError, "x1 contains 1 NaN"),
    "inf_x1": (with_value(X, (0, 0), float("inf")), None, ValueError, "x1 contains 1 NaN or inf"),
    "neg_inf_x2": (X, with_value(X, (3, 4), -float("inf")), ValueError, "x2 contains 1 NaN"),
    "nan_everywhere": (torch.full((2, 3), float("nan")), None, ValueError, "x1 contains 6"),
    "nan_image": (
        with_value(randn(2, 3, 4, 4), (0, 1, 2, 3), float("nan")),
        None,
        ValueError,
        "x1 contains",
    ),
    "huge_but_finite_sum_overflows": (
        torch.full((2, 3), 1e308, dtype=torch.float64),
        None,
        FloatingPointError,
        "non-finite",
    ),
    "1d_x1": (randn(5), None, ValueError, "x1 must have shape"),
    "0d_x1": (torch.tensor(1.0), None, ValueError, "x1 must have shape"),
    "1d_x2": (X, randn(5), ValueError, "x2 must have shape"),
    "int64_x1": (torch.ones(3, 4, dtype=torch.int64), None, TypeError, "x1 has dtype torch.int64"),
    "int32_x2": (X, torch.ones(3, 5, dtype=torch.int32), TypeError, "x2 has dtype torch.int32"),
    "bool_x1": (torch.ones(3, 4, dtype=torch.bool), None, TypeError, "x1 has dtype torch.bool"),
    "uint8_x1": (torch.ones(3, 4, dtype=torch.uint8), None, TypeError, "x1 has dtype"),
    "complex_x1": (torch.ones(3, 4, dtype=torch.complex64), None, TypeError, "x1 has dtype"),
    "float16_x1": (X.half(), None, TypeError, "x1 has dtype torch.float16"),
    "bfloat16_x2": (X, X.bfloat16(), TypeError, "x2 has dtype torch.bfloat16"),
    "empty_x1": (torch.zeros(0, 5), None, ValueError, "x1 is an empty batch"),
    "empty_x2": (X, torch.zeros(0, 5, dtype=torch.float64), ValueError, "x2 is an empty batch"),
    "zero_features": (torch.zeros(3, 0), None, ValueError, "x1 has zero features"),
    "zero_pixels": (torch.zeros(3, 2, 0, 4), None, ValueError, "x1 has zero features"),
    "zero_features_x2": (X, torch.zeros(3, 0), ValueError, "x2 has zero features"),
    "features_mismatch": (X, randn(3, 6), ValueError, "x2 examples"),
    "features_mismatch_reversed": (randn(3, 6), X, ValueError, "x2 examples"),
    "image_vs_flat": (X, randn(3, 5, 2, 2), ValueError, "x2 examples"),
    "image_size_mismatch": (randn(2, 3, 4, 4), randn(2, 3, 4, 5), ValueError, "x2 examples"),
    "channel_mismatch": (randn(2, 3, 4, 4), randn(2, 2, 4, 4), ValueError, "x2 examples"),
    "meta_x1": (torch.empty(3, 5, device="meta"), None, ValueError, "x1 is on the meta device"),
    "meta_x2": (X, torch.empty(3, 5, device="meta"), ValueError, "x2 is on the meta device"),
    "sparse_coo_x1": (X.to_sparse(), None, TypeError, r"x1.to_dense\(\)"),
    "sparse_csr_x2": (X, X.to_sparse_csr(), TypeError, r"x2.to_dense\(\)"),
    "scipy_sparse_x1": (scipy.sparse.csr_matrix(X.numpy()), None, TypeError, r"x1.toarray\(\)"),
    "scipy_sparse_x2": (X, scipy.sparse.coo_matrix(X.numpy()), TypeError, r"x2.toarray\(\)"),
    "string_x1": ("abc", None, TypeError, "x1"),
    "none_x1": (None, None, TypeError, "x1"),
    "dict_x1": ({"a": 1}, None, TypeError, "x1"),
    "list_of_strings_x2": (X, [["a", "b"]], TypeError, "x2"),
    "ragged_list_x1": ([[1.0, 2.0], [3.0]], None, TypeError, "x1"),
    "numpy_int_x1": (np.ones((3, 4), dtype=np.int64), None, TypeError, "x1 has dtype"),
    "numpy_object_x1": (np.array([[object()]]), None, TypeError, "x1"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_inputs(case):
    x1, x2, error, match = BAD_INPUTS[case]
    net = conv_net() if torch.is_tensor(x1) and x1.ndim == 4 and x1.shape[2] > 0 else fc_net()
    with pytest.raises(error, match=match):
        net.kernel(x1, x2)


@pytest.mark.parametrize("get", ["nngp", ("nngp", "ntk")])
def test_bad_input_also_with_diagonal_and_single_get(get):
    with pytest.raises(ValueError, match="x1 contains"):
        fc_net().kernel(with_value(X, (0, 0), float("nan")), get=get, diagonal=True)


# --- options: (keyword arguments) -> (error type, argument named) ------------------------------

BAD_OPTIONS = {
    "get_typo": ({"get": "nngpp"}, ValueError, "get"),
    "get_none": ({"get": None}, TypeError, "get"),
    "get_int": ({"get": 5}, TypeError, "get"),
    "get_empty": ({"get": ()}, ValueError, "get"),
    "get_one_unknown": ({"get": ("nngp", "cov")}, ValueError, "get"),
    "get_not_strings": ({"get": (1, 2)}, ValueError, "get"),
    "diagonal_string": ({"diagonal": "yes"}, TypeError, "diagonal"),
    "diagonal_int": ({"diagonal": 1}, TypeError, "diagonal"),
    "progress_string": ({"progress": "yes"}, TypeError, "progress"),
    "tile_zero": ({"tile_size": 0}, ValueError, "tile_size"),
    "tile_negative": ({"tile_size": -3}, ValueError, "tile_size"),
    "tile_float": ({"tile_size": 2.5}, TypeError, "tile_size"),
    "tile_string": ({"tile_size": "8"}, TypeError, "tile_size"),
    "tile_bool": ({"tile_size": True}, TypeError, "tile_size"),
    "budget_zero": ({"memory_budget": 0}, ValueError, "memory_budget"),
    "budget_negative": ({"memory_budget": -1}, ValueError, "memory_budget"),
    "budget_float": ({"memory_budget": 1e9}, TypeError, "memory_budget"),
    "budget_string": ({"memory_budget": "1GB"}, TypeError, "memory_budget"),
    "budget_nan": ({"memory_budget": float("nan")}, TypeError, "memory_budget"),
    "budget_too_small": ({"memory_budget": 100}, MemoryError, "memory_budget"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS, ids=list(BAD_OPTIONS))
def test_bad_options(case):
    options, error, match = BAD_OPTIONS[case]
    with pytest.raises(error, match=match):
        fc_net().kernel(X, **options)


def test_diagonal_with_x2_names_x2():
    with pytest.raises(ValueError, match="x2=None"):
        fc_net().kernel(X, X, diagonal=True)


@pytest.mark.parametrize("get", [["ntk"], ("ntk", "ntk"), {"ntk"}])
def test_get_as_list_or_set_works(get):
    k = fc_net().kernel(X, get=get)
    torch.testing.assert_close(k.ntk, fc_net().kernel(X).ntk, rtol=0, atol=0)
    assert k.nngp is None


@pytest.mark.parametrize("budget", [np.int64(2**20), 2**20])
def test_integer_budget_types_work(budget):
    torch.testing.assert_close(fc_net().kernel(X, memory_budget=budget).ntk, fc_net().kernel(X).ntk)


# --- unusual but valid inputs: same result as the plain tensor ---------------------------------


def _reference(x1, x2=None):
    net = fc_net()
    return net.kernel(x1.contiguous(), None if x2 is None else x2.contiguous())


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x[:, ::2],  # strided columns
        lambda x: x.T.contiguous().T,  # column-major storage
        lambda x: x.flip(0),  # reversed rows (a copy)
        lambda x: x[:1].expand(4, x.shape[1]),  # stride-0 rows: four equal examples
        lambda x: torch.as_strided(x, (2, 3), (5, 1)),  # arbitrary strides into storage
    ],
    ids=["strided", "column_major", "flipped", "expanded", "as_strided"],
)
def test_non_contiguous_views_match_contiguous(make):
    x = make(X)
    k = fc_net().kernel(x)
    ref = _reference(x)
    torch.testing.assert_close(k.ntk, ref.ntk, rtol=1e-13, atol=0)
    other = X[:, : x.shape[1]]
    torch.testing.assert_close(
        fc_net().kernel(x, other).ntk, _reference(x, other).ntk, rtol=1e-13, atol=0
    )


def test_channels_last_memory_format_is_the_same_image():
    x = randn(3, 2, 5, 5)
    k = conv_net().kernel(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(k.ntk, conv_net().kernel(x).ntk, rtol=1e-13, atol=0)


@pytest.mark.parametrize("kind", ["numpy", "list", "numpy_float32"])
def test_array_likes_are_accepted(kind):
    x = {"numpy": X.numpy(), "list": X.tolist(), "numpy_float32": X.float().numpy()}[kind]
    k = fc_net().kernel(x)
    dtype = torch.float32 if kind == "numpy_float32" else torch.float64
    assert isinstance(k.ntk, torch.Tensor) and k.ntk.dtype == dtype
    torch.testing.assert_close(k.ntk, fc_net().kernel(X.to(dtype)).ntk, rtol=0, atol=0)


def test_mixed_dtypes_promote_to_float64():
    k = fc_net().kernel(X.float(), X)
    assert k.ntk.dtype == torch.float64
    torch.testing.assert_close(k.ntk, fc_net().kernel(X.float().double(), X).ntk, rtol=0, atol=0)


@pytest.mark.parametrize("act", [wl.Erf, wl.GELU])
def test_requires_grad_inputs_give_correct_gradients_at_the_same_point(act):
    # x2 repeats a row of x1: that pair starts from the variances, (var_a + var_b) / 2; its
    # gradient must still split between x1 and x2 as for the product x1_i . x2_j (finite
    # differences are the independent check; the kernel is smooth there for these activations).
    net = wl.Serial(wl.Dense(W_std=1.3, b_std=0.2), act(), wl.Dense(1))
    x1 = randn(3, 4).requires_grad_()
    x2 = torch.cat([randn(2, 4, seed=1), x1.detach()[1:2]]).requires_grad_()

    def f(a, b):
        return net.kernel(a, b).ntk

    assert torch.autograd.gradcheck(f, (x1, x2), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda a: net.kernel(a).nngp, (x1,), eps=1e-6, atol=1e-6)


def test_requires_grad_result_matches_no_grad():
    x = X.clone().requires_grad_()
    k = fc_net().kernel(x)
    assert k.ntk.requires_grad
    with fused(False):  # the graph is recorded on the eager path: compare the same maps
        reference = fc_net().kernel(X).ntk
    torch.testing.assert_close(k.ntk.detach(), reference, rtol=0, atol=0)


# --- layout ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "name", "perm"),
    [
        ((2, 28, 28, 1), "x1", r"x1.permute\(0, 3, 1, 2\)"),
        ((2, 32, 32, 3), "x1", r"x1.permute\(0, 3, 1, 2\)"),
        ((2, 16, 16, 4), "x1", r"x1.permute\(0, 3, 1, 2\)"),
        ((2, 50, 3), "x1", r"x1.permute\(0, 2, 1\)"),
    ],
)
def test_channels_last_shapes_warn(shape, name, perm):
    x = randn(*shape)
    net = wl.Serial(wl.Conv(None, 3), wl.ReLU(), wl.Flatten(), wl.Dense(1))
    with pytest.warns(wl.LayoutWarning, match="looks like channels-last") as record:
        net.kernel(x, get="nngp")
    assert any(perm.replace("\\", "") in str(w.message) for w in record)
    assert record[0].filename == __file__  # points at the caller's line


def test_channels_last_x2_names_x2():
    net = wl.Serial(wl.Conv(None, 3), wl.ReLU(), wl.Flatten(), wl.Dense(1))
    x = randn(2, 32, 32, 3)
    with pytest.warns(wl.LayoutWarning) as record:
        net.kernel(x, x[:1], get="nngp")
    messages = [str(w.message) for w in record]
    assert any(m.startswith("x1 of shape (2, 32, 32, 3)") for m in messages)
    assert any(m.startswith("x2 of shape (1, 32, 32, 3)") for m in messages)


@pytest.mark.parametrize(
    "shape", [(2, 3, 32, 32), (2, 1, 28, 28), (2, 4, 8, 8), (2, 4, 4, 3), (2, 3, 100), (2, 5)]
)
def test_channels_first_shapes_do_not_warn(shape):
    x = randn(*shape)
    conv = wl.Serial(wl.Conv(None, 3), wl.ReLU(), wl.Flatten(), wl.Dense(1))
    net = fc_net() if len(shape) == 2 else conv
    with warnings.catch_warnings():
        warnings.simplefilter("error", wl.LayoutWarning)
        net.kernel(x, get="nngp")


def test_channels_last_warning_is_right_about_the_error():
    # The warning is worth its noise: read as NCHW, an NHWC batch gives a different kernel.
    net = wl.Serial(wl.Conv(None, 3), wl.ReLU(), wl.GlobalAvgPool(), wl.Dense(1))
    nchw = randn(3, 3, 12, 12)
    with pytest.warns(wl.LayoutWarning):
        wrong = net.kernel(nchw.permute(0, 2, 3, 1), get="nngp")
    right = net.kernel(nchw, get="nngp")
    assert (wrong - right).abs().max() > 1e-3 * right.abs().max()


# --- layer arguments ---------------------------------------------------------------------------

BAD_LAYERS = {
    "dense_W_std_string": (lambda: wl.Dense(W_std="1.5"), TypeError, r"Dense\(W_std=...\)"),
    "dense_W_std_none": (lambda: wl.Dense(W_std=None), TypeError, "W_std"),
    "dense_W_std_bool": (lambda: wl.Dense(W_std=True), TypeError, "W_std"),
    "dense_W_std_list": (lambda: wl.Dense(W_std=[1.0]), TypeError, "W_std"),
    "dense_W_std_complex": (lambda: wl.Dense(W_std=1 + 2j), TypeError, "W_std"),
    "dense_W_std_vector": (
        lambda: wl.Dense(W_std=torch.tensor([1.0, 2.0])),
        ValueError,
        r"W_std.*shape \(2,\)",
    ),
    "dense_W_std_one_element_vector": (
        lambda: wl.Dense(W_std=torch.tensor([1.5])),
        ValueError,
        "W_std",
    ),
    "dense_W_std_int_tensor": (lambda: wl.Dense(W_std=torch.tensor(2)), TypeError, "W_std"),
    "dense_W_std_complex_tensor": (
        lambda: wl.Dense(W_std=torch.tensor(1 + 1j)),
        TypeError,
        "W_std",
    ),
    "dense_W_std_nan": (lambda: wl.Dense(W_std=float("nan")), ValueError, "W_std"),
    "dense_W_std_inf": (lambda: wl.Dense(W_std=float("inf")), ValueError, "W_std"),
    "dense_W_std_negative": (lambda: wl.Dense(W_std=-0.5), ValueError, "W_std"),
    "dense_W_std_negative_tensor": (
        lambda: wl.Dense(W_std=torch.tensor(-1.0)),
        ValueError,
        "W_std",
    ),
    "dense_W_std_nan_tensor": (
        lambda: wl.Dense(W_std=torch.tensor(float("nan"))),
        ValueError,
        "W_std",
    ),
    "dense_b_std_string": (lambda: wl.Dense(b_std="0.1"), TypeError, "b_std"),
    "dense_b_std_negative": (lambda: wl.Dense(b_std=-0.1), ValueError, "b_std"),
    "dense_b_std_inf": (lambda: wl.Dense(b_std=float("inf")), ValueError, "b_std"),
    "dense_b_std_vector": (lambda: wl.Dense(b_std=torch.ones(3)), ValueError, "b_std"),
    "dense_out_zero": (lambda: wl.Dense(out=0), ValueError, "out"),
    "dense_out_negative": (lambda: wl.Dense(out=-2), ValueError, "out"),
    "dense_out_float": (lambda: wl.Dense(out=2.0), ValueError, "out"),
    "dense_out_string": (lambda: wl.Dense(out="10"), ValueError, "out"),
    "dense_out_bool": (lambda: wl.Dense(out=True), ValueError, "out"),
    "dense_parametrization_unknown": (
        lambda: wl.Dense(parametrization="mup"),
        ValueError,
        "parametrization",
    ),
    "dense_parametrization_none": (
        lambda: wl.Dense(parametrization=None),
        ValueError,
        "parametrization",
    ),
    "dense_parametrization_list": (
        lambda: wl.Dense(parametrization=["ntk"]),
        ValueError,
        "parametrization",
    ),
    "dense_trainable_string": (lambda: wl.Dense(trainable="no"), TypeError, "trainable"),
    "dense_trainable_none": (lambda: wl.Dense(trainable=None), TypeError, "trainable"),
    "conv_W_std_string": (lambda: wl.Conv(None, 3, W_std="2"), TypeError, r"Conv\(W_std=...\)"),
    "conv_b_std_negative": (lambda: wl.Conv(None, 3, b_std=-1.0), ValueError, "b_std"),
    "layernorm_eps_negative": (lambda: wl.LayerNorm(eps=-1e-5), ValueError, r"LayerNorm\(eps"),
    "layernorm_eps_string": (lambda: wl.LayerNorm(eps="1e-5"), TypeError, "eps"),
    "layernorm_eps_nan": (lambda: wl.LayerNorm(eps=float("nan")), ValueError, "eps"),
    "layernorm_eps_inf": (lambda: wl.LayerNorm(eps=float("inf")), ValueError, "eps"),
    "layernorm_eps_none": (lambda: wl.LayerNorm(eps=None), TypeError, "eps"),
    "dropout_one": (lambda: wl.Dropout(1.0), ValueError, r"Dropout\(p=...\)"),
    "dropout_negative": (lambda: wl.Dropout(-0.1), ValueError, "p=..."),
    "dropout_nan": (lambda: wl.Dropout(float("nan")), ValueError, "p=..."),
    "dropout_string": (lambda: wl.Dropout("0.5"), TypeError, "p=..."),
    "dropout_none": (lambda: wl.Dropout(None), TypeError, "p=..."),
    "dropout_bool": (lambda: wl.Dropout(True), TypeError, "p=..."),
    "dropout_vector": (lambda: wl.Dropout(torch.tensor([0.1, 0.2])), ValueError, "p=..."),
}


@pytest.mark.parametrize("case", BAD_LAYERS, ids=list(BAD_LAYERS))
def test_bad_layer_arguments(case):
    make, error, match = BAD_LAYERS[case]
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "w",
    [np.float32(1.5), np.float64(1.5), torch.tensor(1.5, dtype=torch.float64), 3 / 2],
    ids=["np32", "np64", "tensor", "float"],
)
def test_valid_number_types_give_the_same_kernel(w):
    net = wl.Serial(wl.Dense(W_std=w, b_std=0.1), wl.ReLU(), wl.Dense(1, W_std=w))
    ref = wl.Serial(wl.Dense(W_std=1.5, b_std=0.1), wl.ReLU(), wl.Dense(1, W_std=1.5))
    torch.testing.assert_close(net.kernel(X).ntk, ref.kernel(X).ntk, rtol=1e-6, atol=0)


def test_zero_weight_std_and_zero_dropout_are_valid():
    k = wl.Serial(wl.Dense(W_std=0.0, b_std=0.5), wl.Dropout(0.0), wl.Dense(1)).kernel(X)
    torch.testing.assert_close(k.nngp, torch.full((4, 4), 0.25, dtype=torch.float64))


def test_wrong_number_of_features_into_a_built_model():
    model = fc_net().build(in_features=5, width=16, seed=0)
    with pytest.raises(ValueError, match="built for 5 input features"):
        model(randn(3, 6).float())
    with pytest.raises(ValueError, match="built for 5 input features"):
        model(randn(6).float())
    assert model(randn(3, 5).float()).shape == (3, 1)


@pytest.mark.parametrize(
    ("net", "kwargs", "match"),
    [
        (wl.Serial(wl.Dense(out=10**12)), {"width": 8}, r"Dense\(out=1000000000000\)"),
        (wl.Serial(wl.Dense(), wl.ReLU(), wl.Dense(1)), {"width": 10**12}, r"hidden width"),
    ],
)
def test_build_refuses_weights_that_cannot_fit_before_allocating(net, kwargs, match):
    # 4e12 float32 numbers (16 TB): refused from the size alone, long before torch would try.
    with pytest.raises(ValueError, match=match):
        net.build(4, **kwargs)
