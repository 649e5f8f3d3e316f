"""Progress bars: one rule for every bar widelimits draws.

``progress`` arguments take three values: ``False`` never draws a bar, ``True`` always does, and
``None`` ("auto") draws one only where someone watches it: when stderr is a terminal or inside a
Jupyter kernel.  Redirected to a file, a bar's ``\\r`` updates are only noise (tens of kilobytes
of half-lines), so the command line passes ``None`` unless ``--no-progress`` says ``False``.
"""

from __future__ import annotations

import sys

__all__ = ["progress_bar", "show_progress"]


def _watched() -> bool:
    """stderr is a terminal, or the code runs in a Jupyter kernel (tqdm draws a widget)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def show_progress(progress: bool | None, default: bool = True) -> bool:
    """Whether to draw a bar: ``progress`` if it is a bool, else (auto) ``default`` and only
    where it is watched (`_watched`)."""
    if progress is None:
        return default and _watched()
    return bool(progress)


def progress_bar(iterable=None, *, progress: bool | None = None, default: bool = True, **kwargs):
    """A tqdm bar on stderr, drawn as `show_progress` decides; other ``kwargs`` go to tqdm."""
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, disable=not show_progress(progress, default), **kwargs)
