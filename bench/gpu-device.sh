#!/usr/bin/env bash
# The WGSL matmul on a real GPU beside cuBLAS FP32 on the same GPU, as a ratio (issue 4's
# target: at least 50%). Run on a machine with an NVIDIA GPU, Vulkan and PyTorch:
#
#   cargo build --release -p peercompute-bench && bash bench/gpu-device.sh
#
# Environment: BENCH_NATIVE (the bench-native binary, default target/release/bench-native),
# SIZES (default 1024,2048,4096,8192), RESULTS (folder for the JSON, default bench/results).
# Arguments go to bench-native, e.g. `--shader variant.wgsl:128,128` to compare a variant.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BENCH_NATIVE:-target/release/bench-native}
sizes=${SIZES:-1024,2048,4096,8192}
out=${RESULTS:-bench/results}
mkdir -p "$out"
"$bin" --gpu-matmul "$sizes" "$@" > "$out/wgpu-matmul.json"
python3 bench/cublas.py "$sizes" > "$out/cublas.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
wgpu = json.load(open(f"{out}/wgpu-matmul.json"))["gpu_matmul_kernels"]
cublas = json.load(open(f"{out}/cublas.json"))
base = {r["n"]: r for r in cublas["runs"]}
print(f"\n{wgpu['adapter']} ({wgpu['backend']}) vs cuBLAS FP32 on {cublas['device']} (torch {cublas['torch']}, CUDA {cublas['cuda']})")
print(f"{'shader':<28}{'n':>6}{'WGSL GFLOPS':>14}{'cuBLAS GFLOPS':>15}{'ratio':>8}")
rows = []
for r in wgpu["runs"]:
    b = base[r["n"]]
    ratio = r["gflops"] / b["gflops"]
    rows.append({"shader": r["shader"], "n": r["n"], "wgsl_gflops": r["gflops"],
                 "cublas_fp32_gflops": b["gflops"], "ratio": ratio,
                 "end_to_end_ms": r["end_to_end_ms"], "timestamps": r["timing"]["timestampQueries"]})
    print(f"{r['shader']:<28}{r['n']:>6}{r['gflops']:>14.1f}{b['gflops']:>15.1f}{ratio:>8.2f}")
json.dump({"adapter": wgpu["adapter"], "device": cublas["device"], "wgpu": wgpu,
           "cublas": cublas, "rows": rows}, open(f"{out}/gpu-device.json", "w"), indent=1)
print(f"\nwritten: {out}/gpu-device.json")
PY
