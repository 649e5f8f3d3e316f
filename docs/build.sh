#!/usr/bin/env bash
# Build the documentation site into docs/_build/html (static HTML, works offline).
# Warnings are errors. WIDELIMITS_DOCS_NO_GALLERY=1 skips executing the example gallery.
# Needs the docs extra: pip install -e ".[docs]"
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m sphinx -W --keep-going -b html docs docs/_build/html "$@"
