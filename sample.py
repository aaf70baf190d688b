"""
Sample from a trained model (nanoGPT's sample.py, plus GPT-SW3 chat prompts and Hugging Face folders).

    python sample.py --out_dir=out --start="To be, or not" --num_samples=3 --max_new_tokens=100
    python sample.py --out_dir=out --start=FILE:prompt.txt
    python sample.py --out_dir=out --chat=True --start="Vad är huvudstaden i Sverige?"
    python sample.py --hf_dir=path/to/gpt-sw3-126m --tokenizer=path/to/gpt-sw3-126m/spiece.model --start="Hej"

The run folder is read by checkpoint.load_run (weights_only=True). The tokenizer is the one the run was
trained with: its config's tokenizer_spec, else its dataset folder's; a --tokenizer must be that same
tokenizer (its identity hash is compared with the checkpoint's), else sample.py stops.
"""
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from checkpoint import load_run
from configurator import ConfigError, configure, run_cli
from hf import load_hf
from tokenizer import get_tokenizer

# -----------------------------------------------------------------------------
out_dir = 'out'  # run folder holding ckpt.pt (written by train.py)
hf_dir = ''  # or: a Hugging Face folder (GPT-2, GPT-SW3, Llama, Qwen3, GLM, StableLM...: hf.load_hf)
tokenizer = ''  # tokenizer spec (see tokenizer.get_tokenizer); '' = the one the run was trained with
start = "\n"  # prompt text, or FILE:path to read it from a file
chat = False  # wrap start in the GPT-SW3 chat format <|endoftext|><s>User: {start}<s>Bot: and stop at <s>
num_samples = 3  # [1, inf) number of samples to draw
max_new_tokens = 200  # [1, inf) tokens generated per sample
temperature = 0.8  # [0, inf) 1.0 = no change, < 1.0 = less random, 0 = greedy
top_k = 200  # [1, inf) keep only the top_k most likely tokens (None = all)
seed = 1337  # [0, inf) torch.manual_seed before sampling
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu', 'cuda', 'cuda:1', 'mps', ...
dtype = 'bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 'float32'  # or bfloat16
# -----------------------------------------------------------------------------


def _validate() -> None:
    """Every value checked before any work; the message names the key and the fix."""
    if temperature < 0:
        raise ConfigError(f"temperature={temperature} is negative: use > 0 (1.0 = the model's own "
                          f"distribution) or 0 for greedy decoding")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k={top_k} must be >= 1 (or None for the whole vocabulary): fix --top_k")
    for key, value in (('num_samples', num_samples), ('max_new_tokens', max_new_tokens)):
        if value < 1:
            raise ConfigError(f"{key}={value} must be >= 1: fix --{key}")
    if dtype not in ('float32', 'bfloat16', 'float16'):
        raise ConfigError(f"dtype={dtype!r} is not one of float32, bfloat16, float16: fix --dtype")
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available: use --device=cpu")
    if hf_dir and not tokenizer:
        raise ConfigError("--hf_dir needs --tokenizer=SPEC ('gpt2', or the folder's spiece.model for GPT-SW3)")
    if start.startswith('FILE:') and not Path(start[5:]).is_file():
        raise ConfigError(f"start={start!r}: prompt file {start[5:]} not found: fix the path after FILE:")


def main() -> None:
    configure(globals(), sys.argv[1:])
    _validate()
    torch.manual_seed(seed)
    if hf_dir:
        model, tok = load_hf(hf_dir), get_tokenizer(tokenizer)
    else:  # the run's model and its own tokenizer (checked: another --tokenizer would decode other text)
        model, tok = load_run(out_dir, device, tokenizer)[:2]
    model.eval().to(device)
    device_type = 'cuda' if 'cuda' in device else 'cpu'
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type, dtype=ptdtype)

    text = Path(start[5:]).read_text(encoding='utf-8') if start.startswith('FILE:') else start
    stop_tokens = None
    if chat:  # GPT-SW3 instruct format, built by chat.format_chat as for the training data
        from chat import format_chat

        ids, _ = format_chat([{'role': 'user', 'content': text}], tok, add_generation_prompt=True)
        stop_tokens = [t for t in (tok.bos, tok.eot) if t is not None]
    else:
        ids = tok.encode(text)
    if not ids:
        raise ConfigError("the prompt encodes to no tokens: pass a non-empty --start")
    block_size = model.config.block_size
    if len(ids) > block_size:
        print(f"prompt has {len(ids)} tokens > block_size={block_size}: keeping the last {block_size}")
        ids = ids[-block_size:]
    x = torch.tensor(ids, dtype=torch.long, device=device)[None, :]  # (1, T)

    with torch.no_grad(), ctx:
        for _ in range(num_samples):
            y = model.generate(x, max_new_tokens, temperature, top_k, stop_tokens=stop_tokens)
            new = y[0, x.size(1):].tolist()
            if chat:
                cut = [i for i, t in enumerate(new) if t in stop_tokens]
                print(tok.decode(new[:cut[0]] if cut else new).strip())
            else:
                print(tok.decode(ids + new))
            print('---------------')


if __name__ == '__main__':
    run_cli('sample.py', main)
