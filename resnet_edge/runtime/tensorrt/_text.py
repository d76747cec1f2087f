"""One-line messages from multi-line library text (TensorRT logs, cuda-python exceptions, parser errors)."""

from __future__ import annotations


def first_line(text: str, limit: int = 300) -> str:
    """The first non-blank line of ``text``, stripped and cut to ``limit`` characters ("" when there is none)."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]
