"""Copy the MathJax 3 es5 build from the installed django-static-mathjax package into the book.

Only ``tex-chtml.js`` and the CHTML fonts are needed; they go to ``_extra/mathjax`` which Sphinx copies to the
HTML root (``html_extra_path``), and ``mathjax_path`` points there.
"""

import shutil
import sys
from importlib.util import find_spec
from pathlib import Path

spec = find_spec("mathjax")
if spec is None or not spec.submodule_search_locations:
    sys.exit("django-static-mathjax is not installed; run `make book` again")
es5 = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
target = Path(sys.argv[1] if len(sys.argv) > 1 else "_extra/mathjax")
if target.exists():
    shutil.rmtree(target)
(target / "output" / "chtml").mkdir(parents=True)
shutil.copy2(es5 / "tex-chtml.js", target / "tex-chtml.js")
shutil.copytree(es5 / "output" / "chtml" / "fonts", target / "output" / "chtml" / "fonts")
print(f"MathJax copied to {target}")
