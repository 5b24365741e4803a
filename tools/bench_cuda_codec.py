#!/usr/bin/env python3
"""The CUDA codec on this GPU: encode + decode time from 1 Mi to 64 Mi float32
elements against the issue's targets, and the select step against a CUB baseline,
measured in one run. Needs a CUDA device, cuda-python and nvcc.

    python tools/bench_cuda_codec.py [--device h100] [--sparsity 0.9] [--json out.json]

Targets (issue 6): at 64 Mi, encode + decode at >= 40% of HBM bandwidth counted as
4N bytes read + 4N written; at 1 Mi, encode <= 30 us and decode <= 20 us; select
within 1.5x of the baseline. The peak bandwidth is the device catalogue's
(slicer-compile devices) for --device.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slicer_compile.codec import SlicerConfig  # noqa: E402
from slicer_compile.codec.gpu import DeviceBuffer, GpuCoder, cuda_runtime  # noqa: E402
from slicer_compile.errors import SlicerCompileError  # noqa: E402
from slicer_compile.codec.native import build_kernels  # noqa: E402
from slicer_compile.profile.devices import get_device  # noqa: E402

SIZES = [1 << 20, 1 << 22, 1 << 24, 1 << 26]


def bench_select(coder: GpuCoder, library, x: np.ndarray, sparsity: float, iterations: int) -> dict:
    lib = ctypes.CDLL(str(library))
    vp = ctypes.c_void_p
    lib.slicer_cuda_bench_select.restype = ctypes.c_int
    lib.slicer_cuda_bench_select.argtypes = [vp, ctypes.c_size_t, ctypes.c_uint64, ctypes.c_int,
                                             ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float),
                                             ctypes.c_char_p, ctypes.c_size_t, vp]
    device_x = DeviceBuffer(coder.rt, x.nbytes).upload(x)
    select_ms, baseline_ms = ctypes.c_float(), ctypes.c_float()
    name = ctypes.create_string_buffer(64)
    k = int(np.floor((1 - np.float32(sparsity)) * x.size))
    try:
        status = lib.slicer_cuda_bench_select(device_x.ptr, x.size, k, iterations, ctypes.byref(select_ms),
                                              ctypes.byref(baseline_ms), name, 64, coder.stream)
    finally:
        device_x.free()
    if status != 0:
        raise SystemExit(f"slicer_cuda_bench_select failed with status {status}")
    return {"elements": x.size, "k": k, "select_ms": select_ms.value, "baseline_ms": baseline_ms.value,
            "baseline": name.value.decode(), "ratio": select_ms.value / baseline_ms.value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="h100", help="catalogue entry for the peak bandwidth")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    peak = get_device(args.device).memory_bandwidth
    cuda_runtime()  # says what is missing before a minute of nvcc
    library = build_kernels(cuda=True).get("cuda")
    if library is None:
        raise SystemExit("nvcc was not found: libslicer_cuda.so was not built")
    cfg = SlicerConfig(sparsity=args.sparsity)
    rows, selects = [], []
    rng = np.random.default_rng(0)
    with GpuCoder(library) as coder:
        err, props = coder.rt.cudaGetDeviceProperties(0)
        gpu = props.name.decode(errors="replace").rstrip("\x00")
        for n in (int(s) for s in args.sizes.split(",")):
            x = rng.standard_normal(n).astype(np.float32)
            for stages in ("device", "host"):
                t = coder.time_round_trip(x, cfg, repeat=args.repeat, stages=stages)
                fraction = t.counted_bytes / (t.encode_s + t.decode_s) / peak
                rows.append({"elements": n, "stages": stages, "encode_us": t.encode_s * 1e6,
                             "decode_us": t.decode_s * 1e6, "payload_bytes": t.payload_bytes,
                             "bandwidth_fraction": fraction})
            selects.append(bench_select(coder, library, x, args.sparsity, args.repeat))
    print(f"GPU: {gpu}; peak bandwidth {peak / 1e12:.2f} TB/s ({args.device}); s = {args.sparsity}")
    print(f"{'elements':>10} {'encode stages':>14} {'encode us':>10} {'decode us':>10} {'payload B':>11} {'of HBM':>8}")
    for r in rows:
        print(f"{r['elements']:>10} {r['stages']:>14} {r['encode_us']:>10.1f} {r['decode_us']:>10.1f} "
              f"{r['payload_bytes']:>11} {r['bandwidth_fraction']:>8.1%}")
    print(f"{'elements':>10} {'select ms':>10} {'baseline ms':>12} {'ratio':>6}  baseline")
    for s in selects:
        print(f"{s['elements']:>10} {s['select_ms']:>10.3f} {s['baseline_ms']:>12.3f} {s['ratio']:>6.2f}  {s['baseline']}")
    if args.json:
        args.json.write_text(json.dumps({"gpu": gpu, "rows": rows, "select": selects}, indent=1) + "\n")


if __name__ == "__main__":
    try:
        main()
    except SlicerCompileError as exc:
        raise SystemExit(f"error: {exc}") from None
