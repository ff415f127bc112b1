#!/usr/bin/env bash
# CUDA check (issues 8 and 12), sized for a 15-minute GPU lease: about 7 minutes in all.
#   1. the engine benchmark on the GPU (ms per restart-iteration, training-step ratio, the DIA case);
#   2. the IG settings grid on the tutorial ConvNet, resnet18 and mobilenet_v3_small (60 s per model);
#   3. the README's example scan with --device cuda (whole process, standard budget).
# Run from the repository root:  bash benchmarks/gpu_check.sh
# Figures go to $OUT/gpu_check.txt when OUT is set, else ./gpu_check.txt; the scan's report next to it.
# LEAKAUDIT names the command to run (default: leakaudit on PATH); PYTHON the interpreter (default python3).
set -u
dest="${OUT:-.}"
mkdir -p "$dest"
log="$dest/gpu_check.txt"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  echo
  echo "## benchmarks/bench_engine.py --device cuda"
  start=$(date +%s)
  timeout 120 "$py" benchmarks/bench_engine.py --device cuda --iterations 10 --repeats 2 2>&1
  echo "exit $?; wall $(( $(date +%s) - start )) s"
  echo
  echo "## benchmarks/bench_ig_settings.py --device cuda --max-seconds 60"
  start=$(date +%s)
  timeout 230 "$py" benchmarks/bench_ig_settings.py --device cuda --max-seconds 60 2>&1
  echo "exit $?; wall $(( $(date +%s) - start )) s"
  echo
  echo "## leakaudit scan examples/models/mlp_dropout.onnx --data examples/samples --device cuda"
  start=$(date +%s)
  timeout 90 "${LEAKAUDIT:-leakaudit}" scan examples/models/mlp_dropout.onnx --data examples/samples \
    --device cuda --output-dir "$dest/scan" 2>&1 | tail -25
  echo "exit ${PIPESTATUS[0]}; wall $(( $(date +%s) - start )) s"
} 2>&1 | tee "$log"
echo "figures written to $log"
