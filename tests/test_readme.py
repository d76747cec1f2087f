"""The README's examples are tests: every `resnet-edge` command and every Python block in README.md runs here.

The file is a harness, not a copy of the README: it parses README.md at collection time, so an example added
tomorrow is a test tomorrow. Each example runs at tiny scale with the README's own flags:

- ``STAND_INS`` maps every file name the README mentions to a tiny stand-in (built lazily, once per session, in
  one stock folder); each example runs in its own folder holding links to the stand-ins it names.
- ``SCALE_VALUES`` / ``SCALE_ARGUMENTS`` / ``ADDED_OPTIONS`` shrink a command (smaller values; options added
  only where the README gives none), never dropping or renaming a flag the README uses.
- ``PY_REWRITES`` / ``PY_KEYWORDS`` do the same for Python blocks; ``PROLOGUE`` defines the names the README's
  Python takes as given (``frame_bgr``, ...).
- ``SKIPS`` lists what cannot run here (GPU, camera, network stream), with the reason, ``SKIPS_UNLESS`` what
  needs a capability this machine may lack (bf16); ``NOT_RUN`` the shell
  lines that are not `resnet-edge` commands. ``test_every_example_is_run_or_skipped_for_a_reason`` fails when
  an example fits none of these, or when a skip no longer matches anything.

Speed: a command pays ~5 s of CPU importing TensorFlow before it does anything. The commands therefore run in
children forked from one process that imported TensorFlow and Keras once and runs nothing else (no model, no
op, no Ray); each child is a fresh copy that sets its folder, environment and argv, runs the console entry
point ``resnet_edge.cli:main`` (or the Python block), and exits with its code. Set
``RESNET_EDGE_README_FRESH=1`` to run every example in a new interpreter instead (slower, nothing preloaded).
`--ray` examples join the session's local Ray (``ray_local``) through ``$RAY_ADDRESS``, which is what `--ray`
does when that variable is set, instead of starting one Ray per command.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TIMEOUT_S = 240  # one example; the server gets as long to answer /health
FRESH = os.environ.get("RESNET_EDGE_README_FRESH", "") not in ("", "0")
SMALL = "40"  # images for parity / calibration

# --- README name -> the tiny stand-in that takes its place: (recipe, what it is) --------------------------------
# Recipes: trained (the session's `trained_model_path`), artifact:FORMAT (from the session's `artifacts`),
# no-preprocessing (a keras.applications-style file), weights (a by-name .h5), photos:N (N per class of `photo_folder`),
# digits:N (N digit PNGs in class folders), flat:N (N PNG frames, no class folders), frames:CxN (camera-shaped
# JPEGs, C classes x N), jpegs:N, png, jpeg, video:N (N frames, mp4), paths:csv|parquet (a 'path' column
# listing footage/), command:ARGS (a resnet-edge command run in the stock folder; {name} is the file).
STAND_INS: dict[str, tuple[str, str]] = {
    "model.keras": ("trained", "resnet18 @32 trained on digits (the session's trained_model_path)"),
    "my.keras": ("trained", "the same trained resnet18"),
    "damaged.keras": ("trained", "the trained resnet18, undamaged: the budget is met without a rebuild"),
    "r50.keras": ("command:build resnet18 --input-size 32 --out {name}",
                  "resnet18 @32 with 1000 classes and random weights, what `build resnet50` makes, scaled down"),
    "imagenet_resnet50.keras": ("no-preprocessing", "resnet18 @32 with no preprocessing inside and the trained "
                                "weights (logits vary), saved by plain Keras like a keras.applications model"),
    "mnv2.keras": ("no-preprocessing", "as imagenet_resnet50.keras (an untrained MobileNetV2 has constant logits)"),
    "resnet50_imagenet.h5": ("weights", "the trained resnet18's weights as a by-name .h5 (keras.applications')"),
    "r50.h5": ("weights", "the trained resnet18's weights as a by-name .h5"),
    "model.onnx": ("artifact:onnx", "the session's onnx artifact of model.keras"),
    "model_int8.tflite": ("artifact:tflite-int8", "the session's tflite-int8 artifact of model.keras"),
    "backbone.keras": ("command:build resnet18 --input-size 32 --features c3,c4,c5 --out {name}",
                       "a c3-c5 resnet18 backbone @32, random weights"),
    "embed.keras": ("command:build resnet18 --input-size 32 --pooling avg --normalize --out {name}",
                    "an L2-normalised resnet18 embedding @32, random weights"),
    "other.keras": ("command:build resnet18 --input-size 32 --pooling avg --out {name}",
                    "a resnet18 embedding @32 (a model whose flat output says embedding)"),
    "cls.keras": ("trained", "the trained resnet18 classifier, whose weights go into a backbone"),
    "embed_int8.tflite": ("command:export embed.keras --format tflite-int8 --calib-data digits --calib-count 40 "
                          "--out {name}", "the embedding's tflite-int8 artifact"),
    "backbone_int8.onnx": ("command:export backbone.keras --format onnx-int8 --calib-data digits --calib-count 40 "
                           "--out {name}", "the backbone's onnx-int8 artifact"),
    "labels.txt": ("labels:10", "ten class names, one per line (the stand-in classifiers have 10 outputs)"),
    "pi/model_fp16.ncnn.param": ("artifact:ncnn-fp16", "the session's ncnn-fp16 artifact of model.keras (and its "
                                 ".bin and .json)"),
    "photos/": ("photos:15", "60 real photo crops at 32x32, 4 class folders x 15 (from the session's photo_folder)"),
    "imgs/": ("photos:15", "the same 60 photo crops"),
    "val/": ("digits:40", "40 digit PNGs in class folders"),
    "digits_small/": ("digits:60", "60 digit PNGs in class folders: `train --data digits` scaled down"),
    "footage/": ("flat:12", "12 digit PNG frames, no class folders"),
    "frames/": ("frames:3x8", "64x48 camera-shaped JPEGs, 3 classes x 8"),
    "shots/": ("jpegs:4", "4 JPEGs"),
    "a.png": ("png", "one digit PNG"),
    "cat.jpg": ("jpeg", "one JPEG"),
    "clip.mp4": ("video:20", "20 frames of 64x48, mp4v"),
    "frames.parquet": ("paths:parquet", "a 'path' column listing footage/'s frames"),
    "more.csv": ("paths:csv", "a 'path' column listing footage/'s frames"),
    "ref.npz": ("command:parity model.keras --data digits --n 20 --save-outputs {name}",
                "reference outputs saved by parity"),
}

# --- scale-down of resnet-edge commands: only values shrink, every flag the README gives stays -------------------
SCALE_VALUES: dict[str, tuple[str, str]] = {  # option -> (value, why)
    "--input-size": ("32", "ResNet at 32x32"),
    "--classes": ("10", "10 classes (the stand-in weights have 10)"),
    "--epochs": ("1", "one epoch"),
    "--n": (SMALL, "few parity images"),
    "--calib-count": (SMALL, "few calibration images"),
    "--min-time-s": ("0.2", "short timing"),
    "--warmup": ("2", "short warm-up"),
}
SCALE_ARGUMENTS: dict[tuple[str, str | None], dict[str, str]] = {  # (command, option or None: positional) -> old: new
    ("build", None): {"resnet34": "resnet18", "resnet50": "resnet18", "resnet101": "resnet18", "resnet152": "resnet18"},
    ("train", "--model"): {"resnet34": "resnet18", "resnet50": "resnet18", "resnet101": "resnet18",
                           "resnet152": "resnet18"},
    ("train", "--data"): {"digits": "digits_small/"},  # 1,797 digits take ~40 s an epoch on 2 cores
}


def _has(*options: str):
    return lambda argv: any(_value(argv, option) is not None for option in options)


def _lacks(*options: str):
    return lambda argv: all(_value(argv, option) is None for option in options)


ADDED_OPTIONS: list[tuple[str, str, str, object, str]] = [  # (command, option, value, when, why): added if absent
    ("train", "--epochs", "1", None, "one epoch (the default is 5)"),
    ("export", "--calib-count", SMALL, _has("--calib-data"), "few calibration images"),
    ("export", "--verify-data", "val/", lambda argv: not (_value(argv, "--calib-data") or "").endswith("/"),
     "40 verification images instead of up to 500 digits (a folder given to --calib-data keeps its hold-out)"),
    ("parity", "--n", SMALL, _lacks("--ray", "--load-outputs"), "few parity images (--n does not apply on Ray)"),
    ("benchmark", "--min-time-s", "0.2", None, "short timing"),
    ("benchmark", "--warmup", "2", None, "short warm-up"),
    ("benchmark", "--formats", "onnx,tflite-int8", _has("--all"), "two formats, one float and one int8"),
    ("benchmark", "--n", SMALL, _has("--all"), "few parity images"),
    ("optimize", "--formats", "onnx,tflite-int8", None, "two formats, one float and one int8"),
    ("optimize", "--min-time-s", "0.2", None, "short timing"),
    ("optimize", "--n", SMALL, None, "few parity images"),
    ("serve", "--port", "{port}", None, "a free port"),
    ("doctor", "--formats", "onnx,tflite-int8", _has("--selftest"), "two formats, one float and one int8 (the "
     "whole self-test runs in tests/test_doctor.py)"),
]
OUTPUT_OPTIONS = ("--out", "-o", "--save-outputs", "--save-video", "--jsonl")  # their values are written, not read: no stand-in
DATA_SUFFIXES = frozenset({".keras", ".h5", ".onnx", ".tflite", ".engine", ".plan", ".xml", ".bin", ".npz", ".npy",
                           ".mp4", ".avi", ".mov", ".jpg", ".jpeg", ".png", ".parquet", ".csv", ".txt"})

# --- Python blocks -----------------------------------------------------------------------------------------------
PY_REWRITES: list[tuple[str, str, str]] = [  # (regex, replacement, why) on the block's text
    (r"\bcount=\d{3,}", f"count={SMALL}", "few calibration images"),
    (r"\(224, 224, 3\)", "(32, 32, 3)", "ResNet at 32x32"),
    (r"\bnum_classes=1000\b", "num_classes=10", "10 classes"),
    (r"\bport=8000\b", "port={port}", "a free port"),
]
PY_KEYWORDS: dict[str, dict[str, object]] = {  # "module:function" -> keywords added when the call gives none
    "resnet_edge.optimize:optimize": {"formats": ["onnx", "tflite-int8"], "min_time_s": 0.2, "parity_count": 40},
}
PROLOGUE: dict[str, tuple[str, str]] = {  # name the README's Python uses without defining -> (what, code)
    "frame_bgr": ("a 1080p camera frame as OpenCV gives it (BGR uint8)",
                  "frame_bgr = _np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=_np.uint8)"),
    "batch_uint8_nhwc": ("a prepared batch: two 32x32 RGB images, uint8 NHWC",
                         "batch_uint8_nhwc = _np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), "
                         "dtype=_np.uint8)"),
    "images": ("a list of RGB images of any size",
               "images = [_np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=_np.uint8)]"),
}

# --- what cannot run here: regex (searched in the README's text of the example) -> why --------------------------
SKIPS: dict[str, str] = {
    r"--format trt\b": "builds a TensorRT engine: needs an NVIDIA GPU with TensorRT (tests/test_tensorrt.py runs "
                       "the exporter through fakes)",
    r"--device (cuda|tensorrt-ep|jetson)\b": "needs an NVIDIA GPU",
    r"\.(engine|plan)\b": "a TensorRT engine: needs an NVIDIA GPU (Jetson) with TensorRT",
    r"--source \d+\b": "needs a camera",
    r"--source \w+://": "needs a network stream",
}
SKIPS_UNLESS: dict[str, tuple[str, str]] = {  # regex -> ("module:function" true where it can run, why not here)
    r"--inference-precision bf16": ("resnet_edge.backends.openvino.backend:has_bf16",
                                    "this CPU has no bf16 (the README: where the CPU has it)"),
}
NOT_RUN: dict[str, str] = {  # the program of a shell line that is not resnet-edge -> why it does not run here
    "make": "the Makefile's targets (make demo/test/bench) run the CLI at full scale; make test runs this file",
    "pip": "installs packages (CI installs them before the tests)",
    "curl": "talks to the serve example's server; that example's test posts an image to /predict itself",
    "ray": "starts a Ray cluster node; the `--ray` examples join the session's local Ray",
    "sudo": "installs a Jetson's system packages (apt)",
    "python3": "creates a virtual environment on the target machine",
}
NEEDS_RAY = (r"--ray\b", r"^serve\b", r"resnet_edge\.scale")  # examples that join the session's local Ray
SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console", "zsh"})
PYTHON_LANGUAGES = frozenset({"python", "py", "python3"})


# --- parsing README.md ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Example:
    kind: str  # "shell" (one resnet-edge command) or "python" (a whole block)
    line: int  # in README.md
    section: str
    text: str  # the command as written (continuations joined, comment removed), or the block's source
    notes: tuple[str, ...] = ()  # its trailing comment and the comment lines right below it

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")[:40].strip("-")
        return f"{slug}-L{self.line}"

    @property
    def expected_code(self) -> int:
        """0, or the code the README says the example exits with (``# error: ...`` means 2)."""
        for note in self.notes:
            if note.startswith("error:"):
                return 2
            said = re.search(r"\bexit(?:s| code|s with code)? (\d+)\b", note)
            if said:
                return int(said.group(1))
        return 0

    @property
    def skip_reason(self) -> str | None:
        return next((why for pattern, why in SKIPS.items() if re.search(pattern, self.text)), None)


@dataclass(frozen=True)
class OtherLine:
    line: int
    text: str
    program: str


@dataclass
class Readme:
    examples: list[Example] = field(default_factory=list)
    others: list[OtherLine] = field(default_factory=list)  # shell lines that are not resnet-edge commands
    suspicious: list[str] = field(default_factory=list)  # resnet-edge code in a block of another language


def split_comment(line: str) -> tuple[str, str]:
    """A shell line's code and its trailing comment (a ``#`` outside quotes that starts a word)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1:].strip()
    return line.rstrip(), ""


def parse_readme(text: str) -> Readme:
    readme = Readme()
    section, fence, language, block = "top", None, "", []
    for number, line in enumerate(text.splitlines(), 1):
        if fence is None:
            opening = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", line)
            if opening:
                fence, language, block = opening.group(1), opening.group(2).lower(), []
            elif re.match(r"^#{1,6} ", line):
                section = line.lstrip("#").strip()
            continue
        if line.strip().startswith(fence):
            _add_block(readme, section, language, block)
            fence = None
            continue
        block.append((number, line))
    return readme


def _add_block(readme: Readme, section: str, language: str, block: list[tuple[int, str]]) -> None:
    if language in PYTHON_LANGUAGES:
        if block and any(line.strip() for _, line in block):
            readme.examples.append(Example("python", block[0][0], section, "\n".join(line for _, line in block)))
        return
    if language not in SHELL_LANGUAGES:
        readme.suspicious += [f"README.md:{n}: {line.strip()}" for n, line in block
                              if re.match(r"^\s*(\$\s*)?resnet-edge\s", line) or "import resnet_edge" in line
                              or "from resnet_edge" in line]
        return
    logical: list[tuple[int, str]] = []  # continuation lines joined
    for number, line in block:
        if logical and logical[-1][1].endswith("\\"):
            logical[-1] = (logical[-1][0], logical[-1][1][:-1] + " " + line.strip())
        else:
            logical.append((number, line.rstrip()))
    last: Example | None = None
    for number, line in logical:
        code, comment = split_comment(line)
        code = " ".join(re.sub(r"^\s*\$\s+", "", code).split())
        if not code:
            # a comment line right below a command describes its output; a blank line ends that
            last = _with_note(readme, last, comment) if comment and last is not None else None
            continue
        words = shlex.split(code)
        program = next((w for w in words if not re.match(r"^\w+=", w)), "")
        if program == "resnet-edge":
            last = Example("shell", number, section, code, (comment,) if comment else ())
            readme.examples.append(last)
        else:
            readme.others.append(OtherLine(number, code, program))
            last = None


def _with_note(readme: Readme, example: Example, note: str) -> Example:
    updated = Example(example.kind, example.line, example.section, example.text, (*example.notes, note))
    readme.examples[readme.examples.index(example)] = updated
    return updated


# --- planning: the scaled-down command, its stand-ins and environment ------------------------------------------------

class PlanError(Exception):
    """An example the harness cannot run as it stands: a name with no stand-in, an undefined Python name."""


@dataclass
class Plan:
    example: Example
    argv: list[str] = field(default_factory=list)  # resnet-edge's arguments, scaled down
    env: dict[str, str] = field(default_factory=dict)  # VAR=value words before the command
    source: str = ""  # the Python block, scaled down
    inject: list[str] = field(default_factory=list)  # PROLOGUE names the block uses
    stand_ins: list[str] = field(default_factory=list)
    ray: bool = False

    @property
    def command(self) -> str:
        return shlex.join(["resnet-edge", *self.argv])


def _value(argv: list[str], option: str) -> str | None:
    """The value of ``option`` in ``argv`` (``--opt value`` or ``--opt=value``); "" for a flag; None if absent."""
    for index, word in enumerate(argv):
        if word == option:
            following = argv[index + 1] if index + 1 < len(argv) else None
            return following if following is not None and not following.startswith("-") else ""
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return None


def _smaller(command: str, option: str, value: str) -> str:
    if option in SCALE_VALUES:
        return SCALE_VALUES[option][0]
    return SCALE_ARGUMENTS.get((command, option), {}).get(value, value)


def scale_down(argv: list[str]) -> list[str]:
    """``argv`` (after ``resnet-edge``) with SCALE_VALUES, SCALE_ARGUMENTS and ADDED_OPTIONS applied."""
    command = argv[0] if argv else ""
    scaled: list[str] = []
    positional_seen = False
    for index, word in enumerate(argv):
        previous = argv[index - 1] if index else ""
        option, equals, inline = word.partition("=")
        if word.startswith("--") and equals:  # --option=value
            scaled.append(f"{option}={_smaller(command, option, inline)}")
            continue
        if previous.startswith("-") and not word.startswith("-"):  # the value of the option before it
            word = _smaller(command, previous, word)
        elif index > 0 and not word.startswith("-") and not positional_seen:
            positional_seen = True
            word = SCALE_ARGUMENTS.get((command, None), {}).get(word, word)
        scaled.append(word)
    for where, option, value, when, _why in ADDED_OPTIONS:
        if where == command and _value(scaled, option) is None and (when is None or when(scaled)):
            scaled += [option, value]
    return scaled


def _stand_in_for(word: str) -> str | None:
    if word in STAND_INS:
        return word
    head = word.split("/", 1)[0] + "/"
    return head if "/" in word and head in STAND_INS else None


def _looks_like_a_path(word: str) -> bool:
    return "://" not in word and (word.endswith("/") or any(c in word for c in "*?[")
                                  or Path(word).suffix.lower() in DATA_SUFFIXES)


def plan(example: Example) -> Plan:
    if example.kind == "python":
        return _plan_python(example)
    words = shlex.split(example.text)
    env = dict(w.split("=", 1) for w in words[: words.index("resnet-edge")])
    argv = scale_down(words[words.index("resnet-edge") + 1:])
    stand_ins, unknown = [], []
    for previous, word in itertools.pairwise(argv):
        if previous in OUTPUT_OPTIONS:
            continue
        if word.startswith("-"):
            option, equals, word = word.partition("=")
            if not equals or option in OUTPUT_OPTIONS:
                continue
        name = _stand_in_for(word)
        if name is not None:
            stand_ins.append(name)
        elif _looks_like_a_path(word):
            unknown.append(word)
    if unknown:
        raise PlanError(f"README.md:{example.line}: no stand-in for {', '.join(unknown)}: add it to STAND_INS "
                        "(or, if the command writes it, its option to OUTPUT_OPTIONS)")
    ray = any(re.search(pattern, shlex.join(argv)) for pattern in NEEDS_RAY)
    return Plan(example, argv=argv, env=env, stand_ins=list(dict.fromkeys(stand_ins)), ray=ray)


def free_names(source: str) -> list[str]:
    """Names the block reads but never binds (assignment, import, def, argument, loop, with ... as ...)."""
    tree = ast.parse(source)
    bound, used = set(dir(builtins)), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used.append if isinstance(node.ctx, ast.Load) else bound.add)(node.id)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.ExceptHandler)):
            bound.add(node.name or "")
    return list(dict.fromkeys(name for name in used if name not in bound))


def _plan_python(example: Example) -> Plan:
    source = example.text
    try:
        names = free_names(source)  # of the README's own text: the rewrites' placeholders are not its names
    except SyntaxError as exc:
        raise PlanError(f"README.md:{example.line + (exc.lineno or 1) - 1}: not valid Python: {exc.msg}") from exc
    missing = [name for name in names if name not in PROLOGUE]
    if missing:
        raise PlanError(f"README.md:{example.line}: the block uses {', '.join(missing)} without defining it: "
                        "define it in the README, or add it to PROLOGUE")
    for pattern, replacement, _why in PY_REWRITES:
        source = re.sub(pattern, replacement, source)
    strings = [node.value for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    stand_ins = [name for name in map(_stand_in_for, strings) if name is not None]
    ray = any(re.search(pattern, source, re.MULTILINE) for pattern in NEEDS_RAY)
    return Plan(example, source=source, inject=names, stand_ins=list(dict.fromkeys(stand_ins)), ray=ray)


def prologue_code(inject: list[str], source: str) -> str:
    """Defines the PROLOGUE names the block uses, and wraps the PY_KEYWORDS functions it calls."""
    lines = ["import numpy as _np", "import functools as _functools", "import importlib as _importlib"]
    lines += [PROLOGUE[name][1] for name in inject]
    for target, keywords in PY_KEYWORDS.items():
        module, function = target.split(":")
        if not re.search(rf"\b{function}\(", source):
            continue
        lines += [f"_module = _importlib.import_module({module!r})",
                  f"_original = getattr(_module, {function!r})",
                  f"setattr(_module, {function!r}, _functools.wraps(_original)("
                  f"lambda *a, _f=_original, **k: _f(*a, **{{**{keywords!r}, **k}})))"]
    return "\n".join(lines)


README_TEXT = README.read_text(encoding="utf-8")
PARSED = parse_readme(README_TEXT)


def _cases() -> list:
    cases, seen = [], {}
    for example in PARSED.examples:
        marks = []
        reason = example.skip_reason
        if reason is None:
            try:
                key = plan(example).command if example.kind == "shell" else example.text
            except PlanError:
                key = None  # the test reports it
            if key is not None and key in seen:
                reason = f"the same command as {seen[key]}"
            elif key is not None:
                seen[key] = example.id
        if reason is not None:
            marks.append(pytest.mark.skip(reason=reason))
        cases.append(pytest.param(example, id=example.id, marks=marks))
    return cases


# --- running: children forked from one process that imported TensorFlow ------------------------------------------------

CHILD = r'''
import atexit, json, os, sys, traceback


def run(job):
    """Run one job in this process (a fresh fork) and exit with its code."""
    code = 1
    try:
        os.chdir(job["cwd"])
        os.environ.update(job["env"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            handle = os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(handle, fd)
            os.close(handle)
        sys.stdin = open(os.devnull)
        try:
            if "argv" in job:
                import resnet_edge.cli
                sys.argv = ["resnet-edge", *job["argv"]]
                resnet_edge.cli.main()
            else:
                given = {}
                exec(compile(job["prologue"], "<README prologue>", "exec"), given)
                namespace = {"__name__": "__main__", **{name: given[name] for name in job["inject"]}}
                padded = "\n" * (job["line"] - 1) + job["source"]  # tracebacks name README.md lines
                exec(compile(padded, job["filename"], "exec"), namespace)
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        atexit._run_exitfuncs()  # what a normal exit runs (a Ray driver's disconnect among them)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve_jobs():
    import signal, time
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    import tensorflow, keras, resnet_edge.cli  # noqa: F401  imported once; nothing runs in this process
    answers.write("ready\n")
    for line in sys.stdin:
        job = json.loads(line)
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)
            run(job)
        deadline = started + job["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                code = "timeout"
                break
            time.sleep(0.02)
        try:
            os.killpg(pid, signal.SIGKILL)  # anything the job left running in its group
        except OSError:
            pass
        answers.write(json.dumps({"code": code, "seconds": time.monotonic() - started}) + "\n")


if sys.argv[1] == "--serve":
    serve_jobs()
else:
    run(json.loads(sys.argv[2]))
'''


@dataclass
class Result:
    code: int | str
    stdout: str
    stderr: str
    seconds: float

    def report(self, command: str) -> str:
        def tail(text: str) -> str:
            return "\n".join(text.strip().splitlines()[-25:])

        return (f"$ {command}\nexit code {self.code} after {self.seconds:.1f} s\n--- stdout (tail)\n"
                f"{tail(self.stdout)}\n--- stderr (tail)\n{tail(self.stderr)}")


class Runner:
    """Runs jobs in children of one preloaded process (or, with RESNET_EDGE_README_FRESH=1, fresh interpreters)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.server: subprocess.Popen[str] | None = None
        self.server_log = None
        self.count = 0

    def _start(self) -> subprocess.Popen[str]:
        if self.server is None:
            self.server_log = (self.logs / "server.log").open("w")
            self.server = subprocess.Popen([sys.executable, "-c", CHILD, "--serve"], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=self.server_log, text=True, cwd=ROOT)
            if self.server.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the preloaded process did not start: see {self.logs / 'server.log'}")
        return self.server

    def job(self, cwd: Path, env: dict[str, str], **work: object) -> dict[str, object]:
        self.count += 1
        return {"cwd": str(cwd), "env": env, "timeout": TIMEOUT_S, **work,
                "stdout": str(self.logs / f"{self.count}.out"), "stderr": str(self.logs / f"{self.count}.err")}

    def run(self, cwd: Path, env: dict[str, str], **work: object) -> Result:
        job = self.job(cwd, env, **work)
        started = time.monotonic()
        if FRESH:
            try:
                code: int | str = subprocess.run([sys.executable, "-c", CHILD, "--once", json.dumps(job)],
                                                 timeout=TIMEOUT_S, cwd=cwd).returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        else:
            server = self._start()
            server.stdin.write(json.dumps(job) + "\n")
            server.stdin.flush()
            answer = server.stdout.readline()
            if not answer:
                raise RuntimeError(f"the preloaded process died: see {self.logs / 'server.log'}")
            code = json.loads(answer)["code"]
        return Result(code, Path(job["stdout"]).read_text(errors="replace"),
                      Path(job["stderr"]).read_text(errors="replace"), time.monotonic() - started)

    def start_background(self, cwd: Path, env: dict[str, str], argv: list[str]) -> tuple[subprocess.Popen, dict]:
        """A long-running command (a server) in a fresh interpreter, so that it can be signalled."""
        job = self.job(cwd, env, argv=argv)
        return subprocess.Popen([sys.executable, "-c", CHILD, "--once", json.dumps(job)], cwd=cwd), job

    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.close()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
            self.server_log.close()


# --- the sandbox: stand-ins built once, linked into a folder per example ----------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _link(source: Path, target: Path) -> None:
    """A hard link (a command that rewrites ``target`` replaces the link, never the original), else a copy."""
    try:
        os.link(Path(source).resolve(), target)
    except OSError:
        shutil.copy2(source, target)


class Sandbox:
    def __init__(self, stock: Path, runner: Runner) -> None:
        self.stock, self.runner = stock, runner

    def provide(self, name: str, request: pytest.FixtureRequest) -> Path:
        """The stand-in for README name ``name`` in the stock folder, made on first use."""
        path = self.stock / name.rstrip("/")
        if path.exists() or path.is_symlink():
            return path
        recipe, _ = STAND_INS[name]
        kind, _, argument = recipe.partition(":")
        getattr(self, "_make_" + kind.replace("-", "_"))(path, argument, request)
        assert path.exists(), f"the recipe {recipe!r} did not make {name}"
        return path

    def workdir(self, plan: Plan, folder: Path, request: pytest.FixtureRequest) -> Path:
        """``folder`` holding the plan's stand-ins: files hard-linked (a write replaces the link, not the stock),
        folders symlinked (only read)."""
        from resnet_edge.registry import companions_of

        for name in plan.stand_ins:
            source = self.provide(name, request)
            target = folder / name.rstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)  # pi/model_fp16.ncnn.param
            if source.is_dir():
                target.symlink_to(source.resolve(), target_is_directory=True)
            else:
                _link(source, target)
                for companion in companions_of(source):  # files that travel with it (.bin, .json)
                    _link(companion, target.with_name(companion.name))
        return folder

    # recipes ---------------------------------------------------------------------------------------------------------

    def _make_trained(self, path: Path, _: str, request: pytest.FixtureRequest) -> None:
        _link(request.getfixturevalue("trained_model_path"), path)

    def _make_artifact(self, path: Path, fmt: str, request: pytest.FixtureRequest) -> None:
        from resnet_edge.registry import companions_of

        source = request.getfixturevalue("artifacts")[fmt]
        path.parent.mkdir(parents=True, exist_ok=True)
        _link(source, path)
        for companion in companions_of(source):  # an IR's .bin, an NCNN model's .bin and .json
            _link(companion, path.with_suffix(companion.suffix))

    def _make_labels(self, path: Path, count: str, request: pytest.FixtureRequest) -> None:
        path.write_text("".join(f"class {index}\n" for index in range(int(count))))

    def _make_weights(self, path: Path, _: str, request: pytest.FixtureRequest) -> None:
        import h5py
        from keras.src.legacy.saving import legacy_h5_format

        with h5py.File(path, "w") as handle:
            legacy_h5_format.save_weights_to_hdf5_group(handle, request.getfixturevalue("trained_model"))

    def _make_no_preprocessing(self, path: Path, _: str, request: pytest.FixtureRequest) -> None:
        from resnet_edge.models import build_resnet

        trained = request.getfixturevalue("trained_model")
        model = build_resnet("resnet18", tuple(trained.input_shape[1:]), num_classes=trained.output_shape[-1],
                             preprocessing="none")
        model.set_weights(trained.get_weights())  # the preprocessing layer has no weights: the lists match
        model.save(path)

    def _make_command(self, path: Path, arguments: str, request: pytest.FixtureRequest) -> None:
        argv = shlex.split(arguments.format(name=path.name))
        for word in argv:
            if _stand_in_for(word) is not None and word != path.name:
                self.provide(_stand_in_for(word), request)
        result = self.runner.run(self.stock, {}, argv=argv)
        assert result.code == 0, result.report(shlex.join(["resnet-edge", *argv]))

    def _make_photos(self, path: Path, count: str, request: pytest.FixtureRequest) -> None:
        for folder in sorted(request.getfixturevalue("photo_folder").iterdir()):
            (path / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[: int(count)]:
                _link(image, path / folder.name / image.name)

    def _digit(self, index: int, request: pytest.FixtureRequest):
        digits = request.getfixturevalue("digits")
        return digits.images[index], int(digits.labels[index])

    def _make_digits(self, path: Path, count: str, request: pytest.FixtureRequest) -> None:
        import numpy as np
        from PIL import Image

        labels = request.getfixturevalue("digits").labels
        per_class = int(count) // 10
        for label in range(10):
            (path / str(label)).mkdir(parents=True)
            for index in np.flatnonzero(labels == label)[:per_class]:
                Image.fromarray(self._digit(index, request)[0]).save(path / str(label) / f"{index:04d}.png")

    def _make_flat(self, path: Path, count: str, request: pytest.FixtureRequest) -> None:
        from PIL import Image

        path.mkdir()
        for index in range(int(count)):
            Image.fromarray(self._digit(index, request)[0]).save(path / f"frame_{index:04d}.png")

    def _camera_frame(self, index: int, request: pytest.FixtureRequest):
        """A 64x48 (4:3) RGB frame with the digit in the middle."""
        import numpy as np

        frame = np.full((48, 64, 3), 32, np.uint8)
        frame[8:40, 16:48] = self._digit(index, request)[0]
        return frame

    def _make_frames(self, path: Path, shape: str, request: pytest.FixtureRequest) -> None:
        import numpy as np
        from PIL import Image

        classes, count = (int(v) for v in shape.split("x"))
        labels = request.getfixturevalue("digits").labels
        for label in range(classes):
            (path / str(label)).mkdir(parents=True)
            for index in np.flatnonzero(labels == label)[:count]:
                Image.fromarray(self._camera_frame(index, request)).save(path / str(label) / f"{index:04d}.jpg")

    def _make_jpegs(self, path: Path, count: str, request: pytest.FixtureRequest) -> None:
        from PIL import Image

        path.mkdir()
        for index in range(int(count)):
            Image.fromarray(self._camera_frame(index, request)).save(path / f"shot_{index}.jpg")

    def _make_png(self, path: Path, _: str, request: pytest.FixtureRequest) -> None:
        from PIL import Image

        Image.fromarray(self._digit(0, request)[0]).save(path)

    def _make_jpeg(self, path: Path, _: str, request: pytest.FixtureRequest) -> None:
        from PIL import Image

        Image.fromarray(self._camera_frame(1, request)).save(path)

    def _make_video(self, path: Path, count: str, request: pytest.FixtureRequest) -> None:
        import cv2

        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
        for index in range(int(count)):
            writer.write(self._camera_frame(index, request)[..., ::-1].copy())
        writer.release()
        capture = cv2.VideoCapture(str(path))
        assert capture.read()[0], "OpenCV cannot read back the clip it wrote"
        capture.release()

    def _make_paths(self, path: Path, kind: str, request: pytest.FixtureRequest) -> None:
        frames = sorted(str(p.resolve()) for p in self.provide("footage/", request).iterdir())
        if kind == "csv":
            path.write_text("path\n" + "\n".join(frames) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"path": frames}), path)


@pytest.fixture(scope="session")
def runner(tmp_path_factory):
    runner = Runner(tmp_path_factory.mktemp("readme_logs"))
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory, runner) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("readme_stock"), runner)


def _environment(plan: Plan, request: pytest.FixtureRequest) -> dict[str, str]:
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", **plan.env}
    if plan.ray:
        env["RAY_ADDRESS"] = request.getfixturevalue("ray_local").get_runtime_context().gcs_address
        # the session's Ray binds loopback only; a driver joining it needs the same Ray settings
        env.update((k, v) for k, v in os.environ.items() if k.startswith("RAY_") and k not in env)
    return env


def _check(result: Result, command: str, expected: int) -> None:
    assert result.code == expected, result.report(command)
    assert "Traceback" not in result.stderr, result.report(command)
    if expected == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("error: "), result.report(command)


# --- the tests -----------------------------------------------------------------------------------------------------------

def test_every_example_is_run_or_skipped_for_a_reason() -> None:
    """A new example cannot escape: each one plans (stand-ins, prologue names) or is skipped with a reason; every
    other shell line's program has a reason not to run; and no skip is stale."""
    problems = [f"resnet-edge code outside a bash/python block: {where}" for where in PARSED.suspicious]
    problems += [f"README.md:{o.line}: `{o.text}` is neither a resnet-edge command nor in NOT_RUN ({o.program!r})"
                 for o in PARSED.others if o.program not in NOT_RUN]
    for example in PARSED.examples:
        if example.skip_reason is None:
            try:
                plan(example)
            except PlanError as exc:
                problems.append(str(exc))
    texts = [e.text for e in PARSED.examples]
    problems += [f"stale skip (matches no README example): {pattern!r}" for pattern in (*SKIPS, *SKIPS_UNLESS)
                 if not any(re.search(pattern, text) for text in texts)]
    assert not problems, "\n".join(problems)
    assert sum(e.kind == "shell" for e in PARSED.examples) >= 10 and any(e.kind == "python" for e in PARSED.examples)


def test_the_parser_reads_commands_comments_and_expected_codes() -> None:
    text = "\n".join([
        "# Title", "## Some section", "```bash",
        "resnet-edge export m.keras --format onnx \\", "    --opset 17   # fp32", "# error: nope",
        "make demo", "X=1 resnet-edge info 'a b.keras'  # exits 1 when broken", "```",
        "```python", "print(frame_bgr)", "```", "```", "resnet-edge info stray.keras", "```",
    ])
    parsed = parse_readme(text)
    shell = [e for e in parsed.examples if e.kind == "shell"]
    assert [(e.line, e.section, e.text) for e in shell] == [
        (4, "Some section", "resnet-edge export m.keras --format onnx --opset 17"),
        (8, "Some section", "X=1 resnet-edge info 'a b.keras'"),
    ]
    assert [e.expected_code for e in shell] == [2, 1]
    assert [(o.line, o.program) for o in parsed.others] == [(7, "make")]
    assert parsed.examples[-1].kind == "python" and parsed.examples[-1].line == 11
    assert parsed.suspicious == ["README.md:14: resnet-edge info stray.keras"]
    assert free_names("import os\nx = os.sep\nprint(x, frame_bgr, [y for y in z], lambda r: r)") == ["frame_bgr", "z"]


def test_scale_down_keeps_every_flag() -> None:
    argv = ["train", "--model", "resnet50", "--data", "digits", "--input-size=224", "--epochs", "5", "--flip"]
    assert scale_down(argv) == ["train", "--model", "resnet18", "--data", "digits_small/", "--input-size=32",
                                "--epochs", "1", "--flip"]
    assert scale_down(["build", "resnet152", "--classes", "1000"]) == ["build", "resnet18", "--classes", "10"]
    assert scale_down(["parity", "m.keras", "--ray"]) == ["parity", "m.keras", "--ray"]
    assert scale_down(["parity", "m.keras"]) == ["parity", "m.keras", "--n", SMALL]
    for example in PARSED.examples:
        if example.kind == "shell":
            words = shlex.split(example.text)
            before = {w.split("=")[0] for w in words if w.startswith("-")}
            assert before <= {w.split("=")[0] for w in scale_down(words[words.index("resnet-edge") + 1:])}


@pytest.mark.parametrize("example", _cases())
def test_readme_example(example: Example, sandbox: Sandbox, runner: Runner, request: pytest.FixtureRequest,
                        tmp_path: Path) -> None:
    for pattern, (probe, why) in SKIPS_UNLESS.items():
        module, function = probe.split(":")
        if re.search(pattern, example.text) and not getattr(importlib.import_module(module), function)():
            pytest.skip(why)
    try:
        planned = plan(example)
    except PlanError as exc:
        pytest.fail(str(exc))
    folder = sandbox.workdir(planned, tmp_path, request)
    env = _environment(planned, request)
    port = str(free_port())
    if example.kind == "python":
        source = planned.source.replace("{port}", port)
        result = runner.run(folder, env, source=source, line=example.line, filename=str(README),
                            prologue=prologue_code(planned.inject, source), inject=planned.inject)
        _check(result, f"python <README.md:{example.line}>", 0)
        return
    argv = [word.replace("{port}", port) for word in planned.argv]
    if argv[0] == "serve":
        _serve_example(runner, folder, env, argv, int(port), sandbox.provide("a.png", request))
        return
    result = runner.run(folder, env, argv=argv)
    _check(result, planned.command, example.expected_code)
    said = next((n.removeprefix("error:").strip() for n in example.notes if n.startswith("error:")), "")
    said = re.split(r"\.\.\.|,", said)[0].strip()
    if said:  # the README shows the error's first words: they are what the command prints
        assert said in result.stderr + result.stdout, result.report(planned.command)


def _serve_example(runner: Runner, folder: Path, env: dict[str, str], argv: list[str], port: int,
                   image: Path) -> None:
    """Start the server; once it says it serves (and /health answers), POST one image to /predict, then Ctrl-C
    it: it must exit 0."""
    process, job = runner.start_background(folder, env, argv)
    command = shlex.join(["resnet-edge", *argv])

    def result() -> Result:
        return Result(process.returncode, Path(job["stdout"]).read_text(errors="replace"),
                      Path(job["stderr"]).read_text(errors="replace"), 0.0)

    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            assert process.poll() is None, result().report(command)
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    health = json.loads(response.read())
                if f":{port}" in result().stdout + result().stderr:  # its "serving at URL; Ctrl-C stops" line
                    break
                raise OSError("not announced yet")
            except OSError:
                assert time.monotonic() < deadline, "no /health within the timeout\n" + result().report(command)
                time.sleep(0.5)
        route = health.get("route", "/predict")  # /predict, /embed or /features: the model's task says
        posted = urllib.request.Request(f"{url}{route}", data=image.read_bytes(), method="POST")
        with urllib.request.urlopen(posted, timeout=60) as response:
            answer = json.loads(response.read())
        key = {"/predict": "predictions", "/embed": "embeddings", "/features": "features"}[route]
        assert health and answer[key][0], answer
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    _check(result(), command, 0)
