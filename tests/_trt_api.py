"""The real TensorRT 10/11 and cuda-python APIs on a machine without TensorRT, CUDA or a GPU.

Fetches the bindings' wheels from PyPI (``pip download --no-deps``), unpacks them, compiles trt_stub.c
into the three libraries the TensorRT bindings link (one soname set per major) and, in a subprocess per
package, imports the real bindings to dump their API surface (_trt_api_dump.py) or to run the project's
code up to where a GPU would be needed (_trt_api_probe.py). Downloads, unpacked wheels, stubs and
surfaces are cached under ``$RESNET_EDGE_TRT_API_CACHE`` (default ``~/.cache/resnet-edge/trt-api``).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _trt_fakes import Fake
from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename

TENSORRT = ("11.4.0.106", "10.16.1.11", "10.13.3.9", "10.3.0")
"""The TensorRT versions users have, each as published on PyPI (cp311/cp312, x86_64): the newest TensorRT 11 (desktop;
AGX Orin and Thor from JetPack 7.2.2), 10.16 (JetPack 7.2), 10.13 (JetPack 7.0/7.1, Thor) and 10.3 (JetPack 6.x)."""
CUDA = (("cuda-bindings", "13.5.0", "cuda.bindings.runtime"), ("cuda-bindings", "12.9.4", "cuda.bindings.runtime"),
        ("cuda-python", "12.6.2.post1", "cuda.bindings.runtime"), ("cuda-python", "12.6.0", "cuda.cudart"))
"""(package, version, runtime module): what the ``tensorrt`` and ``jetpack7`` extras install (CUDA 13), the newest
for CUDA 12 (``tensorrt-cu12``), what the ``jetpack6`` extra installs (``cuda-python>=12.6,<12.7``: JetPack 6's CUDA
12.6), and the last cuda-python before cuda-bindings, whose only runtime module is the ``cuda.cudart`` the project
falls back to."""
CUDA_PATHFINDER = "1.9.0"
"""cuda-bindings imports it to find the CUDA libraries; satisfies both cuda-bindings versions above."""
SOURCES = (".c", ".cpp", ".h", ".pxd", ".pyx")
"""Left out when unpacking (the cuda wheels carry their Cython sources)."""
STUB_LIBRARIES = ("nvinfer", "nvinfer_plugin", "nvonnxparser")
TENSORRT_SHIM = "from tensorrt_bindings import *\nfrom tensorrt_bindings import __version__\n"
"""``tensorrt/__init__.py`` exactly as the tensorrt-cu12 package writes it over the bindings wheel."""

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STUB_SOURCE = HERE / "trt_stub.c"
DUMP_SCRIPT = HERE / "_trt_api_dump.py"
PROBE_SCRIPT = HERE / "_trt_api_probe.py"
TIMEOUT = 300


class Unavailable(Exception):
    """The real API cannot be had here (no C compiler, no pip, PyPI out of reach, no wheel for this Python)."""


def cache_dir() -> Path:
    base = os.environ.get("RESNET_EDGE_TRT_API_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnet-edge" / "trt-api"


def _publish(build: Any, target: Path) -> Path:
    """``build(tmp)`` fills a fresh folder that is then renamed to ``target``; a concurrent winner is kept."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class BindingsError(Exception):
    """The real bindings did not import, or the dump or probe crashed: a failure, never a skip."""


def _run(command: list[str], what: str, failure: type[Exception] = Unavailable, **kwargs: Any
         ) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise failure(f"{what}: {exc}") from exc
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        tail = "\n".join(lines[-15:] if failure is BindingsError else lines[-1:]) or f"exit {result.returncode}"
        raise failure(f"{what} failed: {tail}")
    return result


def _compatible(wheel: Path) -> bool:
    tags = set(sys_tags())
    return any(tag in tags for tag in parse_wheel_filename(wheel.name)[3])


def wheel(name: str, version: str) -> Path:
    """The cached wheel of ``name==version`` for this Python, downloaded from PyPI on first use."""
    folder = cache_dir() / "wheels"
    stem = f"{name.replace('-', '_')}-{version}-"
    for path in sorted(folder.glob(f"{stem}*.whl")):
        if _compatible(path):
            return path
    with tempfile.TemporaryDirectory() as tmp:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
              "--retries", "1", "--timeout", "20", "--dest", tmp, f"{name}=={version}"], f"pip download {name}=={version}")
        found = [path for path in Path(tmp).glob("*.whl") if _compatible(path)]
        if not found:
            raise Unavailable(f"no {name}=={version} wheel for this Python ({sys.version.split()[0]})")
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(found[0], folder / found[0].name)
        return folder / found[0].name


def unpacked(name: str, version: str) -> Path:
    """The wheel's contents, to put on ``sys.path``; a TensorRT bindings wheel also gets its ``tensorrt`` shim."""
    source = wheel(name, version)

    def build(tmp: Path) -> None:
        with zipfile.ZipFile(source) as archive:
            archive.extractall(tmp, [name for name in archive.namelist() if not name.endswith(SOURCES)])
        if (tmp / "tensorrt_bindings").is_dir():
            (tmp / "tensorrt").mkdir()
            (tmp / "tensorrt" / "__init__.py").write_text(TENSORRT_SHIM)

    return _publish(build, cache_dir() / "unpacked" / source.name.removesuffix(".whl"))


def _digest(*paths: Path) -> str:
    return hashlib.sha256(b"".join(path.read_bytes() for path in paths)).hexdigest()[:12]


def stub_libraries(major: str) -> Path:
    """A folder with libnvinfer, libnvinfer_plugin and libnvonnxparser ``.so.<major>`` built from trt_stub.c."""

    def build(tmp: Path) -> None:
        compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
        if not compiler:
            raise Unavailable("no C compiler (gcc or cc) to build the TensorRT stub libraries")
        for library in STUB_LIBRARIES:
            soname = f"lib{library}.so.{major}"
            _run([compiler, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(tmp / soname), str(STUB_SOURCE)],
                 f"compiling {soname}")

    return _publish(build, cache_dir() / "stubs" / f"trt{major}-{_digest(STUB_SOURCE)}")


@dataclass(frozen=True)
class Bindings:
    """Where one real package's import needs to look: ``sys.path`` entries and extra environment."""

    package: str
    version: str
    module: str
    paths: tuple[Path, ...]
    env: tuple[tuple[str, str], ...] = ()

    def environ(self, *extra_paths: Path) -> dict[str, str]:
        env = {**os.environ, **dict(self.env), "PYTHONPATH": os.pathsep.join(map(str, (*self.paths, *extra_paths)))}
        env.pop("PYTHONHOME", None)
        return env


def tensorrt(version: str) -> Bindings:
    major = version.split(".")[0]
    stubs = stub_libraries(major)
    library_path = os.pathsep.join(p for p in (str(stubs), os.environ.get("LD_LIBRARY_PATH", "")) if p)
    return Bindings("tensorrt-cu12-bindings", version, "tensorrt", (unpacked("tensorrt-cu12-bindings", version),),
                    (("LD_LIBRARY_PATH", library_path), ("LD_BIND_NOW", "1")))


def cuda(package: str, version: str, module: str) -> Bindings:
    """cuda-python's runtime module; ``CUDA_VISIBLE_DEVICES=""`` keeps any real GPU out of the probe's calls."""
    paths = (unpacked(package, version),)
    if package == "cuda-bindings":
        paths += (unpacked("cuda-pathfinder", CUDA_PATHFINDER),)
    return Bindings(package, version, module, paths, (("CUDA_VISIBLE_DEVICES", ""),))


def _python(bindings: Bindings, *args: str, extra_paths: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``python -S args`` (no site-packages: only these bindings, never an installed TensorRT)."""
    what = f"{bindings.module} from {bindings.package} {bindings.version}"
    return _run([sys.executable, "-S", *args], what, BindingsError, env=bindings.environ(*extra_paths), cwd=ROOT)


@functools.cache
def surface(bindings: Bindings) -> Surface:
    """The real module's API surface, dumped once per package version (and dumper) and cached as JSON."""
    name = f"{bindings.package}-{bindings.version}-{bindings.module}-{_digest(DUMP_SCRIPT)}.json"
    path = cache_dir() / "surfaces" / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        _python(bindings, str(DUMP_SCRIPT), bindings.module, str(tmp))
        os.replace(tmp, path)
    data = json.loads(path.read_text())
    return Surface(f"{bindings.module} {bindings.version}", data["types"])


def probe(bindings: Bindings, kind: str) -> dict[str, str]:
    """What each step of the project's code did against the real bindings (see _trt_api_probe.py)."""
    site = [Path(p) for p in sys.path if p.endswith("-packages")]
    result = _python(bindings, str(PROBE_SCRIPT), kind, extra_paths=(ROOT, *site))
    return json.loads(result.stdout)


# comparing a stand-in with the real API ----------------------------------------------------------

ALLOWED_KINDS = {
    "method": {"method", "class"},
    "class": {"class"},
    "property": {"property"},
    "readonly": {"property", "readonly"},
    "value": {"value", "member", "property", "readonly"},
}
"""For each kind of stand-in attribute, the kinds of real attribute that the same use works on."""
BOOKKEEPING = {"__module__", "__qualname__", "__doc__", "__slots__", "__init__", "__annotations__",
               "__firstlineno__", "__static_attributes__", "__dict__", "__weakref__", "__version__"}


class Surface:
    """One real module's classes (``"Outer.Inner"``, ``""`` for the module): attribute kinds, arities, members."""

    def __init__(self, label: str, types: dict[str, Any]) -> None:
        self.label, self.types = label, types

    def has(self, path: str, name: str | None = None) -> bool:
        return path in self.types and (name is None or name in self.types[path]["attrs"])

    def members(self, path: str) -> list[str]:
        return list(self.types.get(path, {}).get("members") or [])


def fake_kind(owner: type, name: str) -> str:
    value = inspect.getattr_static(owner, name)
    if isinstance(value, property):
        return "property" if value.fset is not None else "readonly"
    if inspect.isclass(value):
        return "class"
    if inspect.isfunction(value):
        return "method"
    if type(value).__name__ == "member_descriptor":
        return "property"
    return "value"


def fake_names(fake: type) -> list[str]:
    """The API a stand-in claims: public names, ``__version__`` and protocol dunders it defines, not hooks."""
    public = {n for n in dir(fake) if not n.startswith("_") or n == "__version__"}
    dunders = {n for cls in fake.__mro__[: fake.__mro__.index(Fake)] for n in vars(cls)
               if n.startswith("__") and n.endswith("__") and n not in BOOKKEEPING}
    return sorted((public | dunders) - fake._hooks)


def _arity(function: Any) -> tuple[int, int | None]:
    params = list(inspect.signature(function).parameters.values())[1:]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return sum(p.default is p.empty for p in params if p.kind is p.POSITIONAL_OR_KEYWORD), None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return sum(p.default is p.empty for p in positional), len(positional)


def _arity_mismatch(function: Any, real: list[list[int | None]]) -> str | None:
    """Why a call the stand-in accepts could fail on the real callable (None when every count fits)."""
    if not real:
        return None
    least, most = _arity(function)
    counts = range(least, (most if most is not None else least) + 1)
    if all(any(low <= n and (high is None or n <= high) for low, high in real) for n in counts):
        return None
    accepted = " or ".join(dict.fromkeys(f"{low}..{'' if high is None else high}" for low, high in real))
    return f"takes {least}..{'' if most is None else most} positional arguments, the real one {accepted}"


def mismatches(fake: type, path: str, real: Surface, mapping: dict[type, str]) -> list[str]:
    """How ``fake`` (a Fake class or an enum) claims more than the real ``path`` offers: missing names, other kinds,
    other arities; ``mapping`` gives the real path of the stand-ins it holds as attributes."""
    label = f"{fake.__name__} ({path or 'module'}) on {real.label}"
    if not real.has(path):
        return [f"{label}: no such class"]
    if issubclass(fake, enum.Enum):
        return [f"{label}: no member {name}" for name in fake.__members__ if name not in real.members(path)]
    entry, problems = real.types[path], []
    for name in fake_names(fake):
        kind, real_kind = fake_kind(fake, name), entry["attrs"].get(name)
        if real_kind is None:
            problems.append(f"{label}: no attribute {name}")
            continue
        if real_kind not in ALLOWED_KINDS[kind] and not name.startswith("__"):
            problems.append(f"{label}: {name} is a {kind} here, a {real_kind} there")
        value = inspect.getattr_static(fake, name)
        nested = f"{path}.{name}" if path else name
        if inspect.isclass(value) and value in mapping and mapping[value] != nested:
            problems.append(f"{label}: {name} is {value.__name__}, which stands in for {mapping[value]}, not {nested}")
        if inspect.isclass(value) and "__init__" in vars(value):
            value = value.__init__
        if inspect.isfunction(value) and not name.startswith("__"):
            signatures = entry["signatures"].get(name) if real_kind == "method" else real.types.get(nested, {}).get("init")
            why = _arity_mismatch(value, signatures or [])
            if why:
                problems.append(f"{label}: {name} {why}")
    return problems
