#!/usr/bin/env bash
# The GPU check, one command on one GPU machine without internet:   bash bench/gpu.sh [--key=value ...]
# A thin wrapper of bench/gpu_check.py (the checks, their order, budget and results files are there; -h lists the
# keys). Results go to $OUT (the device machine's output folder) when set, else to gpu_check_out/.
# Env: PY (the Python with the machine's CUDA torch; default python3). Rehearse on a CPU: --device=cpu
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$(command -v python3 || command -v python)}
"$PY" -c "import torch" 2>/dev/null || { echo "gpu.sh: $PY cannot import torch: set PY=<the Python with the machine's CUDA torch> (nothing is installed)" >&2; exit 1; }
exec "$PY" bench/gpu_check.py --python="$PY" ${OUT:+--out="$OUT"} "$@"
