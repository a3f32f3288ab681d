"""The package layers import only downward (docs/architecture.md): the IR knows nothing of the
hardware, the hardware nothing of boards or simulators, and so on. Imports inside functions count."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: folder -> the celosia subpackages its modules may import (besides celosia.errors)
ALLOWED = {
    "ir": {"ir"},
    "hw": {"ir", "hw"},
    "boards": {"ir", "hw", "boards"},
    "sim": {"ir", "hw", "boards", "sim", "rtl_templates"},
    "frontend": {"ir", "frontend"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "celosia" and len(parts) > 1:
                found.add(parts[1])
    return found - {"errors"}


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_go_down_the_layers(folder):
    bad = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        wrong = _imports(path) - ALLOWED[folder]
        if wrong:
            bad[str(path.relative_to(ROOT))] = sorted(wrong)
    assert not bad, f"upward imports: {bad}"
