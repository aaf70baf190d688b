"""
Sample from a trained model (nanoGPT's sample.py, plus GPT-SW3 chat prompts and Hugging Face folders).

    python sample.py --out_dir=out --start="To be, or not" --num_samples=3 --max_new_tokens=100
    python sample.py --out_dir=out --start=FILE:prompt.txt
    python sample.py --out_dir=out --chat=True --start="Vad är huvudstaden i Sverige?"
    python sample.py --hf_dir=path/to/gpt-sw3-126m --tokenizer=path/to/gpt-sw3-126m/spiece.model --start="Hej"

The tokenizer is the one the run was trained with: --tokenizer if given, else the checkpoint config's
tokenizer_spec / tokenizer, else the meta.json of its dataset folder (data_root/dataset).
"""
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from configurator import configure
from model import GPT, GPTConfig
from tokenizer import get_tokenizer

# -----------------------------------------------------------------------------
out_dir = 'out'  # run folder holding ckpt.pt (written by train.py)
hf_dir = ''  # or: a Hugging Face GPT2LMHeadModel folder (GPT-2, GPT-SW3) to sample from instead
tokenizer = ''  # tokenizer spec (see tokenizer.get_tokenizer); '' = the one the run was trained with
start = "\n"  # prompt text, or FILE:path to read it from a file
chat = False  # wrap start in the GPT-SW3 chat format <|endoftext|><s>User: {start}<s>Bot: and stop at <s>
num_samples = 3  # number of samples to draw
max_new_tokens = 200  # tokens generated per sample
temperature = 0.8  # 1.0 = no change, < 1.0 = less random, 0 = greedy
top_k = 200  # keep only the top_k most likely tokens (None = all)
seed = 1337
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu', 'cuda', 'cuda:1', 'mps', ...
dtype = 'bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 'float32'
# -----------------------------------------------------------------------------


def load_checkpoint(out_dir: str, device: str) -> tuple[GPT, dict]:
    """The model of out_dir/ckpt.pt and the run's train config."""
    path = Path(out_dir) / 'ckpt.pt'
    if not path.is_file():
        sys.exit(f"{path} not found: pass --out_dir=<a run folder written by train.py> (or --hf_dir=...)")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = GPT(GPTConfig(**ckpt['model_args']))
    prefix = '_orig_mod.'  # torch.compile'd models save their keys with this prefix
    state = {k.removeprefix(prefix): v for k, v in ckpt['model'].items()}
    model.load_state_dict(state)
    return model, ckpt.get('config', {})


def find_tokenizer(spec: str, config: dict, out_dir: str):
    """--tokenizer, else the spec recorded in the run config, else the dataset folder's meta.json."""
    spec = spec or config.get('tokenizer_spec') or config.get('tokenizer')
    if spec:
        return get_tokenizer(spec)
    if 'dataset' in config:
        import data

        rel = Path(config.get('data_root', 'data')) / config['dataset']
        for data_dir in (rel, Path(out_dir).resolve().parent / rel):  # relative to cwd, or beside the run
            if (data_dir / 'meta.json').is_file():
                return data.dataset_tokenizer(data_dir)
    sys.exit("cannot tell which tokenizer this model uses (no tokenizer in the checkpoint config, no dataset "
             "meta.json found): pass --tokenizer=SPEC (a .model file, 'gpt2', 'cl100k_base', ...)")


def main() -> None:
    configure(globals(), sys.argv[1:])
    torch.manual_seed(seed)
    if hf_dir:
        if not tokenizer:
            sys.exit("--hf_dir needs --tokenizer=SPEC ('gpt2', or the folder's spiece.model for GPT-SW3)")
        model, run_config = GPT.from_hf(hf_dir), {}
    else:
        model, run_config = load_checkpoint(out_dir, device)
    tok = find_tokenizer(tokenizer, run_config, out_dir)
    model.eval().to(device)
    device_type = 'cuda' if 'cuda' in device else 'cpu'
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type, dtype=ptdtype)

    text = Path(start[5:]).read_text(encoding='utf-8') if start.startswith('FILE:') else start
    stop_tokens = None
    if chat:  # GPT-SW3 instruct format (tokenizer_gptsw3.md §9), built by data.py as for the training data
        import data

        ids, _ = data.format_chat([{'role': 'user', 'content': text}], tok, add_generation_prompt=True)
        stop_tokens = [t for t in (tok.bos, tok.eot) if t is not None]
    else:
        ids = tok.encode(text)
    if not ids:
        sys.exit("the prompt encodes to no tokens: pass a non-empty --start")
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
    main()
