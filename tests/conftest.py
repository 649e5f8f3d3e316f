"""Shared test setup."""

import pytest

from widelimits.testing import single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tests use tiny tensors, for which torch's intra-op threads cost more than they save
    # (much more on a busy machine): see widelimits.testing.single_thread.
    with single_thread():
        yield


@pytest.fixture
def chain_calls(monkeypatch):
    """Every call of the compiled loop `widelimits.layers._jit_loops.chain` from here on, as a
    dict of its arguments by name (``mode``, ``rows``, ``k12``, ``t_out``, ...); the loop still
    runs.  Skips the test without numba."""
    import inspect

    pytest.importorskip("numba")
    from widelimits.layers import _jit_loops

    original = _jit_loops.chain
    signature = inspect.signature(original.py_func)
    calls: list[dict] = []

    def spy(*args):
        calls.append(signature.bind(*args).arguments)
        return original(*args)

    monkeypatch.setattr(_jit_loops, "chain", spy)
    return calls
