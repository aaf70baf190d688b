"""For tests: run train.py under probes, as `python tests/probe_train.py OUT train.py-args...` (or under torchrun).

Records every host read of a tensor's value (item, tolist, bool(), int(), nonzero, .cpu(), ...: on CUDA each is a
host-device sync) with the innermost train.py line it came from, and the number of graphs torch.compile made;
writes them to OUT/probe_rank<RANK>.json at exit. PROBE_BACKEND=aot_eager compiles with that torch.compile
backend (dynamo's graphs as inductor would get them, without generating code: fast on CPU)."""
import atexit
import json
import os
import runpy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# not .numpy(): it refuses a CUDA tensor, so it is never a hidden sync (host-only code reads CPU tensors with it)
READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero", "cpu")
out, sys.argv = Path(sys.argv[1]), [str(ROOT / "train.py"), *sys.argv[2:]]
sys.path.insert(0, str(ROOT))
reads = []  # [read, train.py line, function at that line]


def _counting(name, fn):
    def wrapper(t, *args, **kwargs):
        frame = sys._getframe(1)
        while frame is not None and Path(frame.f_code.co_filename).name != "train.py":
            frame = frame.f_back
        if frame is not None:
            reads.append([name, frame.f_lineno, frame.f_code.co_name])
        return fn(t, *args, **kwargs)
    return wrapper


for _name in READS:
    setattr(torch.Tensor, _name, _counting(_name, getattr(torch.Tensor, _name)))
if os.environ.get("PROBE_BACKEND"):
    _compile = torch.compile
    torch.compile = lambda model, **kw: _compile(model, backend=os.environ["PROBE_BACKEND"], **kw)


def _write():
    from torch._dynamo.utils import counters
    (out / f"probe_rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(dict(
        reads=reads, unique_graphs=counters["stats"]["unique_graphs"])))


out.mkdir(parents=True, exist_ok=True)
atexit.register(_write)
runpy.run_path(sys.argv[0], run_name="__main__")
