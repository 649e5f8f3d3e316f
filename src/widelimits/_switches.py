"""On/off switches read from the environment (``WIDELIMITS_FUSED``, ``WIDELIMITS_NUMBA``,
``WIDELIMITS_REUSE``): one parser, one error message."""

from __future__ import annotations

import os

__all__ = ["parse_switch"]

_ON, _OFF = ("1", "true", "yes", "on", ""), ("0", "false", "no", "off")


def parse_switch(name: str, what: str) -> bool:
    """The environment variable ``name`` (default on) as a bool; ``what`` says what turning it
    off does, for the error message."""
    value = os.environ.get(name, "1")
    v = value.strip().lower()
    if v not in _ON + _OFF:
        raise ValueError(
            f"{name} must be one of {_ON[:-1] + _OFF} (or empty), got {value!r}: set it to 0 "
            f"for {what}, 1 (the default) otherwise"
        )
    return v in _ON
