"""mfu.py: the peak FLOP/s behind MFU. The formula of the measured peak (2 n^3 / best time of the 10 trials
after the warm-up) against a fake clock, the datasheet / measured choice per device (a CUDA device name is
faked: this runs on CPU), the cache per (device, dtype), and no peak on CPU."""
import warnings
from types import SimpleNamespace

import pytest
import torch

import mfu


@pytest.fixture
def peaks(monkeypatch) -> dict:
    """An empty cache for this test (the real one keeps the measured CPU peak of the session)."""
    fresh = {}
    monkeypatch.setattr(mfu, "_PEAKS", fresh)
    return fresh


def _fake_clock(monkeypatch, durations: list[float]) -> None:
    """time.perf_counter as mfu sees it: the warm-up (trial 0) reads its start only (it is not timed),
    trial i >= 1 takes durations[i - 1] seconds."""
    reads, t = [0.0], 1.0
    for d in durations:
        reads += [t, t + d]
        t += d + 1.0
    it = iter(reads)
    monkeypatch.setattr(mfu, "time", SimpleNamespace(perf_counter=lambda: next(it)))  # mfu's reads only


def test_measured_peak_is_2n3_over_the_best_of_ten_timed_trials_after_an_untimed_warm_up(monkeypatch):
    _fake_clock(monkeypatch, [0.5, 0.4, 0.3, 0.2, 0.25, 0.6, 0.7, 0.8, 0.9, 0.35])  # best of trials 1-10: 0.2 s
    state = torch.get_rng_state()
    flops = mfu._measured_peak_flops("cpu")
    assert flops == pytest.approx(2 * 1024**3 / 0.2, rel=1e-12)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator: the training RNG does not move


def test_measured_peak_takes_the_last_trial_when_it_is_the_best(monkeypatch):
    _fake_clock(monkeypatch, [0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.1])
    assert mfu._measured_peak_flops("cpu", torch.float32) == pytest.approx(2 * 1024**3 / 0.1, rel=1e-12)


def test_a_listed_gpu_gets_its_datasheet_peak_once_per_device_and_dtype(monkeypatch, peaks):
    names = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: names.append(d) or "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(mfu, "_measured_peak_flops", lambda *a: pytest.fail("a listed GPU is not measured"))
    want = (989.5e12, "NVIDIA H100 80GB HBM3: datasheet dense bf16 peak 989.5 TFLOP/s")
    assert mfu.peak_flops("cuda:1") == want
    assert names == [torch.device("cuda:1")]  # the name of that device, not of the current one
    assert mfu.peak_flops(torch.device("cuda:1")) == want and len(names) == 1  # cached
    assert mfu.peak_flops("cuda:1", torch.bfloat16) == want and len(names) == 2  # another dtype, another entry
    assert set(peaks) == {("cuda:1", torch.float32), ("cuda:1", torch.bfloat16)}
    assert mfu.device_peak_flops("cuda:1") == 989.5e12


def test_an_unlisted_gpu_is_measured_in_bf16_with_a_warning(monkeypatch, peaks):
    calls = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: "NVIDIA GeForce RTX 4090")
    monkeypatch.setattr(mfu, "_measured_peak_flops", lambda device, dtype: calls.append((device, dtype)) or 5e13)
    with pytest.warns(UserWarning, match="NVIDIA GeForce RTX 4090 is not in mfu.PEAK_FLOPS"):
        got = mfu.peak_flops("cuda:0", torch.float32)
    assert got == (5e13, "NVIDIA GeForce RTX 4090: measured, best of 10 bfloat16 matmuls, 50.0 TFLOP/s")
    assert calls == [(torch.device("cuda:0"), torch.bfloat16)] and set(peaks) == {("cuda:0", torch.float32)}


def test_a_cpu_has_no_peak_and_says_why(monkeypatch, peaks):
    """No honest CPU peak: nothing is measured, no warning, the reason is the source (cached like any peak)."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: pytest.fail("no CUDA name for a CPU"))
    monkeypatch.setattr(mfu, "_measured_peak_flops", lambda *a: pytest.fail("a CPU is not measured"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for a CPU
        assert mfu.peak_flops("cpu", torch.bfloat16) == (None, mfu.NO_CPU_PEAK)
    assert mfu.device_peak_flops("cpu") is None and set(peaks) == {("cpu", torch.bfloat16), ("cpu", torch.float32)}


def test_the_peak_is_kept_per_dtype(peaks):
    """A bf16 run reads the bf16 peak, not the fp32 one of the same device (cached entries: no CUDA call)."""
    peaks[("cuda:0", torch.float32)], peaks[("cuda:0", torch.bfloat16)] = (1e9, "gpu: fp32"), (4e9, "gpu: bf16")
    assert mfu.device_peak_flops("cuda:0", torch.bfloat16) == 4e9 and mfu.device_peak_flops("cuda:0") == 1e9


def _fake_torch(monkeypatch) -> list:
    """mfu's view of torch replaced by recorders (no real matmul, no GPU needed): returns the event list."""
    events = []

    class Generator:
        def __init__(self, device=None):
            events.append(("generator", device))

        def manual_seed(self, seed):
            events.append(("seed", seed))
            return self

    class Matrix:
        def to(self, dtype):
            events.append(("to", dtype))
            return self

        def __matmul__(self, other):
            events.append("matmul")
            return self

    def randn(*shape, device=None, generator=None):
        events.append(("randn", shape, device, isinstance(generator, Generator)))
        return Matrix()
    cuda = SimpleNamespace(synchronize=lambda d: events.append(("sync", d)))
    monkeypatch.setattr(mfu, "torch", SimpleNamespace(device=torch.device, Generator=Generator, randn=randn, cuda=cuda,
                                                     float32=torch.float32, bfloat16=torch.bfloat16))
    return events


@pytest.mark.parametrize("device, dtype, n, want_dtype", [("cpu", None, 1024, torch.float32),
                                                          ("cpu", torch.bfloat16, 1024, torch.bfloat16),
                                                          ("cuda:1", None, 8192, torch.bfloat16)])
def test_measured_peak_times_n_by_n_matmuls_on_the_device(monkeypatch, device, dtype, n, want_dtype):
    """Two n x n matrices (n = 1024 on CPU, 8192 on a GPU) from a generator of that device seeded 0, in dtype
    (None: fp32 on CPU, bf16 on a GPU); 11 matmuls, each between two synchronizes on a GPU."""
    events = _fake_torch(monkeypatch)
    _fake_clock(monkeypatch, [0.5, 0.4, 0.3, 0.2, 0.25, 0.6, 0.7, 0.8, 0.9, 0.35])
    assert mfu._measured_peak_flops(device, dtype) == pytest.approx(2 * n**3 / 0.2, rel=1e-12)
    d = torch.device(device)
    made = [("randn", (n, n), d, True), ("to", want_dtype)]
    trial = [("sync", d), "matmul", ("sync", d)] if d.type == "cuda" else ["matmul"]
    assert events == [("generator", d), ("seed", 0), *made, *made, *trial * 11]
