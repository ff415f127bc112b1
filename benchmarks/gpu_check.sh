#!/usr/bin/env bash
# Engine check on a CUDA machine (issue 8): the engine benchmark and one thorough-budget scan.
# Run from the repository root:  bash benchmarks/gpu_check.sh
# Figures go to $OUT/gpu_check.txt when OUT is set, else ./gpu_check.txt; the scan's report next to it.
set -u
dest="${OUT:-.}"
mkdir -p "$dest"
log="$dest/gpu_check.txt"
py="${PYTHON:-python3}"
{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  echo
  echo "## benchmarks/bench_engine.py --device cuda (auto: fold or loop)"
  timeout 900 "$py" benchmarks/bench_engine.py --device cuda --iterations 20 --repeats 3 2>&1
  echo "exit $?"
  echo
  echo "## the same, restarts by vmap (the 0.1.0 engine's way), for comparison"
  timeout 600 "$py" benchmarks/bench_engine.py --device cuda --iterations 20 --repeats 3 --batching vmap \
    --models mlp,cnn,vit --no-dia 2>&1
  echo "exit $?"
  echo
  echo "## leakaudit scan examples/models/mlp_dropout.onnx --budget thorough --device cuda (ig, dia)"
  start=$(date +%s)
  timeout 1800 "${LEAKAUDIT:-leakaudit}" scan examples/models/mlp_dropout.onnx --data examples/samples \
    --budget thorough --device cuda --attacks analytic,ig,dia --output-dir "$dest/thorough_scan" 2>&1 | tail -25
  echo "exit ${PIPESTATUS[0]}; wall $(( $(date +%s) - start )) s"
} 2>&1 | tee "$log"
echo "figures written to $log"
