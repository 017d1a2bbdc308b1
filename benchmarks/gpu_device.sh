#!/usr/bin/env bash
# Issue 27's measurement on a CUDA machine, in one prepared run (the accelerator machine of this workplace
# takes the working tree plus up to 64 MiB of carried files, and nothing can be installed there).
#
#   bash benchmarks/gpu_device.sh prepare   # here: .gpu/facebench, a JPEG (quality 90) copy of ../shared/facebench
#                                           # (the 256 px PNGs do not fit the transfer; ~43 MB for its 2,500 faces)
#   bash benchmarks/gpu_device.sh run       # there (device tool: carry [".gpu"]): the CUDA tests, then
#                                           # benchmarks/gpu.py with --full; tables in $OUT/gpu.md
#
# The machine's own PyTorch runs it (PYTHONPATH=src, no install; device_augment.py needs nothing beyond torch
# and torchvision). Both classes of the copy were re-saved alike; it measures speed, not accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    python - <<'EOF'
from pathlib import Path

from PIL import Image
from tqdm import tqdm

source, target = Path("../shared/facebench"), Path(".gpu/facebench")
files = sorted(source.glob("*/*/*.png"))
if not files:
    raise SystemExit(f"no PNG faces under {source}: the JPEG copy needs the shared facebench folder")
for path in tqdm(files, desc="JPEG copy", unit="face"):
    out = target / path.relative_to(source).with_suffix(".jpg")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(path).convert("RGB").save(out, "JPEG", quality=90)
size = sum(f.stat().st_size for f in target.rglob("*.jpg"))
print(f"{len(files)} faces in {target}, {size / 2**20:.1f} MiB")
EOF
    ;;
run)
    export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
    out="${OUT:-.gpu/out}"
    mkdir -p "$out"
    : >"$out/gpu.md"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$out/gpu.md"
    fi
    python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
        | tee -a "$out/gpu.md"
    # the CUDA paths of the tests (they skip on machines without a GPU)
    (python3 -m pytest -q -p no:cacheprovider tests/test_hardware.py tests/test_device_augment.py 2>&1 || true) \
        | tail -15 | tee -a "$out/gpu.md"
    python3 benchmarks/gpu.py --data .gpu/facebench --preset params/facebench.yaml --full 2>&1 | tee -a "$out/gpu.md"
    ;;
*)
    echo "usage: bash benchmarks/gpu_device.sh prepare|run" >&2
    exit 2
    ;;
esac
