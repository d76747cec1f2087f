#!/usr/bin/env bash
# tools/device_selftest.sh: prove resnet-edge on a lent NVIDIA GPU machine (issue 23, item 8).
#
# STATUS: NOT YET RUN ON A GPU. The session that wrote it was lent no device machine. `prepare` ran in full on the
# CPU machine (AMD EPYC, 2 cores); `part` 1-5 and `run` ran there on a copy of the tree with a Python 3.12 venv and
# no GPU: the bundle rebuilt and verified, the wheels installed offline, doctor and the CPU control ran, every CUDA
# step failed with its reason, and `run` wrote its summary and exited 0. The first real run is the proof.
#
# Purpose: the device machine (NVIDIA H100/H200, CUDA 13 driver and toolkit, Python 3.12 with PyTorch, cuda-bindings
# and a CPU-only onnxruntime; NO TensorFlow, NO TensorRT, NO internet) runs `resnet-edge doctor` and
# `resnet-edge doctor --selftest --from` on ONNX artifacts exported here, with onnxruntime-gpu brought in as wheels.
#
# Steps:
#   1. HERE (the CPU machine with TensorFlow and PyPI):   tools/device_selftest.sh prepare [DIR]
#      (DIR: default tools/device, git-ignored by tools/device/.gitignore; it must be inside the repository)
#      - exports the artifacts: doctor --selftest --formats onnx,onnx-fp16,onnx-int8 --out DIR/artifacts --json
#        > DIR/cpu_selftest.json, then runs them as the device will (--from, TensorFlow hidden from imports) and
#        stops if that fails (FORCE=1 bundles anyway): a --from that needs TensorFlow would waste the GPU slot;
#      - downloads into DIR/cache (kept: a second prepare downloads only what changed) the cp312 manylinux x86_64
#        wheels of onnxruntime-gpu>=1.27 (the CUDA 13 build), onnx (the onnxruntime probe builds a one-node model
#        with it) and [project].dependencies, builds resnet-edge's wheel from the tree, and takes into DIR/wheels
#        exactly the set that `pip install --no-index 'resnet-edge[gpu]' onnx` resolves to for Python 3.12 (pip's
#        dry run with the device's tags: the offline install is checked here before any device time is spent);
#      - splits every wheel over PART_MIB (58) into DIR/parts/NAME.partNN (`split -b`), sorts everything into
#        DIR/call01, DIR/call02, ... (tools/device_selftest.py: each under CALL_MIB = 60 MiB, so a call stays under
#        the tool's 64 MiB with the ~2.5 MiB working tree) and writes DIR/manifest.txt (per call: the one folder it
#        carries and every file with its size; per wheel: size, sha256, number of parts);
#      - prints the device calls to make.
#   2. ON THE DEVICE, one call per folder but the last:   bash tools/device_selftest.sh part N
#      copies the carried DIR/callNN into /tmp/resnet-edge-device/ (outside the repository, which each call's tree
#      replaces), checks every file's size against the manifest (exit 1 when the folder did not come) and prints
#      what the stash holds. A stash of another bundle (a different manifest) is wiped first.
#   3. ON THE DEVICE, the last call:   bash tools/device_selftest.sh run
#      stashes the last folder, rebuilds the wheels from their parts (sha256 against the manifest), records
#      nvidia-smi, the host Python (torch with its CUDA and cuDNN, pip list) and which CUDA/cuDNN/TensorRT libraries
#      load, makes a venv with --system-site-packages (keeping the machine's CUDA/cuDNN pip packages; a host Python
#      that is itself a venv gets its site folders added by a .pth), installs the wheels (--no-index
#      --find-links) and runs, each step under `timeout` within one 530 s budget:
#        resnet-edge doctor --json                                          > $OUT/doctor.json
#        resnet-edge doctor --selftest --from ARTIFACTS --device cuda --json  > $OUT/selftest_cuda.json
#        ... --device tensorrt-ep   > $OUT/selftest_tensorrt-ep.json   EXPECTED TO FAIL: no TensorRT on the machine
#            (onnxruntime-gpu lists its TensorRT provider, whose libnvinfer.so.10 cannot load)
#        ... --device cpu           > $OUT/selftest_cpu.json           the control: the same artifacts on ORT's CPU
#      It writes one line per step to $OUT/summary.txt (ok / FAILED / TIMEOUT / SKIPPED, with why) and ALWAYS exits
#      0, so the results come back even when a step fails. Lines that onnxruntime print()s to stdout before the JSON
#      ("EP Error ... Falling back", when a provider cannot be created) are cut out of the JSON files and kept in
#      NAME.json.stdout.txt.
#
# The device tool copies only tracked files and untracked files git does not ignore, plus the paths named in a call's
# `carry` list (8 paths at most, 64 MiB in all with the tree). DIR is git-ignored, so EVERY call must name its part
# folder in `carry`; one folder per call keeps that to one path. Make the calls back to back: the machine goes back
# after ~30 s idle (the stash in /tmp goes with it: then start again at call 1), and all calls, the machine's start
# included, share the session's 15 minutes of device time. The bundle of this writing is 340.5 MiB (onnxruntime-gpu
# 1.31.1: 243.7 MiB in 5 parts; opencv-python-headless 60.8 MiB in 2; numpy 15.0; onnx 8.5; pillow 6.8; 18 small
# ones): 6 calls. `prepare` prints the exact list:
#   run(command="bash tools/device_selftest.sh part 1", carry=["tools/device/call01"], timeout_s=120)
#   run(command="bash tools/device_selftest.sh part 2", carry=["tools/device/call02"], timeout_s=120)
#   run(command="bash tools/device_selftest.sh part 3", carry=["tools/device/call03"], timeout_s=120)
#   run(command="bash tools/device_selftest.sh part 4", carry=["tools/device/call04"], timeout_s=120)
#   run(command="bash tools/device_selftest.sh part 5", carry=["tools/device/call05"], timeout_s=120)
#   run(command="bash tools/device_selftest.sh run",    carry=["tools/device/call06"], timeout_s=600)
# (a DIR other than tools/device: prefix each command with DEVICE_DIR=DIR, as prepare prints). The results come
# back as the last call's files: summary.txt first, then doctor.json, selftest_*.json, libraries.txt,
# nvidia-smi.txt, host_packages.txt, venv_packages.txt and one NAME.log per step.
#
# CUDA libraries: onnxruntime-gpu>=1.27 wants the CUDA 13 runtime (cudart, cublas/cublasLt, curand, cufft, nvrtc)
# and cuDNN 9. The machine's CUDA 13 toolkit should give the CUDA ones (`run` puts /usr/local/cuda/lib64 and every
# site-packages/nvidia/*/lib of the host Python on LD_LIBRARY_PATH); cuDNN may come only with PyTorch's pip packages.
# They are too big to carry this way (PyPI, manylinux x86_64): nvidia-cudnn-cu13 9.28.1.4 is 516.8 MB,
# nvidia-cublas 13.10.0.20 444.3 MB, nvidia-cufft 12.5.0.14 165.1 MB, nvidia-curand 10.4.5.25 77.1 MB,
# nvidia-cuda-nvrtc 13.5.37 58.2 MB, nvidia-cuda-runtime 13.5.37 2.5 MB (cuDNN alone would be 9 more calls), so
# the bundle leaves them out: a missing one shows in $OUT/libraries.txt and in doctor.json (onnxruntime's
# cuda_libraries and its install line).
#
# Settings (environment): PART_MIB (58), CALL_MIB (60), PREPARE_PYTHON and RESNET_EDGE (here; default the
# repository's .venv), FORCE (bundle even when --from fails without TensorFlow here), DEVICE_DIR (tools/device),
# DEVICE_PYTHON (on the device: the Python 3.12 with torch; default python3.12, then python3), DEVICE_STASH
# (/tmp/resnet-edge-device), DEVICE_SELFTEST_BUDGET_S (530), OUT (where results go; the device tool sets it,
# else DEVICE_STASH/out).

set -uo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(cd "$(dirname "$SELF")/.." && pwd)"
DEVICE_DIR="${DEVICE_DIR:-tools/device}"  # the bundle, relative to the repository root
STASH="${DEVICE_STASH:-/tmp/resnet-edge-device}"
PART_MIB="${PART_MIB:-58}"
CALL_MIB="${CALL_MIB:-60}"
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux2014_x86_64)  # pip does not
# widen manylinux_2_28 to older glibc tags by itself (nvidia-cudnn-cu13 is tagged manylinux_2_27 only)
CUDA_SONAMES=(libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcufft.so.12
              libnvrtc.so.13 libcudnn.so.9 libnvinfer.so.10)

die() { echo "error: $*" >&2; exit 2; }

# --- 1. prepare (here) ---------------------------------------------------------------------------------------------

prepare() {
    local dir="${1:-$ROOT/$DEVICE_DIR}"
    mkdir -p "$dir" && dir="$(cd "$dir" && pwd)" || die "cannot make $dir"
    case "$dir/" in "$ROOT"/*) ;; *) die "$dir is outside the repository $ROOT: the device tool carries only paths in the working tree";; esac
    [ -f "$dir/.gitignore" ] || [ "$dir" != "$ROOT/$DEVICE_DIR" ] || die "$dir/.gitignore is missing: the bundle would travel with every call"
    [ "$dir" = "$ROOT/$DEVICE_DIR" ] || echo "note: $dir must be git-ignored, or the whole bundle travels with every call"
    local py="${PREPARE_PYTHON:-$ROOT/.venv/bin/python}"
    local cli="${RESNET_EDGE:-$ROOT/.venv/bin/resnet-edge}"
    [ -x "$py" ] || py="$(command -v python3)" || die "no Python"
    [ -x "$cli" ] || cli="$(command -v resnet-edge)" || die "no resnet-edge (with the export extra) to export with"
    cd "$ROOT" || die "cannot enter $ROOT"  # the checks below import the tree's code, the code the wheel is built from
    rm -rf "$dir/artifacts" "$dir/wheels" "$dir/parts" "$dir"/call[0-9][0-9] "$dir/manifest.txt" "$dir"/cpu_*
    mkdir -p "$dir/wheels" "$dir/parts" "$dir/cache"

    echo "== 1/5 exporting the self-test artifacts and checking them on this CPU"
    "$cli" doctor --selftest --formats onnx,onnx-fp16,onnx-int8 --out "$dir/artifacts" --json > "$dir/cpu_selftest.json"
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        [ -f "$dir/artifacts/reference.npz" ] || die "the CPU self-test failed (exit $rc) and left no reference.npz"
        echo "warning: the CPU self-test failed (exit $rc): see $dir/cpu_selftest.json; the artifacts still travel"
    fi
    "$py" - "$dir/cpu_selftest.json" <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))
print("  CPU:", "PASS" if result["passed"] else "FAIL", "; ".join(f"{r['name']} {r['status']}" for r in result["rows"]))
EOF

    echo "   and running them as the device will: --from, with TensorFlow hidden"
    "$py" - "$dir/artifacts" > "$dir/cpu_from_selftest.json" 2> "$dir/cpu_from_selftest.log" <<'EOF'
import sys


class NoTensorFlow:  # as on the device: importing TensorFlow or Keras fails
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NoTensorFlow())
from resnet_edge.cli import main
sys.argv = ["resnet-edge", "doctor", "--selftest", "--from", sys.argv[1], "--device", "cpu", "--json"]
main()
EOF
    rc=$?
    "$py" - "$dir/cpu_from_selftest.json" <<'EOF'
import json, sys
try:
    result = json.load(open(sys.argv[1]))
except ValueError:
    sys.exit(print("  --from without TensorFlow: no JSON result"))
print("  --from without TensorFlow:", "PASS" if result["passed"] else "FAIL",
      "; ".join(f"{r['name']} {r['status']}" + ("" if r["status"] == "pass" else f" ({r['detail'][:80]})")
                for r in result["rows"]))
EOF
    if [ "$rc" -ne 0 ] && [ -z "${FORCE:-}" ]; then
        die "'doctor --selftest --from' fails here without TensorFlow (exit $rc; $dir/cpu_from_selftest.json): it would fail on the device too. Fix that first, or FORCE=1 to bundle anyway"
    fi

    echo "== 2/5 downloading the wheels for Python 3.12, manylinux x86_64"
    local listed deps=() platform_args=() p
    listed="$("$py" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$ROOT/pyproject.toml")" \
        || die "cannot read [project].dependencies from pyproject.toml (needs Python 3.11+)"
    mapfile -t deps <<< "$listed"
    for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
    # DIR/cache keeps what was downloaded (a second prepare downloads only what changed); the bundle takes from it
    # exactly the set an offline install on the device resolves to (pip's dry run with the device's tags)
    "$py" -m pip download --disable-pip-version-check --progress-bar off --only-binary=:all: --python-version 3.12 \
        "${platform_args[@]}" -d "$dir/cache" "onnxruntime-gpu>=1.27" onnx "${deps[@]}" || die "pip download failed"
    echo "== 3/5 building resnet-edge's wheel and resolving the device's offline install"
    rm -f "$dir"/cache/resnet_edge-*.whl
    "$py" -m pip wheel --disable-pip-version-check --no-deps "$ROOT" -w "$dir/cache" > "$dir/wheel_build.log" 2>&1 \
        || die "pip wheel failed: see $dir/wheel_build.log"
    local target; target="$(mktemp -d)"
    "$py" -m pip install --isolated --disable-pip-version-check --dry-run --quiet --report "$dir/resolve.json" \
        --no-index --find-links "$dir/cache" --only-binary=:all: --python-version 3.12 "${platform_args[@]}" \
        --target "$target" "resnet-edge[gpu]" onnx || die "the wheels do not resolve offline for Python 3.12 (above)"
    rmdir "$target"
    "$py" - "$dir/resolve.json" <<'EOF' | while read -r wheel; do ln -f "$wheel" "$dir/wheels/" 2>/dev/null || cp "$wheel" "$dir/wheels/"; done
import json, sys
from urllib.parse import unquote, urlparse
for item in json.load(open(sys.argv[1]))["install"]:
    print(unquote(urlparse(item["download_info"]["url"]).path))
EOF
    (cd "$dir/wheels" && sha256sum -- *.whl > SHA256SUMS)
    echo "  $(grep -c . "$dir/wheels/SHA256SUMS") wheels for the device"

    echo "== 4/5 splitting every wheel over $PART_MIB MiB"
    local wheel
    for wheel in "$dir"/wheels/*.whl; do
        if [ "$(stat -c %s "$wheel")" -gt $((PART_MIB * 1048576)) ]; then
            split -b "${PART_MIB}M" -d -a 2 "$wheel" "$dir/parts/$(basename "$wheel").part"
            echo "  $(basename "$wheel"): $(find "$dir/parts" -name "$(basename "$wheel").part*" | wc -l) parts"
        fi
    done

    echo "== 5/5 sorting into calls of at most $CALL_MIB MiB"
    local calls
    calls="$("$py" "$ROOT/tools/device_selftest.py" pack "$dir" --repo "$ROOT" --call-mib "$CALL_MIB")" || die "packing failed"
    echo
    echo "wheels (MiB):"
    (cd "$dir/wheels" && stat -c '%s %n' -- *.whl | awk '{printf "  %8.1f  %s\n", $1 / 1048576, $2; all += $1}
                                                        END {printf "  %8.1f  in all\n", all / 1048576}')
    echo
    echo "device calls ($calls; make them back to back: the machine goes back after ~30 s idle):"
    local n carry bytes prefix=""
    [ "$dir" = "$ROOT/$DEVICE_DIR" ] || prefix="DEVICE_DIR=${dir#"$ROOT"/} "
    while read -r _ n carry bytes; do
        if [ "$n" -lt "$calls" ]; then
            printf '  %d. run(command="%sbash tools/device_selftest.sh part %d", carry=["%s"], timeout_s=120)   # %s MiB\n' \
                "$n" "$prefix" "$n" "$carry" "$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')"
        else
            printf '  %d. run(command="%sbash tools/device_selftest.sh run", carry=["%s"], timeout_s=600)   # %s MiB\n' \
                "$n" "$prefix" "$carry" "$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')"
        fi
    done < <(grep '^call ' "$dir/manifest.txt")
    echo "results: the last call's files: summary.txt, doctor.json, selftest_cuda.json, selftest_tensorrt-ep.json (expected to fail: no TensorRT), selftest_cpu.json, *.log"
}

# --- 2. part N (on the device) -------------------------------------------------------------------------------------

# stash_call N: copy the carried call folder into the stash (a different bundle's stash is wiped first) and check it.
stash_call() {
    local n="$1" src
    src="$ROOT/$DEVICE_DIR/$(printf 'call%02d' "$n")"
    if [ ! -d "$src" ]; then
        echo "call $n: $src is not in the tree: name $DEVICE_DIR/$(printf 'call%02d' "$n") in this call's carry"
        return 1
    fi
    if [ -f "$STASH/bundle/manifest.txt" ] && ! cmp -s "$src/manifest.txt" "$STASH/bundle/manifest.txt"; then
        echo "the stash held another bundle: wiped"
        rm -rf "$STASH/bundle" "$STASH/received"
    fi
    mkdir -p "$STASH/bundle" "$STASH/received"
    cp -a "$src/." "$STASH/bundle/" || { echo "call $n: copying into $STASH failed"; return 1; }
    local size path actual bad=0
    while read -r _ _ size path; do
        actual="$(stat -c %s "$STASH/bundle/$path" 2>/dev/null || echo missing)"
        if [ "$actual" != "$size" ]; then echo "call $n: $path is $actual bytes, the manifest says $size"; bad=1; fi
    done < <(awk -v n="$n" '$1 == "item" && $2 == n' "$STASH/bundle/manifest.txt")
    [ "$bad" -eq 0 ] || return 1
    touch "$STASH/received/$n"
    echo "call $n: stashed $(awk -v n="$n" '$1 == "item" && $2 == n' "$STASH/bundle/manifest.txt" | wc -l) files"
}

holdings() {
    local calls have=() missing=() n
    calls="$(awk '$1 == "calls" {print $2}' "$STASH/bundle/manifest.txt" 2>/dev/null)"
    [ -n "$calls" ] || { echo "the stash $STASH holds no bundle"; return 1; }
    for n in $(seq 1 "$calls"); do
        if [ -e "$STASH/received/$n" ]; then have+=("$n"); else missing+=("$n"); fi
    done
    echo "stash $STASH: calls ${have[*]:-none} of $calls received$([ ${#missing[@]} -eq 0 ] || echo "; still to come: ${missing[*]}"); $(du -sh "$STASH/bundle" | cut -f1) held"
    [ ${#missing[@]} -eq 0 ]
}

part() {
    [[ "${1:-}" =~ ^[0-9]+$ ]] || die "usage: $0 part N"
    stash_call "$1"
    local rc=$?
    holdings
    [ -d "$STASH/bundle" ] && (cd "$STASH/bundle" && find wheels parts -type f -printf '  %12s  %p\n' 2>/dev/null | sort -k2)
    return "$rc"
}

# --- 3. run (on the device, the last call) ---------------------------------------------------------------------------

# Each step runs as `bash tools/device_selftest.sh _step NAME` under timeout, its output in $OUT/NAME.log; its last
# line starting with "DETAIL: " goes into the summary. Steps hand facts on through $STATE (sourced by the next ones).

say() { echo "DETAIL: $*"; }

step_bundle() {
    local manifest="$STASH/bundle/manifest.txt" name size digest parts count bad=0 rebuilt=0
    local held; held="$(holdings)" || { echo "$held"; say "${held#*: } (the install step will fail)"; return 1; }
    echo "$held"
    mkdir -p "$STASH/bundle/wheels"
    while read -r _ name size digest parts; do
        if [ "$parts" -gt 0 ]; then
            count="$(find "$STASH/bundle/parts" -name "$name.part*" | wc -l)"
            [ "$count" -eq "$parts" ] || { echo "$name: $count of $parts parts"; bad=1; continue; }
            cat "$STASH/bundle/parts/$name".part* > "$STASH/bundle/wheels/$name"
            rebuilt=$((rebuilt + 1))
        fi
        if [ "$(sha256sum < "$STASH/bundle/wheels/$name" | cut -d' ' -f1)" != "$digest" ]; then
            echo "$name: sha256 differs from the manifest"; bad=1
        fi
    done < <(awk '$1 == "wheel"' "$manifest")
    local wheels; wheels="$(awk '$1 == "wheel"' "$manifest" | wc -l)"
    [ "$bad" -eq 0 ] || { say "wheels damaged or missing (above)"; return 1; }
    say "$wheels wheels verified by sha256 ($rebuilt rebuilt from parts)"
}

step_gpu() {
    command -v nvidia-smi > /dev/null || { say "no nvidia-smi"; return 1; }
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
    local query
    query="$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1)" || { say "nvidia-smi failed: $query"; return 1; }
    say "$(echo "$query" | paste -sd ';'); $(grep -o 'CUDA Version: [0-9.]*' "$OUT/nvidia-smi.txt" | head -1)"
}

step_host_python() {
    local py="" candidate version
    for candidate in ${DEVICE_PYTHON:-} python3.12 python3 python; do
        command -v "$candidate" > /dev/null || continue
        version="$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" || continue
        [ -n "$py" ] || py="$(command -v "$candidate")"
        if [ "$version" = "3.12" ]; then py="$(command -v "$candidate")"; break; fi
    done
    [ -n "$py" ] || { say "no Python found"; return 1; }
    echo "HOST_PY='$py'" >> "$STATE"
    "$py" -c 'import site, sysconfig
paths = site.getsitepackages() + [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
print("\n".join(dict.fromkeys(paths)))' > "$STASH/host_sites.txt"
    "$py" -m pip list --disable-pip-version-check 2>/dev/null > "$OUT/host_packages.txt"
    local torch
    torch="$("$py" -c 'import torch; print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, GPU {torch.cuda.is_available()})")' 2>&1 | tail -1)"
    local ort
    ort="$(grep -i -E '^onnxruntime' "$OUT/host_packages.txt" | tr -s ' ' | paste -sd ',')"
    say "$py ($("$py" -V 2>&1)); $torch; host onnxruntime: ${ort:-none}; packages in host_packages.txt"
    [ "$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "3.12" ] || { echo "the wheels are for Python 3.12"; return 1; }
}

step_cuda_libraries() {
    local dirs=() d site
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 /usr/local/cuda-13*/targets/x86_64-linux/lib; do
        [ -d "$d" ] && dirs+=("$(readlink -f "$d")")
    done
    while read -r site; do
        for d in "$site"/nvidia/*/lib "$site"/nvidia/*/lib64 "$site"/tensorrt_libs; do
            compgen -G "$d/*.so*" > /dev/null && dirs+=("$d")
        done
    done < "$STASH/host_sites.txt"
    local path; path="$(printf '%s\n' "${dirs[@]}" | awk 'NF && !seen[$0]++' | paste -sd ':')"
    [ -z "$path" ] || echo "export LD_LIBRARY_PATH='$path'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" >> "$STATE"
    # shellcheck disable=SC1090
    source "$STATE"
    { echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; echo "/usr/local/cuda -> $(readlink -f /usr/local/cuda 2>/dev/null || echo none)"; } > "$OUT/libraries.txt"
    local name loads=() missing=() where
    for name in "${CUDA_SONAMES[@]}"; do
        if "$HOST_PY" -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1])' "$name" 2>/dev/null; then
            loads+=("$name")
            where="$(ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n {print $NF; exit}')"
            echo "$name: loads ${where:-(from LD_LIBRARY_PATH)}" >> "$OUT/libraries.txt"
        else
            missing+=("$name"); echo "$name: MISSING" >> "$OUT/libraries.txt"
        fi
    done
    say "loads: ${loads[*]:-none}; missing: ${missing[*]:-none}$([[ " ${missing[*]} " == *" libnvinfer.so.10 "* ]] && echo ' (no TensorRT: expected)')"
    [[ " ${missing[*]} " != *" libcudnn.so.9 "* && " ${missing[*]} " != *" libcudart.so.13 "* ]]
}

step_venv() {
    local venv="$STASH/venv" how="with pip"
    rm -rf "$venv"
    if ! "$HOST_PY" -m venv --system-site-packages "$venv"; then
        rm -rf "$venv"
        "$HOST_PY" -m venv --without-pip --system-site-packages "$venv" || { say "python -m venv failed"; return 1; }
        how="without pip (no ensurepip): the host's pip installs into it"
    fi
    echo "VENV='$venv'" >> "$STATE"
    # a host Python that is itself a venv hides its packages (torch, the nvidia-* libraries) from a venv made from it
    local inner site added=0 own
    inner="$("$venv/bin/python" -c 'import sys; print("\n".join(sys.path))')"
    own="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    while read -r site; do
        if [ -d "$site" ] && ! grep -qxF "$site" <<< "$inner"; then echo "$site" >> "$own/_resnet_edge_host.pth"; added=$((added + 1)); fi
    done < "$STASH/host_sites.txt"
    say "$venv made $how, --system-site-packages$([ "$added" -eq 0 ] || echo "; $added host site folder(s) added by a .pth")"
}

step_install() {
    local pip=("$VENV/bin/python" -m pip)
    "$VENV/bin/python" -m pip --version > /dev/null 2>&1 || pip=("$HOST_PY" -m pip --python "$VENV/bin/python")
    "${pip[@]}" install --isolated --no-index --find-links "$STASH/bundle/wheels" --disable-pip-version-check \
        --no-input --progress-bar off "resnet-edge[gpu]" onnx || { say "pip install failed (see install.log)"; return 1; }
    "${pip[@]}" list --isolated --disable-pip-version-check > "$OUT/venv_packages.txt" 2>&1
    local ort
    ort="$("$VENV/bin/python" -c 'import onnxruntime as o; print(f"onnxruntime {o.__version__} from {o.__file__}; providers {o.get_available_providers()}")' 2>&1 | tail -1)"
    say "$ort"
}

summarize() {  # summarize doctor|selftest FILE: one line; stray stdout before the JSON goes to FILE.stdout.txt
    "$VENV/bin/python" - "$@" <<'EOF' 2>&1 | tail -1
import json, sys
from pathlib import Path
kind, path = sys.argv[1], Path(sys.argv[2])
text = path.read_text() if path.is_file() else ""
lines = text.splitlines(keepends=True)
start = next((i for i, line in enumerate(lines) if line.rstrip() == "{"), None)
if start is None:
    sys.exit(print(f"no JSON in {path.name} ({len(lines)} lines of output)"))
note = ""
if start:  # e.g. onnxruntime's "EP Error ... Falling back" print() when a provider cannot be created
    path.with_name(path.name + ".stdout.txt").write_text(text)
    path.write_text("".join(lines[start:]))
    note = f" [{start} stray stdout lines before the JSON, kept in {path.name}.stdout.txt: {lines[0].strip()[:60]}]"
result = json.loads("".join(lines[start:]))
if kind == "doctor":
    ort = next(r for r in result["runtimes"] if r["runtime"] == "onnxruntime")
    devices = ", ".join(f"{d} {'yes' if s.get('ok') else 'no'}" for d, s in ort["devices"].items())
    lacking = [name for name, state in (ort["facts"].get("cuda_libraries") or {}).items() if state != "loads"]
    print(f"onnxruntime {ort['versions']} works on: {devices}; CUDA libraries not loading: {', '.join(lacking) or 'none'}; "
          f"onnxruntime misses: {' | '.join(ort['missing']) or 'nothing'}{note}")
else:
    rows = "; ".join(f"{r['name']} on {r['device']}: {r['status'].upper()}"
                     + (f" p50 {r['p50_ms']:.3g} ms" if r.get("p50_ms") else "") + f" ({r['detail'][:100]})"
                     for r in result["rows"])
    print(("PASS" if result["passed"] else "FAIL") + f" in {result['seconds']} s: {rows}{note}")
EOF
}

step_doctor() {
    "$VENV/bin/resnet-edge" doctor --json > "$OUT/doctor.json"
    local rc=$?
    say "$(summarize doctor "$OUT/doctor.json")"
    return "$rc"
}

step_selftest() {
    local device="$1"
    "$VENV/bin/resnet-edge" doctor --selftest --from "$STASH/bundle/artifacts" --device "$device" --json > "$OUT/selftest_$device.json"
    local rc=$?
    say "$(summarize selftest "$OUT/selftest_$device.json")"
    return "$rc"
}

run_step() {  # run_step NAME SECONDS [ARGS]: one summary line, whatever happens
    local name="$1" want="$2"; shift 2
    local left=$((BUDGET - (SECONDS - STARTED) - 10)) began=$SECONDS rc detail status
    if [ "$left" -lt 15 ]; then
        status="SKIPPED: no time left in the ${BUDGET} s budget"
    else
        [ "$want" -le "$left" ] || want="$left"
        (cd "$STASH" && timeout -k 5 "$want" bash "$SELF" _step "$name" "$@") > "$OUT/$name.log" 2>&1
        rc=$?
        case "$rc" in
            0) status="ok" ;;
            124|137) status="TIMEOUT after $want s" ;;
            *) status="FAILED (exit $rc)" ;;
        esac
        [ "$name" = "selftest-tensorrt-ep" ] && [ "$rc" -ne 0 ] && [ -s "$OUT/selftest_tensorrt-ep.json" ] \
            && status="$status, expected: no TensorRT on this machine"
        detail="$(grep '^DETAIL: ' "$OUT/$name.log" | tail -1 | cut -c9-)"
        [ -n "$detail" ] || detail="$(grep -v '^\s*$' "$OUT/$name.log" | tail -1 | cut -c1-300)"
    fi
    printf '[%4d s] %-22s %s%s\n' $((SECONDS - began)) "$name:" "$status" "${detail:+ - $detail}" | tee -a "$OUT/summary.txt"
}

run() {
    OUT="${OUT:-$STASH/out}"
    mkdir -p "$OUT" "$STASH" || die "cannot write $OUT or $STASH"
    export OUT STASH STATE="$STASH/state.sh" BUDGET="${DEVICE_SELFTEST_BUDGET_S:-530}" STARTED=$SECONDS
    : > "$OUT/summary.txt"
    : > "$STATE"
    local folder n
    for folder in "$ROOT/$DEVICE_DIR"/call[0-9][0-9]; do
        [ -d "$folder" ] || continue
        n="$(basename "$folder")"; n=$((10#${n#call}))
        stash_call "$n" >> "$OUT/stash.log" 2>&1
    done
    [ -f "$STASH/bundle/manifest.txt" ] && cp "$STASH/bundle/manifest.txt" "$OUT/manifest.txt"
    [ -f "$STASH/bundle/cpu_selftest.json" ] && cp "$STASH/bundle/cpu_selftest.json" "$OUT/cpu_selftest.json"
    run_step bundle 90
    run_step gpu 30
    run_step host-python 90
    run_step cuda-libraries 30
    run_step venv 90
    run_step install 150
    run_step doctor 120
    run_step selftest-cuda 120 cuda
    run_step selftest-tensorrt-ep 60 tensorrt-ep
    run_step selftest-cpu 60 cpu
    echo "done in $((SECONDS - STARTED)) s; results in $OUT: $(cd "$OUT" && ls | paste -sd ' ')" | tee -a "$OUT/summary.txt"
    exit 0
}

internal_step() {
    local name="$1"; shift
    [ -f "$STATE" ] && source "$STATE"  # shellcheck disable=SC1090
    case "$name" in
        bundle) step_bundle ;;
        gpu) step_gpu ;;
        host-python) step_host_python ;;
        cuda-libraries) [ -n "${HOST_PY:-}" ] || { say "no host Python (the host-python step failed)"; exit 1; }; step_cuda_libraries ;;
        venv) [ -n "${HOST_PY:-}" ] || { say "no host Python (the host-python step failed)"; exit 1; }; step_venv ;;
        install)
            [ -x "${VENV:-/nonexistent}/bin/python" ] || { say "no venv (the venv step failed)"; exit 1; }
            step_install ;;
        doctor|selftest-*)
            [ -x "${VENV:-/nonexistent}/bin/resnet-edge" ] || { say "resnet-edge is not installed (the install step failed)"; exit 1; }
            if [ "$name" = doctor ]; then step_doctor; else step_selftest "$1"; fi ;;
        *) die "unknown step $name" ;;
    esac
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    part) shift; part "$@" ;;
    run) run ;;
    _step) shift; internal_step "$@" ;;
    *) sed -n '2,79p' "$SELF" | sed 's/^# \{0,1\}//'; echo; echo "usage: $0 prepare [DIR] | part N | run"; exit 2 ;;
esac
