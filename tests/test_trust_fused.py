"""Bad inputs to the switches between the fused (and compiled) and the eager activation maps."""

from __future__ import annotations

import pytest

import widelimits.layers._fused as fusedmod
from widelimits._switches import parse_switch
from widelimits.layers._fused import fused, fused_enabled, set_fused

SWITCHES = ["WIDELIMITS_FUSED", "WIDELIMITS_NUMBA", "WIDELIMITS_REUSE"]


@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
def test_set_fused_needs_a_bool(value):
    before = fused_enabled()
    with pytest.raises(TypeError, match="enabled"):
        set_fused(value)
    with pytest.raises(TypeError, match="enabled"):
        with fused(value):
            pass
    assert fused_enabled() is before  # a refused value changes nothing


@pytest.mark.parametrize("name", SWITCHES)
@pytest.mark.parametrize("value", ["2", "maybe", "fused", "-1"])
def test_environment_switch_refuses_unknown_values(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        parse_switch(name, "something")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", False), (" False ", False), ("off", False), ("1", True), ("", True), ("YES", True)],
)
@pytest.mark.parametrize("name", SWITCHES)
def test_environment_switch_values(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    assert parse_switch(name, "something") is expected


def test_environment_switch_defaults_on(monkeypatch):
    monkeypatch.delenv("WIDELIMITS_NUMBA", raising=False)
    assert parse_switch("WIDELIMITS_NUMBA", "something") is True


def test_context_manager_restores_the_switch_after_an_error():
    before = fusedmod.fused_enabled()
    with pytest.raises(RuntimeError, match="inside"):
        with fused(not before):
            assert fusedmod.fused_enabled() is (not before)
            raise RuntimeError("inside")
    assert fusedmod.fused_enabled() is before
