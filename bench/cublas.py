"""cuBLAS FP32 matmul through PyTorch: the baseline of the WGSL matmul on a real GPU.

    python3 bench/cublas.py 1024,2048,4096,8192 > cublas.json

The same n×n·n×n products of the same integer-valued matrices as `bench-native --gpu-matmul`
(shaders::exact_matrices), timed the same way: the median of per-product GPU times (CUDA
events) after warm-up. TF32 is off, so this is true FP32 (SGEMM), the arithmetic the WGSL
shader does; the TF32 time is printed beside it for reference only.
"""

import json
import sys

import torch


def exact(n, mod, shift):
    return ((torch.arange(n * n, device="cuda") % mod) - shift).float().reshape(n, n)


def median_ms(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    events = []
    for _ in range(reps):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        events.append((begin, end))
    torch.cuda.synchronize()
    times = sorted(b.elapsed_time(e) for b, e in events)
    return times[len(times) // 2]


def main():
    sizes = [int(s) for s in sys.argv[1].split(",")]
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for n in sizes:
        a, b = exact(n, 7, 3), exact(n, 5, 2)
        c = torch.empty(n, n, device="cuda")
        torch.mm(a, b, out=c)
        want = (a.double() @ b.double()).float()
        if not torch.equal(c, want):
            sys.exit(f"cuBLAS FP32 gave a wrong product at n = {n}")
        flops = 2.0 * n**3
        reps = int(max(5, min(200, 5e11 / flops)))
        ms = median_ms(lambda: torch.mm(a, b, out=c), reps)
        torch.backends.cuda.matmul.allow_tf32 = True
        tf32_ms = median_ms(lambda: torch.mm(a, b, out=c), reps)
        torch.backends.cuda.matmul.allow_tf32 = False
        row = {
            "n": n,
            "ms": ms,
            "gflops": flops / ms / 1e6,
            "tf32_gflops": flops / tf32_ms / 1e6,
            "reps": reps,
        }
        print(
            f"cuBLAS FP32  n={n:<5} {row['gflops']:>9.1f} GFLOPS  {ms:8.3f} ms"
            f"  (TF32 {row['tf32_gflops']:.1f}, not comparable)",
            file=sys.stderr,
        )
        rows.append(row)
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(0),
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
                "runs": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
