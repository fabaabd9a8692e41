#!/usr/bin/env bash
# The whole test suite behind `make test`:
#   1. a clean, strict build of the book (every notebook executed; any cell error or Sphinx warning fails);
#   2. one pytest run over the unit tests and, with nbval, over the notebooks the build just executed:
#      each notebook is executed again in a fresh copy of the book (its own empty data/) and every output
#      that is not tagged `nbval-ignore-output` must match the build's output exactly — this is the check
#      that one seed reproduces the same data, artifacts and numbers.
# The last line printed is pytest's summary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)

echo "== strict book build (jupyter-book build --all -W --keep-going)"
# Clean: no artifact from an earlier run may stand in for one a notebook fails to produce.
rm -rf _build/html _build/jupyter_execute _build/.doctrees
find data -mindepth 1 ! -name README.md -delete
jupyter-book build --all -W --keep-going --path-output . . > _build.log 2>&1 || { tail -n 80 _build.log; echo "book build failed (full log: _build.log)"; exit 1; }
grep -E "Executed notebook" _build.log | sed "s|^$root/||" || true
echo "book built in $(( $(date +%s) - start )) s"

echo "== unit tests + nbval"
nb="_build/nbval"
rm -rf "$nb"
mkdir -p "$nb/notebooks"
cp _config.yml pyproject.toml "$nb/"
cp _build/jupyter_execute/notebooks/*.ipynb "$nb/notebooks/"
pytest -p no:cacheprovider tests "$nb/notebooks" \
  --nbval --nbval-current-env --nbval-cell-timeout=1200 \
  --nbval-sanitize-with tools/nbval_sanitize.cfg \
  -o "testpaths=tests" -q 2>&1 | tee _test.log | grep -vE "^\s*$" | tail -n 60
exit "${PIPESTATUS[0]}"
