"""A runtime is one folder: outside ``resnet_edge/backends/<name>/`` its name appears only in the registry's one list
of runtimes (and in ``pyproject.toml`` and the docs), so adding a runtime is its folder plus that one line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from resnet_edge.registry import BACKENDS, FORMATS, REFERENCE, RUNTIMES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "resnet_edge"


def _names() -> set[str]:
    """Every runtime name but the float reference's (Keras is the source framework everywhere), and every format's
    name and alias."""
    names = {name for name in BACKENDS if name != REFERENCE}
    for row in FORMATS.values():
        names |= {row.name, *row.aliases}
    return names


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            found.add(id(body[0].value))
    return found


LIBRARY_CALLS = {"lazy_import", "import_module", "find_spec", "getLogger", "tool_versions", "version"}


def _library_names(tree: ast.AST) -> set[int]:
    """Strings that name a library or distribution, not a runtime: what is imported, a logger, a tool-version list
    (``NOISY_LOGGERS``, ``ONNX_TOOLS``): several runtimes may share a library, and the ONNX route uses onnx and
    onnxruntime's quantizer whatever runtime the file is for."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in LIBRARY_CALLS:
                found |= {id(n) for arg in node.args for n in ast.walk(arg)}
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id.endswith(("_TOOLS", "LOGGERS")) for t in targets):
            found |= {id(n) for n in ast.walk(node.value)}
    return found


def mentions(path: Path, names: set[str]) -> list[str]:
    """Where a file names a runtime or format: a string equal to one (docstrings and library names aside), or an
    import of a runtime folder."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree) | _library_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip \
                and node.value.lower() in names:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
        module = node.module if isinstance(node, ast.ImportFrom) else None
        modules = [module] if module else [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        for name in modules:
            if re.search(r"(^|\.)backends\.\w+", name) or (isinstance(node, ast.ImportFrom) and node.module == "backends"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}")
    return found


def test_outside_its_folder_no_code_names_a_runtime() -> None:
    names = _names()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        inside = path.relative_to(PACKAGE).parts
        if inside[0] == "backends" or path == PACKAGE / "registry.py":
            continue
        found += mentions(path, names)
    assert not found, "runtime knowledge outside its folder:\n" + "\n".join(found)


def test_the_registry_names_runtimes_only_in_its_one_list() -> None:
    tree = ast.parse((PACKAGE / "registry.py").read_text(encoding="utf-8"))
    named = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            strings = [n.value for n in ast.walk(node.value) if isinstance(n, ast.Constant) and n.value in RUNTIMES]
            if strings:
                named[node.targets[0].id] = strings
    assert named == {"RUNTIMES": list(RUNTIMES), "REFERENCE": [REFERENCE]}
    listed = {id(n) for node in tree.body if isinstance(node, ast.Assign) for n in ast.walk(node.value)
              if getattr(node.targets[0], "id", "") in ("RUNTIMES", "REFERENCE")}
    others = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in _names() and id(n) not in listed]
    assert not others, others


def test_every_runtime_is_a_folder_that_declares_itself() -> None:
    folders = sorted(p.name for p in (PACKAGE / "backends").iterdir() if (p / "__init__.py").is_file())
    assert folders == sorted(RUNTIMES)


@pytest.mark.parametrize("name", RUNTIMES)
def test_a_runtime_folder_imports_no_other_runtime(name: str) -> None:
    others = set(RUNTIMES) - {name}
    for path in (PACKAGE / "backends" / name).rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for other in others:
            assert not re.search(rf"(backends\.{other}\b|from \.\.{other}\b)", text), (path, other)


def test_the_makefile_and_benchmarks_take_the_formats_from_the_registry() -> None:
    names = _names()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    listed = [n for n in names if re.search(rf"(?<![\w.-]){re.escape(n)}(?![\w-])", makefile)]  # a file's suffix is no list
    assert not listed, f"the Makefile lists formats by name: {listed}"
