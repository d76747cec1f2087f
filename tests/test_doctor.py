"""``resnet-edge doctor``: the report on this machine (table and JSON), a faked NVIDIA GPU and Jetson (files and
commands monkeypatched) for the GPU/Jetson fields, the DLA refusal and the engine's JetPack record, and
``doctor --selftest`` proving every CPU format here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _trt_fakes import FakeCudart, FakeTensorRT

from resnet_edge import doctor, machine
from resnet_edge.backends.onnxruntime import probe as ort_probe
from resnet_edge.backends.tensorrt import convert as trt_export
from resnet_edge.backends.tensorrt import probe as trt_probe
from resnet_edge.backends.tensorrt.cuda import GpuInfo
from resnet_edge.errors import DeviceError, InvalidArgumentError
from resnet_edge.registry import BACKENDS, FORMATS, cpu_formats


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resnet_edge.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


# this machine ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report() -> dict:
    done = cli("doctor", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_json_describes_the_machine(report):
    facts = report["machine"]
    assert facts["cpu"] and facts["usable_cores"] >= 1 and facts["memory_gib"] > 0
    expected = {"AVX2", "AVX512-VNNI", "AMX-INT8", "AVX512-BF16"} if facts["architecture"] == "x86_64" else {"NEON dot-product"}
    assert expected <= set(facts["isa"])
    assert report["bug_report"].startswith("resnet-edge doctor --json")


def test_json_has_every_runtime_with_devices_really_checked(report):
    runtimes = {r["runtime"]: r for r in report["runtimes"]}
    assert list(runtimes) == list(BACKENDS)
    for name, runtime in runtimes.items():
        assert set(runtime["devices"]) == set(BACKENDS[name].devices)
        for state in runtime["devices"].values():
            assert {"ok", "detail", "claimed"} <= set(state)
    cpu = runtimes["onnxruntime"]["devices"]["cpu"]
    assert cpu["ok"] is True and "one-node model" in cpu["detail"]
    assert runtimes["tflite"]["devices"]["cpu"]["ok"] is True
    assert runtimes["onnxruntime"]["versions"]["onnxruntime"]


def test_json_says_which_formats_export_and_run_here(report):
    formats = {row["format"]: row for row in report["formats"]}
    assert list(formats) == list(FORMATS)
    for name in ("onnx", "onnx-int8", "tflite-int8"):
        assert formats[name]["export"] is True and "cpu" in formats[name]["runs_on"], formats[name]
    engine = formats["trt"]
    if not engine["runs_on"]:  # no TensorRT here: not exportable, and it says why
        assert engine["export"] is False and any("built where it runs" in r for r in engine["export_blockers"])


def test_table_keeps_install_lines_and_names_the_bug_report():
    done = cli("doctor")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "int8/bf16 instructions" in text and "for a bug report: resnet-edge doctor --json" in text
    assert "pip install 'resnet-edge'" not in text, "Rich swallowed an [extra]"
    for name in BACKENDS:
        assert name in text


def test_selftest_options_need_selftest():
    done = cli("doctor", "--device", "cuda")
    assert done.returncode == 2 and done.stderr.startswith("error: --device") and len(done.stderr.splitlines()) == 1


def test_missing_requirements_reads_the_installed_extras():
    assert doctor.missing_requirements("export") == []
    assert doctor.missing_requirements("no-such-extra") == []


# a faked NVIDIA GPU and Jetson ----------------------------------------------------------------------

ORIN_RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8\n"
THOR_RELEASE = "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64, DATE: Fri Aug  1\n"
SMI_LIST = "NVIDIA Jetson AGX Orin, 8.7, 62841 MiB, 540.4.0\n"
SMI_HEADER = "| NVIDIA-SMI 540.4.0    Driver Version: 540.4.0    CUDA Version: 12.6     |\n"


@pytest.fixture
def fake_jetson(tmp_path, monkeypatch):
    """A Jetson made of files (nv_tegra_release, device-tree model, DLA platform devices) and commands
    (dpkg-query, nvidia-smi) standing in for the real ones."""

    def install(release: str = ORIN_RELEASE, model: str = "NVIDIA Jetson AGX Orin Developer Kit", dla: int = 2,
                core: str = "36.4.3-20250107174145", smi: str = SMI_LIST) -> Path:
        root = tmp_path / "jetson"
        (root / "devices").mkdir(parents=True)
        (root / "nv_tegra_release").write_text(release)
        (root / "model").write_bytes(model.encode() + b"\x00")
        for index in range(dla):
            (root / "devices" / f"158{index * 4}0000.nvdla{index}").mkdir()
        (root / "devices" / "17000000.gpu").mkdir()
        monkeypatch.setattr(machine, "TEGRA_RELEASE", root / "nv_tegra_release")
        monkeypatch.setattr(machine, "DEVICE_TREE_MODEL", root / "model")
        monkeypatch.setattr(machine, "PLATFORM_DEVICES", root / "devices")

        def run(command, timeout=machine.NVIDIA_SMI_TIMEOUT_S):
            if command[0] == "dpkg-query":
                return {"nvidia-l4t-core": core}.get(command[-1])
            if command[0] == "nvidia-smi":
                return smi if len(command) > 1 else SMI_HEADER
            return None

        monkeypatch.setattr(machine, "_run", run)
        return root

    return install


def test_jetson_fields_from_its_files_and_commands(fake_jetson):
    fake_jetson()
    found = machine.jetson()
    assert found == {"model": "NVIDIA Jetson AGX Orin Developer Kit", "l4t": "36.4.3",
                     "l4t_core_package": "36.4.3-20250107174145", "jetpack": "6.2", "dla_cores": 2}
    gpus = machine.nvidia_gpus()
    assert gpus["gpus"] == [{"name": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7", "memory": "62841 MiB",
                             "driver": "540.4.0"}]
    assert gpus["driver_cuda"] == "12.6"


def test_thor_is_jetpack_7_without_dla(fake_jetson):
    fake_jetson(THOR_RELEASE, "NVIDIA Jetson AGX Thor Developer Kit", dla=0, core="38.2.0-20250821")
    found = machine.jetson()
    assert (found["l4t"], found["jetpack"], found["dla_cores"]) == ("38.2.0", "7.x", 0)
    assert machine.has_no_dla(found["model"]) and not machine.has_no_dla("NVIDIA Jetson AGX Orin Developer Kit")


def test_doctor_table_shows_the_jetson(fake_jetson, monkeypatch):
    fake_jetson()
    from resnet_edge.cli.common import out
    from resnet_edge.cli.doctor import _machine_table

    facts = doctor.machine_facts()
    assert facts["jetson"]["jetpack"] == "6.2" and facts["nvidia"]["gpus"][0]["compute_capability"] == "8.7"
    with out.capture() as captured:
        out.print(_machine_table(facts))
    text = captured.get()
    assert "L4T 36.4.3" in text and "JetPack 6.2" in text and "2 DLA core(s)" in text and "NVIDIA Jetson AGX Orin" in text


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """TensorRT and cuda-python stand-ins (tests/_trt_fakes.py, checked against the real APIs) for the probe."""

    def install(dla_cores: int = 0, integrated: bool = False) -> FakeTensorRT:
        trt, cudart = FakeTensorRT(dla_cores), FakeCudart(integrated)
        monkeypatch.setattr(trt_probe, "import_tensorrt", lambda: trt)
        monkeypatch.setattr(trt_probe, "cuda_runtime", lambda: cudart)
        return trt

    return install


def test_tensorrt_probe_on_a_faked_orin_offers_dla_to_the_selftest(fake_jetson, fake_tensorrt):
    fake_jetson()
    fake_tensorrt(dla_cores=2, integrated=True)
    found = trt_probe.probe()
    assert found["devices"]["cuda"]["ok"] and found["devices"]["jetson"]["ok"]
    assert found["facts"]["tensorrt"] == "10.8.0" and found["facts"]["dla_cores"] == 2
    assert found["facts"]["jetson"]["jetpack"] == "6.2" and found["facts"]["gpu"]["integrated"] is True
    assert {"options": {"precision": "fp16", "dla_core": 0}, "devices": ["jetson"]} in found["selftest"]["trt"]


def test_tensorrt_probe_on_a_faked_discrete_gpu(fake_tensorrt):
    fake_tensorrt()
    found = trt_probe.probe()
    assert found["devices"]["cuda"]["ok"] and not found["devices"]["jetson"]["ok"]
    assert all("dla_core" not in v["options"] for v in found["selftest"]["trt"])


def test_tensorrt_probe_without_tensorrt_names_the_install_line(fake_jetson, monkeypatch):
    from resnet_edge.errors import MissingDependencyError

    fake_jetson()

    def missing():
        raise MissingDependencyError("tensorrt is not installed")

    monkeypatch.setattr(trt_probe, "import_tensorrt", missing)
    found = trt_probe.probe()
    assert not found["devices"]["jetson"]["ok"]
    assert found["missing"] and "--system-site-packages" in found["missing"][0] and "[jetpack6]" in found["missing"][0]


def test_cuda_python_newer_than_the_driver_is_named():
    assert "resnet-edge[jetpack6]" in trt_probe.cuda_mismatch({"driver_cuda": "12.6", "cuda_python_runtime": "13.0"},
                                                              {"jetpack": "6.2"})
    assert "cuda-python>=12,<13" in trt_probe.cuda_mismatch({"driver_cuda": "12.8", "cuda_python_runtime": "13.1"}, None)
    assert trt_probe.cuda_mismatch({"driver_cuda": "13.0", "cuda_python_runtime": "13.0"}, None) is None


# the DLA refusal and the engine's JetPack record ----------------------------------------------------

@pytest.fixture
def fake_builder(monkeypatch):
    def install(gpu: GpuInfo, dla_cores: int = 0) -> list:
        trt = FakeTensorRT(dla_cores)
        exported: list = []
        monkeypatch.setattr(trt_export, "import_tensorrt", lambda: trt)
        monkeypatch.setattr(trt_export, "gpu_info", lambda: gpu)

        def fake_onnx(job, precision, path):
            exported.append(precision)
            path.write_bytes(b"ONNX")
            return job.metadata.replace(format="onnx", precision=precision)

        monkeypatch.setattr(trt_export, "_export_onnx", fake_onnx)
        return exported

    return install


def _engine(tmp_path: Path, **options):
    from resnet_edge.metadata import ModelMetadata
    from resnet_edge.runtime import ExportJob

    defaults = {name: option.default for name, option in FORMATS["trt"].options.items()}
    job = ExportJob(None, ModelMetadata("tiny", (4, 4, 3), labels=tuple("abcdefghij")), tmp_path / "out.engine",
                    FORMATS["trt"], {**defaults, **options}, progress=lambda message: None)
    return trt_export.convert(job)


def test_dla_core_on_a_discrete_gpu_is_one_line_before_any_work(fake_builder, tmp_path):
    exported = fake_builder(GpuInfo("NVIDIA H100 80GB HBM3", "9.0", False))
    with pytest.raises(DeviceError, match=r"^--dla-core 0: NVIDIA H100 80GB HBM3 is a discrete GPU, which has no "
                                          r"DLA") as info:
        _engine(tmp_path, dla_core=0)
    assert "\n" not in str(info.value) and exported == []


def test_dla_core_on_thor_says_thor_has_none(fake_builder, fake_jetson, tmp_path):
    fake_jetson(THOR_RELEASE, "NVIDIA Jetson AGX Thor Developer Kit", dla=0)
    exported = fake_builder(GpuInfo("NVIDIA Thor", "11.0", True))
    with pytest.raises(DeviceError, match=r"NVIDIA Jetson AGX Thor Developer Kit has no DLA \(Thor"):
        _engine(tmp_path, dla_core=0)
    assert exported == []


def test_dla_core_beyond_the_orins_cores_is_refused_before_work(fake_builder, fake_jetson, tmp_path):
    fake_jetson()
    exported = fake_builder(GpuInfo("Orin", "8.7", True), dla_cores=2)
    with pytest.raises(InvalidArgumentError, match=r"DLA cores 0\.\.1"):
        _engine(tmp_path, dla_core=2)
    assert exported == []


def test_engine_built_on_a_jetson_records_its_jetpack(fake_builder, fake_jetson, tmp_path):
    fake_jetson()
    fake_builder(GpuInfo("Orin", "8.7", True), dla_cores=2)
    metadata = _engine(tmp_path, dla_core=1, precision="fp16")
    assert metadata.extra["jetson"] == {"model": "NVIDIA Jetson AGX Orin Developer Kit", "l4t": "36.4.3",
                                        "jetpack": "6.2"}
    assert metadata.extra["tensorrt"]["dla_core"] == 1


def test_engine_built_elsewhere_records_no_jetson(fake_builder, tmp_path):
    fake_builder(GpuInfo("NVIDIA L4", "8.9", False))
    assert "jetson" not in _engine(tmp_path).extra


# ONNX Runtime's CUDA build ---------------------------------------------------------------------------

def test_cuda_libraries_follow_the_build_and_never_crash():
    assert {"libcudart.so.13", "libcublas.so.13", "libcudnn.so.9", "libnvrtc.so.13", "libcufft.so.12"} <= set(
        ort_probe.cuda_libraries(13))
    assert {"libcudart.so.12", "libcufft.so.11"} <= set(ort_probe.cuda_libraries(12))
    status = ort_probe.library_status(("libc.so.6", "libresnet_edge_no_such_library.so.1"))
    assert status == {"libc.so.6": "loads", "libresnet_edge_no_such_library.so.1": "missing"}


def test_onnxruntime_gpu_build_reports_the_cuda_it_wants(monkeypatch):
    from onnxruntime.capi import build_and_package_info as info

    monkeypatch.setattr(info, "package_name", "onnxruntime-gpu", raising=False)
    monkeypatch.setattr(info, "cuda_version", "13.0", raising=False)
    monkeypatch.setattr(ort_probe, "library_status", lambda names: dict.fromkeys(names, "missing"))
    found = ort_probe.probe()
    assert found["facts"]["cuda_wanted"] == "13.0"
    assert "libcudart.so.13" in found["facts"]["cuda_libraries"]
    assert ort_probe.CUDA_LIBRARIES_INSTALL in found["missing"]
    assert found["devices"]["cpu"]["ok"] is True


# the self-test ---------------------------------------------------------------------------------------

def test_tiny_resnet_leaves_the_depth_table_as_it_was():
    from resnet_edge.models import SPECS

    before = dict(SPECS)
    model = doctor.tiny_resnet()
    assert dict(SPECS) == before and model.output_shape == (None, 10)


def test_selftest_refuses_an_unknown_device():
    with pytest.raises(InvalidArgumentError, match="unknown device 'tpu'"):
        doctor.selftest(device="tpu")


@pytest.fixture(scope="module")
def selftest_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("selftest")
    return doctor.selftest(out=folder, latency_s=0.05), folder


@pytest.mark.slow
def test_selftest_passes_every_cpu_format_here(selftest_folder):
    result, folder = selftest_folder
    assert result.passed, [(r.name, r.device, r.detail) for r in result.failures]
    passed = {r.format for r in result.rows if r.status == "pass" and r.device == "cpu"}
    installed = {name for name in cpu_formats()
                 if doctor.claimed_devices(BACKENDS[FORMATS[name].backend])[1] is None}
    assert passed == installed, {r.name: r.detail for r in result.rows if r.format in installed - passed}
    for row in (r for r in result.rows if r.status == "pass"):
        assert row.p50_ms and row.p50_ms > 0 and row.parity["passed"] and row.export_s is not None
    skipped = {r.format: r.detail for r in result.rows if r.status == "skip"}
    assert set(skipped) == set(FORMATS) - installed, skipped
    assert (folder / doctor.REFERENCE_FILE).is_file() and (folder / doctor.LOGITS_REFERENCE_FILE).is_file()
    assert json.loads(json.dumps(result.to_dict()))["passed"] is True


@pytest.mark.slow
def test_selftest_from_a_folder_needs_no_export(selftest_folder, tmp_path):
    """Artifacts carried from another machine run against the saved Keras outputs (logits for an int8 file)."""
    _, folder = selftest_folder
    for name in (doctor.REFERENCE_FILE, doctor.LOGITS_REFERENCE_FILE, "selftest_onnx_int8.onnx",
                 "selftest_tflite.tflite"):
        shutil.copy(folder / name, tmp_path / name)
    result = doctor.selftest_from(tmp_path, latency_s=0.05)
    assert result.passed and {(r.name, r.device, r.status) for r in result.rows} == {
        ("selftest_onnx_int8.onnx", "cpu", "pass"), ("selftest_tflite.tflite", "cpu", "pass")}


@pytest.mark.slow
def test_selftest_from_a_folder_runs_where_tensorflow_cannot_be_imported(selftest_folder, tmp_path):
    """The board (or the GPU machine) that proves the artifacts has no TensorFlow: nothing on that path imports it."""
    _, folder = selftest_folder
    for name in (doctor.REFERENCE_FILE, doctor.LOGITS_REFERENCE_FILE, "selftest_onnx_int8.onnx"):
        shutil.copy(folder / name, tmp_path / name)
    blocked = ("import sys; sys.modules.update(dict.fromkeys(('tensorflow', 'keras', 'tf_keras'))); "
               "from resnet_edge.cli import main; sys.argv[0] = 'resnet-edge'; main()")
    done = subprocess.run([sys.executable, "-c", blocked, "doctor", "--selftest", "--from", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert [(r["name"], r["status"]) for r in result["rows"]] == [("selftest_onnx_int8.onnx", "pass")], result


@pytest.mark.slow
def test_selftest_exits_1_when_nothing_ran_on_the_asked_device(selftest_folder, tmp_path):
    _, folder = selftest_folder
    for name in (doctor.REFERENCE_FILE, "selftest_onnx.onnx"):
        shutil.copy(folder / name, tmp_path / name)
    done = cli("doctor", "--selftest", "--from", str(tmp_path), "--device", "cuda", "--json")
    result = json.loads(done.stdout)
    if any(r["status"] != "skip" for r in result["rows"]):
        pytest.skip("this machine has a CUDA device for ONNX Runtime")
    assert done.returncode == 1 and result["passed"] is False
    assert result["rows"][0]["detail"].startswith("needs cuda")
