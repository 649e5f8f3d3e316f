"""Bad inputs to the switch between the fused and the eager activation maps."""

from __future__ import annotations

import pytest

import widelimits.layers._fused as fusedmod
from widelimits.layers._fused import _parse_switch, fused, fused_enabled, set_fused


@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
def test_set_fused_needs_a_bool(value):
    before = fused_enabled()
    with pytest.raises(TypeError, match="enabled"):
        set_fused(value)
    with pytest.raises(TypeError, match="enabled"):
        with fused(value):
            pass
    assert fused_enabled() is before  # a refused value changes nothing


@pytest.mark.parametrize("value", ["2", "maybe", "fused", "-1"])
def test_environment_switch_refuses_unknown_values(value):
    with pytest.raises(ValueError, match="WIDELIMITS_FUSED"):
        _parse_switch(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", False), (" False ", False), ("off", False), ("1", True), ("", True), ("YES", True)],
)
def test_environment_switch_values(value, expected):
    assert _parse_switch(value) is expected


def test_context_manager_restores_the_switch_after_an_error():
    before = fusedmod.fused_enabled()
    with pytest.raises(RuntimeError, match="inside"):
        with fused(not before):
            assert fusedmod.fused_enabled() is (not before)
            raise RuntimeError("inside")
    assert fusedmod.fused_enabled() is before
