"""
Peak FLOP/s of a device, the denominator of model FLOPs utilisation (MFU) that GPT.estimate_mfu and train.py's
log lines report: a datasheet figure for the listed GPUs (PEAK_FLOPS), else a timed bf16 matmul on an unlisted
GPU, found once per (device, dtype) and cached, so it is fixed for a run. A CPU has no honest peak here: its
datasheet rate is not known to torch, and a timed matmul on shared cores is only a lower bound that training
can beat (MFU would read 100% or more and change from run to run), so CPU gives no peak and no MFU.
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
_PEAKS: dict[tuple[str, torch.dtype], tuple[float | None, str]] = {}  # (device, dtype) -> (FLOP/s, where from)
NO_CPU_PEAK = ("no MFU on CPU: there is no datasheet peak for it, and a timed matmul is a lower bound that "
               "training can beat (tokens_per_sec is logged instead)")


def gpu_peak_flops(name: str) -> float | None:
    """The PEAK_FLOPS entry for a CUDA device name (first substring match), or None."""
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32) -> tuple[float | None, str]:
    """(peak FLOP/s or None, how it was obtained) for `device`, found once and cached: the same for the whole
    run. A listed GPU: its datasheet bf16 peak (also for fp32/TF32 runs, as nanoGPT). An unlisted GPU: the best
    of 10 timed bf16 matmuls after a warm-up (warned once). CPU: None, with the reason (NO_CPU_PEAK)."""
    device = torch.device(device)
    key = (str(device), dtype)
    if key not in _PEAKS:
        if device.type != "cuda":
            _PEAKS[key] = None, NO_CPU_PEAK
            return _PEAKS[key]
        name = torch.cuda.get_device_name(device)
        flops = gpu_peak_flops(name)
        if flops is not None:
            _PEAKS[key] = flops, f"{name}: datasheet dense bf16 peak {flops / 1e12:.1f} TFLOP/s"
        else:
            warnings.warn(f"{name} is not in mfu.PEAK_FLOPS: MFU uses a measured bf16 matmul peak")
            flops = _measured_peak_flops(device, torch.bfloat16)
            _PEAKS[key] = flops, f"{name}: measured, best of 10 bfloat16 matmuls, {flops / 1e12:.1f} TFLOP/s"
    return _PEAKS[key]


def device_peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32) -> float | None:
    """Peak FLOP/s of `device`, None on CPU (see peak_flops)."""
    return peak_flops(device, dtype)[0]


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
