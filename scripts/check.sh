#!/usr/bin/env bash
# The project's test command (README "Test"; .ci/run calls it): lint, manifest, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
"$py" -m ruff check src tests benchmarks scripts docs
"$py" -m npe2 validate napari-correlax
"$py" -m pytest -q -p no:cacheprovider "$@"
