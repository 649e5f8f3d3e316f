"""Process-wide on/off switches, read from the environment at import (``WIDELIMITS_FUSED``,
``WIDELIMITS_NUMBA``, ``WIDELIMITS_REUSE``): one parser, one error message, one way to set them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["Switch", "parse_switch"]

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


class Switch:
    """A process-wide switch: ``on`` is read from the environment variable ``name`` (default
    on); `set` changes it, and calling the switch gives a context manager that sets it inside
    and puts back what it was after (also after an exception).  ``what`` says what turning it
    off does, for the error messages."""

    def __init__(self, name: str, what: str) -> None:
        self.on = parse_switch(name, what)

    def set(self, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be True or False, got {enabled!r}")
        self.on = enabled

    @contextlib.contextmanager
    def __call__(self, enabled: bool) -> Iterator[None]:
        previous = self.on
        self.set(enabled)
        try:
            yield
        finally:
            self.on = previous
