"""Sphinx configuration of the widelimits documentation site.

Sphinx + sphinx-gallery + pydata-sphinx-theme: the stack of scikit-learn, PyTorch-adjacent
projects and neural-tangents' own readers, so the site looks and navigates the way they expect.

Build (offline, from the repository root)::

    bash docs/build.sh            # = python -m sphinx -W --keep-going -b html docs docs/_build/html

Set ``WIDELIMITS_DOCS_NO_GALLERY=1`` to skip executing the example gallery (``examples/``).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import types
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "src"))  # document this checkout, not an installed copy
sys.path.insert(0, str(DOCS))  # the build's own helpers (_docstring_math)

from _docstring_math import is_pending, plain_formulas  # noqa: E402

import widelimits  # noqa: E402

project = "widelimits"
author = "widelimits developers"
copyright = "widelimits developers"
release = widelimits.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # ships MathJax into _static: formulas render without internet
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_copybutton",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "limits-example/report.md", "**/README.md", "build.sh"]
templates_path = ["_templates"]

# --- Markdown pages (architecture.md, theory.md, coming-from-nt.md) --------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# --- API reference ----------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"  # no half-filled parameter lists
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False


# Every public name must have a page: each API page's autosummary is checked against __all__.
API_MODULES = [
    "widelimits", "widelimits.finite", "widelimits.predict", "widelimits.limits",
    "widelimits.linear", "widelimits.scale", "widelimits.sklearn", "widelimits.from_module",
    "widelimits.testing",
]  # fmt: skip


def _check_api_coverage() -> None:
    missing = []
    for name in API_MODULES:
        module = importlib.import_module(name)
        listed = set(
            re.findall(r"[A-Za-z_][A-Za-z_0-9]*", (DOCS / "api" / f"{name}.rst").read_text())
        )
        for public in getattr(module, "__all__", []):
            value = getattr(module, public, None)
            if public == "__version__" or isinstance(value, types.ModuleType):
                continue
            if public == "from_module" and name == "widelimits":
                continue  # documented on the widelimits.from_module page
            if public not in listed:
                missing.append(f"{name}.{public}")
    if missing:
        raise RuntimeError(
            "public names without an API page (add them to docs/api/<module>.rst): "
            + ", ".join(missing)
        )


_check_api_coverage()


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Leave out what scikit-learn's base classes add (set_*_request, score, ...)."""
    module = getattr(obj, "__module__", None) or ""
    if what == "class" and module.startswith("sklearn"):
        return True
    return None


def _no_builtin_docstrings(app, what, name, obj, options, lines):
    """Constants (``NAMED_POINTS``) have no docstring: show their value, not ``dict``'s help."""
    if (
        what in ("data", "attribute")
        and lines
        and isinstance(type(obj).__doc__, str)
        and "\n".join(lines).strip() == inspect.cleandoc(type(obj).__doc__).strip()
    ):
        lines[:] = []


_PLAIN_FORMULAS: list[str] = []


def _find_plain_formulas(app, what, name, obj, options, lines):
    """Record formulas a docstring leaves unmarked: they would show as raw text, not maths."""
    if not is_pending(name, obj):
        _PLAIN_FORMULAS.extend(f"{name}: {problem}" for problem in plain_formulas(lines))


def _check_formulas(app, exc) -> None:
    if exc is None and _PLAIN_FORMULAS:
        raise RuntimeError(
            "docstrings with formulas in plain text (write them as :math:`...` or in a "
            '\'.. math::\' block, in a raw docstring r"""..."""):\n  '
            + "\n  ".join(sorted(set(_PLAIN_FORMULAS)))
        )


_REMOTE_ASSET = re.compile(r"<(?:script|link|img)\b[^>]*(?:src|href)=[\"'](?:https?:)?//", re.I)


def _check_offline(app, exc) -> None:
    """Fail the build if a page loads a script, style or image from the network."""
    if exc is not None or app.builder.format != "html":
        return
    remote = [
        str(page.relative_to(app.outdir))
        for page in Path(app.outdir).rglob("*.html")
        if _REMOTE_ASSET.search(page.read_text(encoding="utf-8"))
    ]
    if remote:
        raise RuntimeError(f"pages load assets from the network (must work offline): {remote}")


def setup(app) -> None:
    app.connect("autodoc-skip-member", _skip_foreign_members)
    app.connect("autodoc-process-docstring", _no_builtin_docstrings)
    # after napoleon (priority 500) has turned Google style into reStructuredText
    app.connect("autodoc-process-docstring", _find_plain_formulas, priority=900)
    app.connect("build-finished", _check_offline)
    app.connect("build-finished", _check_formulas)


# --- Figures drawn from the code at build time (git-ignored) -----------------------------------


def _draw_figures() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from widelimits.limits import plot_plane

    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    fig = plot_plane()
    fig.savefig(out / "plane.png", dpi=110, bbox_inches="tight")
    matplotlib.pyplot.close(fig)


_draw_figures()

# --- Example gallery ----------------------------------------------------------------------------
_NO_GALLERY = os.environ.get("WIDELIMITS_DOCS_NO_GALLERY", "") not in ("", "0")
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "plot_gallery": "False" if _NO_GALLERY else "True",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "show_memory": False,
    # its summary page loads jQuery/DataTables from CDNs; run times are on each example's page
    # and in the build log instead
    "write_computation_times": False,
}
if not (ROOT / "examples").is_dir():
    raise RuntimeError("the gallery needs an examples/ folder at the repository root")

# --- HTML ---------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = "widelimits"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 6,
}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
# The guide pages have no sub-pages: no empty left sidebar, more room for the formulas.
html_sidebars = {p: [] for p in ("index", "theory", "coming-from-neural-tangents", "architecture")}
