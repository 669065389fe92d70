#!/usr/bin/env bash
# The GPU path checked on a GPU in one run, with a figures table (issue 18; scripts/gpu_check.py says what
# it checks). Meant to finish in under 8 minutes on one data-centre GPU with 16 cores.
#
#   bash scripts/gpu_check.sh [--wheelhouse DIR] [gpu_check.py options]   # NVIDIA machine
#   bash scripts/gpu_check.sh --dry-run [gpu_check.py options]            # anywhere, CPU, ~1 minute
#
# A GPU run makes its own virtual environment ($GPU_CHECK_VENV, default /tmp/xclip-gpu-check-venv) that sees
# the system's packages, so a CUDA torch already installed there is used as it is; otherwise it installs:
#   - torch from PyPI (PyPI's Linux x86-64 torch wheels are the CUDA builds),
#   - the project's dependencies but faiss-cpu (the project itself runs from this checkout),
#   - faiss-gpu-cu12 (the `faiss` module with GPU support) in place of faiss-cpu,
#   - PyNvVideoCodec (NVDEC, for --decoder nvdec) and nvidia-ml-py (GPU utilisation).
# --wheelhouse DIR installs from a folder of wheels instead of the network (machines without one).
# --dry-run installs nothing and runs with the Python in $PYTHON (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0
wheelhouse=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1; args+=("$1") ;;
        --wheelhouse) wheelhouse="$2"; shift ;;
        --wheelhouse=*) wheelhouse="${1#*=}" ;;
        *) args+=("$1") ;;
    esac
    shift
done

stamp() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }

if [ "$dry" = 1 ]; then
    stamp "dry run: CPU only, nothing installed"
    exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python3}" scripts/gpu_check.py "${args[@]}"
fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none); run with --dry-run instead." >&2
    exit 1
fi
nvidia-smi -L

venv="${GPU_CHECK_VENV:-/tmp/xclip-gpu-check-venv}"
base_python="${PYTHON:-python3}"
stamp "virtual environment $venv (system packages visible)"
[ -x "$venv/bin/python" ] || "$base_python" -m venv --system-site-packages "$venv"
py="$venv/bin/python"
# When python3 is itself a virtual environment (images that ship torch in one), --system-site-packages does not
# reach its packages: a .pth file puts them behind the check's own.
base_site="$("$base_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
venv_site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
[ "$base_site" = "$venv_site" ] || echo "$base_site" >"$venv_site/zz-base-python.pth"
pip_install() {
    # A package that cannot be installed is not the end of the run: the checks that need it say so.
    if [ -n "$wheelhouse" ]; then
        "$py" -m pip install -q --no-index --find-links "$wheelhouse" "$@" || stamp "could not install: $*"
    else
        "$py" -m pip install -q "$@" || stamp "could not install: $*"
    fi
}

if "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    stamp "torch with CUDA already here: $("$py" -c 'import torch; print(torch.__version__)')"
else
    # A CPU-only torch visible from the venv would satisfy a plain install: install one into the venv anyway.
    stamp "installing torch (CUDA build) into the venv"
    pip_install --ignore-installed torch
fi
# The project runs from this checkout (PYTHONPATH): only its dependencies are installed, so nothing is built
# (an offline machine has no setuptools to build with) and faiss-cpu never comes in.
mapfile -t deps < <("$py" -c '
import tomllib
for dep in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    if not dep.startswith("faiss"):
        print(dep)
')
stamp "installing the project's dependencies (those missing): ${deps[*]}"
for dep in "${deps[@]}"; do pip_install "$dep"; done  # one at a time: one that cannot be had stops no other
stamp "installing faiss-gpu-cu12, PyNvVideoCodec, nvidia-ml-py"
for package in faiss-gpu-cu12 PyNvVideoCodec nvidia-ml-py; do pip_install "$package"; done
stamp "installs done; running the checks"
exec env PYTHONPATH="$PWD" "$py" scripts/gpu_check.py "${args[@]}"
