"""The arrows between the layers point one way: app/ uses model/, never the other way round."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_model_and_training_never_import_the_app_not_even_inside_a_function():
    for folder in ("model", "training"):
        for path in (ROOT / folder).rglob("*.py"):
            found = {m for m in _imported_modules(path) if m == "app" or m.startswith("app.")}
            assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}"


def test_the_model_layer_loads_without_the_app():
    """app.settings imports model.registry; model.smollm2 importing app.settings back made a
    circle. The data folder now comes from model/paths.py."""
    imports = "model.paths, model.registry, model.smollm2, model.engines.pool, model.engines.factory, model.engines.worker"
    r = subprocess.run(
        [sys.executable, "-c", f"import sys, {imports}; print(*sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "model.smollm2" in r.stdout.split()
    assert [m for m in r.stdout.split() if m.split(".")[0] == "app"] == []
