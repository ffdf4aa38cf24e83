"""The public API of `core`: every name resolves, and importing it stays cheap (names load on first use)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import core

INIT = Path(core.__file__)


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_every_public_name_resolves_and_the_type_checking_imports_list_the_same_names():
    for name in core.__all__:
        assert getattr(core, name) is not None
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    guarded = next(node for node in tree.body if isinstance(node, ast.If))  # `if TYPE_CHECKING:`
    imported = {alias.name for node in guarded.body for alias in node.names}
    assert imported == set(core.__all__)


def test_importing_core_or_its_errors_loads_no_engine():
    for statement in ("import core", "import core.errors"):
        loaded = _loaded_after(statement)
        assert not {"onnxruntime", "torch", "transformers", "core.compression", "core.measure"} & loaded, statement
