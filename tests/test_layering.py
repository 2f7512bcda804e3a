"""The house rules of DESIGN.md's layout: imports flow preprocess -> shards <- train <- eval,
eval reaches train only through the model package and the run-directory contract, and the
reporting layer of eval loads without the model stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("preprocess", "shards", "train", "eval")
# what each package may import from the others
ALLOWED = {
    "shards": (),
    "preprocess": ("shards",),
    "train": ("shards",),
    "eval": ("shards", "train.model", "train.run_dir"),
}


def _imports(package: str) -> dict[str, set[str]]:
    """module file -> names of other project packages' modules it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def test_imports_flow_one_way():
    violations = []
    for package, allowed in ALLOWED.items():
        for module, names in _imports(package).items():
            for name in names:
                own = name.split(".")[0] == package
                if not own and not any(name == a or name.startswith(f"{a}.") for a in allowed):
                    violations.append(f"{module} imports {name}")
    assert not violations, "\n".join(violations)


def test_reports_and_compare_load_without_torch():
    code = (
        "import sys, eval.compare, eval.aggregate, eval.report, eval.plots, eval.results; "
        "print(sorted(m for m in ('torch', 'peft', 'open3d') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
