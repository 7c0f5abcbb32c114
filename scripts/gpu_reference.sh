#!/usr/bin/env bash
# Measure reference data on an NVIDIA GPU machine with the Ray-free measurement core.
#
# On the GPU machine, from the repository root (torch, numpy, pandas, pyarrow, scikit-learn,
# psutil, nvidia-ml-py and pyyaml installed; the rest travels as wheels, see
# scripts/device_wheels.sh):
#   OUT=/some/dir bash scripts/gpu_reference.sh
# It writes, under $OUT:
#   nvidia-smi.txt, probe.yaml       what the machine is
#   gpu-checks.txt                   tests/gpu: CUDA sync, CUDA memory, NVML energy/power/clocks
#   results/                         the Parquet rows and LoadGen logs of configs/reference/gpu-*.yaml
#   command.txt                      this command, the commit and the time, for the record
set -uo pipefail
OUT=${OUT:-out/gpu-reference}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
{
  echo "command: OUT=$OUT bash scripts/gpu_reference.sh"
  echo "commit:  ${BENCHMATCH_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  echo "started: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  python3 -c 'import torch; print("torch:  ", torch.__version__, "cuda", torch.version.cuda)'
} > "$OUT/command.txt"
nvidia-smi -q > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed" > "$OUT/nvidia-smi.txt"
python3 -m cluster.probe > "$OUT/probe.yaml" || exit 1
python3 -m pytest tests/gpu -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/gpu-checks.txt"
status=0
for cfg in ${CONFIGS:-configs/reference/gpu-*.yaml}; do
  python3 -m benchmarks run-local "$cfg" --hardware probe --results "$OUT/results" || status=1
done
echo "finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$OUT/command.txt"
exit $status
