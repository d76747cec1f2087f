"""Dump the public API surface of an importable module to JSON: run as a script in a fresh process.

``python -S _trt_api_dump.py MODULE OUT.json`` imports MODULE (the real TensorRT bindings on stub
libraries, or cuda-python) and writes, for the module and every class reachable from it (nested ones as
``Outer.Inner``): each attribute's kind (method, class, property, readonly, member, value), enum
members, and the positional arities each callable accepts (from its signature or pybind11 docstring).
Nothing is called, so no GPU or driver is needed. Started by _trt_api.surface.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from typing import Any

_SIGNATURE = re.compile(r"^\s*(?:\d+\.\s+)?(?:[\w.]+\.)?(\w+)\((.*)\)(?:\s*->.*)?$")


def _split_params(text: str) -> list[str]:
    """Top-level comma split of a pybind11 parameter list (types and defaults may hold brackets)."""
    params, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "([{<":
            depth += 1
        elif char in ")]}>" and depth:
            depth -= 1
        elif char == "," and depth == 0:
            params.append(text[start:index].strip())
            start = index + 1
    if text[start:].strip():
        params.append(text[start:].strip())
    return params


def _arity(params: list[str]) -> list[int | None]:
    """[fewest, most] positional arguments (most None for ``*args``), ``self`` left out."""
    if params and params[0].split(":")[0].strip() in ("self", "cls"):
        params = params[1:]
    least, most = 0, 0
    for param in params:
        name = param.split(":")[0].split("=")[0].strip()
        if name in ("/", "*") or name.startswith("**"):
            if name == "*":
                break
            continue
        if name.startswith("*"):
            return [least, None]
        most += 1
        if "=" not in param:
            least = most
    return [least, most]


def _docstring_arities(name: str, doc: str) -> list[list[int | None]]:
    arities = []
    for line in doc.splitlines():
        match = _SIGNATURE.match(line)
        if match and match.group(1) == name:
            params = _split_params(match.group(2))
            if params not in (["*args", "**kwargs"],):
                arities.append(_arity(params))
    return arities


def arities(name: str, value: Any) -> list[list[int | None]]:
    """The positional arities ``value`` accepts, one per overload; [] when unknown."""
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        signature = None
    if signature is not None and not any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
        return [_arity([str(p) for p in signature.parameters.values()])]
    return _docstring_arities(name, inspect.getdoc(value) or "")


def kind_of(owner: Any, name: str) -> str:
    try:
        value = inspect.getattr_static(owner, name)
    except AttributeError:
        value = getattr(owner, name)
    if isinstance(value, property):
        return "property" if value.fset is not None else "readonly"
    if isinstance(value, (staticmethod, classmethod)):
        return "method"
    if inspect.isclass(value):
        return "class"
    if type(value).__name__ in ("getset_descriptor", "member_descriptor"):
        return "property"
    if callable(value) or type(value).__name__ == "instancemethod":
        return "method"
    if isinstance(owner, type) and isinstance(value, owner):
        return "member"
    return "value"


def enum_members(cls: type) -> list[str] | None:
    """Member names of a Python, pybind11 or cuda-python enum; None for other classes."""
    members = getattr(cls, "__members__", None)
    return None if members is None else list(members)


def describe(owner: Any) -> dict[str, Any]:
    attrs: dict[str, str] = {}
    signatures: dict[str, list[list[int | None]]] = {}
    for name in dir(owner):
        try:
            attrs[name] = kind_of(owner, name)
        except Exception:
            attrs[name] = "value"
        if attrs[name] == "method" and not name.startswith("__"):
            signatures[name] = arities(name, getattr(owner, name))
    entry: dict[str, Any] = {"attrs": attrs, "signatures": signatures}
    if inspect.isclass(owner):
        entry["members"] = enum_members(owner)
        if "__init__" in owner.__dict__:
            entry["init"] = arities("__init__", owner.__init__)
    return entry


def surface(module_name: str) -> dict[str, Any]:
    module = importlib.import_module(module_name)
    types: dict[str, Any] = {"": describe(module)}
    pending = [(name, getattr(module, name)) for name in dir(module) if not name.startswith("_")]
    while pending:
        path, value = pending.pop()
        if not inspect.isclass(value) or path in types or path.count(".") > 2:
            continue
        types[path] = describe(value)
        pending.extend((f"{path}.{name}", inspect.getattr_static(value, name)) for name in vars(value)
                       if not name.startswith("_"))
    return {"module": module_name, "version": str(getattr(module, "__version__", "")), "types": types}


def main(argv: list[str]) -> None:
    module_name, out = argv
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(surface(module_name), handle, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
