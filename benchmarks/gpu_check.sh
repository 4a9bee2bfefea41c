#!/usr/bin/env bash
# GPU readiness check, one command: the gpu-marked tests, the bfloat16 agreement on the
# recorded cases, and the throughput table against Meta's predictor, on a CUDA device. Writes JSON into a folder (first argument, else $OUT, else
# ./gpu_check_out):
#   env.json           torch / CUDA / device description
#   gpu_tests.xml      JUnit report of `pytest -m gpu` (fused attention kernels, memory attention)
#   dtype_parts.json   bench_dtype --case: bf16 autocast per model part against float32
#   gpu_tracker.xml    JUnit report of tests/test_gpu_tracker.py -m gpu: compile_hot_parts over 20
#                      varied videos on CUDA (no recompile-limit hit, compiled == eager), and the
#                      one-copy download of masks and scores against the logits
#   vs_official_<model>.json   the performance issue's table: sam2.1_hiera_tiny and _large at
#                      1024 with seeded random weights (benchmarks.random_official), 1/4/16
#                      objects, ours against Meta's SAM2VideoPredictor on the same GPU, float32,
#                      every object kept present (--present: random weights lose them)
#   tracker_<model>_<dtype>.json  ours alone: float32, bfloat16, and bfloat16 + compile (tiny)
#   summary.json       exit codes of each step
# Exits 2 when no CUDA device is present, 1 when a step failed, 0 otherwise.
#   benchmarks/gpu_check.sh /tmp/gpu_out
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$out"
python="${PYTHON:-python}"
case_dir="${CASE_DIR:-../shared/sam2_reference/mini_a}"

if ! "$python" - "$out/env.json" <<'PY'
import json, sys, torch
ok = torch.cuda.is_available()
env = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": ok}
if ok:
    p = torch.cuda.get_device_properties(0)
    env.update(device=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
               bf16_supported=torch.cuda.is_bf16_supported())
json.dump(env, open(sys.argv[1], "w"), indent=1)
sys.exit(0 if ok else 2)
PY
then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False); see $out/env.json" >&2
    exit 2
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$python" -m pytest tests/test_gpu_readiness.py -m gpu -q -rs --junitxml="$out/gpu_tests.xml"
tests_rc=$?
"$python" -m benchmarks.bench_dtype --case "$case_dir" --device cuda --json "$out/dtype_parts.json"
dtype_rc=$?
"$python" -m pytest tests/test_gpu_tracker.py -m gpu -q -rs --durations=5 --junitxml="$out/gpu_tracker.xml"
tracker_rc=$?

# Throughput: real model sizes, random weights (kept outside $out: hundreds of MB).
weights="${WEIGHTS_DIR:-/tmp/gpu_check_weights}"
frames="${FRAMES:-40}"
speed_rc=0
for name in sam2.1_hiera_tiny sam2.1_hiera_large; do
    w="$weights/$name"
    "$python" -m benchmarks.random_official --model "$name" --output "$w" || { speed_rc=1; continue; }
    "$python" -m benchmarks.bench_vs_official --model "$w/config.json" --checkpoint "$w/checkpoint.pt" \
        --device cuda --objects 1,4,16 --frames "$frames" --repeats 2 --variants official,ours \
        --present --json "$out/vs_official_$name.json" || speed_rc=1
    for dtype in float32 bfloat16; do
        "$python" -m benchmarks.bench_tracker --model "$w/config.json" --checkpoint "$w/checkpoint.pt" \
            --device cuda --dtype "$dtype" --objects 1,4,16 --frames "$frames" --repeats 2 \
            --modes batched --json "$out/tracker_${name}_$dtype.json" || speed_rc=1
    done
done
w="$weights/sam2.1_hiera_tiny"
"$python" -m benchmarks.bench_tracker --model "$w/config.json" --checkpoint "$w/checkpoint.pt" \
    --device cuda --dtype bfloat16 --compile --warmup 10 --objects 1,4,16 --frames "$((frames + 10))" \
    --repeats 2 --modes batched --json "$out/tracker_sam2.1_hiera_tiny_bfloat16_compiled.json" || speed_rc=1

printf '{"gpu_tests_rc": %d, "dtype_parts_rc": %d, "gpu_tracker_rc": %d, "throughput_rc": %d}\n' \
    "$tests_rc" "$dtype_rc" "$tracker_rc" "$speed_rc" > "$out/summary.json"
cat "$out/summary.json"
[ "$tests_rc" -eq 0 ] && [ "$dtype_rc" -eq 0 ] && [ "$tracker_rc" -eq 0 ] && [ "$speed_rc" -eq 0 ]
