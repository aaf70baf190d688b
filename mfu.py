"""
Peak FLOP/s of a device, the denominator of model FLOPs utilisation (MFU) that GPT.estimate_mfu and train.py's
log lines report: a datasheet figure for the listed GPUs (PEAK_FLOPS), else a timed matmul, found once per
(device, dtype) and cached; raised to the rate a run achieves when that is higher, so MFU never exceeds 100%.
"""
import time
import warnings

import torch

# Dense bf16 tensor-core peak per GPU, FLOP/s. NVIDIA's datasheets list these "with sparsity" (2:4), i.e.
# twice the dense rate: H100 SXM / H200 SXM 1979, H100 NVL / H200 NVL 1671, H100 PCIe 1513 TFLOP/s; A100 312
# dense. Matched against torch.cuda.get_device_name() in this order, first substring wins, so the PCIe/NVL
# names (and GH200, which contains "H200") come before plain "H100"/"H200" (the SXM parts: "NVIDIA H100 80GB
# HBM3", "NVIDIA H200").
PEAK_FLOPS = {
    "H100 PCIe": 1513e12 / 2,
    "H100 NVL": 1671e12 / 2,
    "GH200": 1979e12 / 2,  # Grace Hopper: an H100 (SXM rates)
    "H200 NVL": 1671e12 / 2,
    "H100": 1979e12 / 2,  # SXM5
    "H200": 1979e12 / 2,  # SXM
    "A100": 312e12,  # SXM4 and PCIe alike
    "B200": 4.5e15 / 2,
}
_PEAKS: dict[tuple[str, torch.dtype], tuple[float, str]] = {}  # (device, dtype) -> (FLOP/s, where from)


def gpu_peak_flops(name: str) -> float | None:
    """The PEAK_FLOPS entry for a CUDA device name (first substring match), or None."""
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32) -> tuple[float, str]:
    """(peak FLOP/s, how it was obtained) for `device`, found once and cached. A listed GPU: its datasheet
    bf16 peak (also for fp32/TF32 runs, as nanoGPT). Otherwise measured: the best of 10 timed matmuls after a
    warm-up, in `dtype` on CPU (bf16 on an unlisted GPU). A measured CPU peak is a lower bound of the true
    one (other jobs share the cores): estimate_mfu raises it when training runs faster."""
    device = torch.device(device)
    key = (str(device), dtype)
    if key not in _PEAKS:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        flops = gpu_peak_flops(name) if device.type == "cuda" else None
        if flops is not None:
            _PEAKS[key] = flops, f"{name}: datasheet dense bf16 peak {flops / 1e12:.1f} TFLOP/s"
        else:
            if device.type == "cuda":
                warnings.warn(f"{name} is not in mfu.PEAK_FLOPS: MFU uses a measured bf16 matmul peak")
                dtype = torch.bfloat16
            flops = _measured_peak_flops(device, dtype)
            _PEAKS[key] = flops, (f"{name}: measured, best of 10 {str(dtype).removeprefix('torch.')} "
                                  f"matmuls, {flops / 1e9:.1f} GFLOP/s")
    return _PEAKS[key]


def device_peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32) -> float:
    """Peak FLOP/s of `device` (see peak_flops)."""
    return peak_flops(device, dtype)[0]


def raise_peak_flops(device: torch.device | str, dtype: torch.dtype, achieved: float) -> float:
    """The peak for MFU, raised (with a warning, once per raise) to `achieved` FLOP/s when that is higher:
    the run itself shows the device reaches it. Returns the peak now in use."""
    peak, source = peak_flops(device, dtype)
    if achieved > peak:
        warnings.warn(f"training ran at {achieved / 1e9:.1f} GFLOP/s, above the peak used for MFU ({source}): "
                      "the peak is raised to the achieved rate, so MFU reads 100% at most")
        _PEAKS[(str(torch.device(device)), dtype)] = achieved, f"{source}; raised to the achieved rate"
        peak = achieved
    return peak


def _measured_peak_flops(device: torch.device | str, dtype: torch.dtype | None = None) -> float:
    """Best FLOP/s of a square matmul over 10 timed trials after one warm-up (RNG-neutral: own generator);
    dtype None = fp32 on CPU, bf16 on GPU."""
    device = torch.device(device)
    dtype = dtype or (torch.float32 if device.type == "cpu" else torch.bfloat16)
    n = 1024 if device.type == "cpu" else 8192
    g = torch.Generator(device).manual_seed(0)  # measuring must not shift the training RNG
    a = torch.randn(n, n, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, device=device, generator=g).to(dtype)
    best = float("inf")
    for trial in range(11):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if trial:  # trial 0 warms up (allocator, threads, clocks)
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best
