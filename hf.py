"""
Hugging Face model folders (config.json + model.safetensors or pytorch_model.bin) to and from our models:

    model = hf.load_gpt2("gpt2-folder")      # GPT2LMHeadModel (GPT-2, GPT-SW3) -> model.GPT
    hf.save_gpt2(model, "out/hf")            # model.GPT (GPT-2 architecture) -> GPT2LMHeadModel folder

GPT's parameter names follow Hugging Face GPT-2 (transformer.wte, transformer.h[i].attn.c_attn, ..., lm_head),
so weights map 1:1; only HF's Conv1D layers store (in, out) where nn.Linear stores (out, in). read_weights is
the one weight reader, also used by bert.py for BERT folders. Nothing is downloaded.
"""
import json
from pathlib import Path

import torch

from model import GPT, GPTConfig


def load_gpt2(path: str | Path, dropout: float = 0.0) -> GPT:
    """A GPT with the weights of a local Hugging Face GPT2LMHeadModel folder (config.json + model.safetensors
    or pytorch_model.bin). Raises FileNotFoundError for a missing file, ValueError for a config or weights our
    GPT cannot represent exactly.

    The HF dropout settings are not copied (pass dropout= for fine-tuning)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path / 'config.json'} not found: pass a folder saved by "
                                "GPT2LMHeadModel.save_pretrained() (or by hf.save_gpt2)")
    hf = json.loads((path / "config.json").read_text())
    config = GPTConfig(**_config_from_hf(hf, path), dropout=dropout)
    sd = read_weights(path)
    # GPT2Model folders lack the "transformer." prefix; old GPT-2 files store the causal masks as buffers
    sd = {(k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}"): v
          for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    if config.tie_embeddings:
        sd.pop("lm_head.weight", None)  # the same tensor as wte (often not stored at all)
    model = GPT(config)
    ours = model.state_dict()
    if config.tie_embeddings:
        ours.pop("lm_head.weight")
    missing, unexpected = sorted(set(ours) - set(sd)), sorted(set(sd) - set(ours))
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match a GPT-2 layout: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    with torch.no_grad():
        for k, v in sd.items():
            if k.endswith(_CONV1D):  # HF Conv1D stores (in, out), nn.Linear (out, in)
                v = v.t()
            if v.shape != ours[k].shape:
                raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, "
                                 f"expected {tuple(ours[k].shape)}")
            ours[k].copy_(v)
    return model


def check_gpt2(c: GPTConfig) -> None:
    """Raise ValueError naming every option of c the Hugging Face GPT-2 layout cannot represent."""
    wrong = [f"{k}={getattr(c, k)!r} (GPT-2 needs {ok!r})" for k, ok in
             (("norm", "layernorm"), ("pos", "learned"), ("qk_norm", False), ("n_kv_head", c.n_head),
              ("logit_softcap", None)) if getattr(c, k) != ok]
    if c.mlp == "swiglu":
        wrong.append("mlp='swiglu' (GPT-2 needs 'gelu' or 'gelu_tanh')")
    if wrong:
        raise ValueError("cannot export to the Hugging Face GPT-2 layout: " + "; ".join(wrong) +
                         ". Keep the torch checkpoint instead, or train with a GPT-2 architecture.")


def save_gpt2(model: GPT, path: str | Path) -> None:
    """Write `model` as a Hugging Face GPT2LMHeadModel folder (config.json + model.safetensors).

    Only the GPT-2 architecture exports: layernorm, gelu/gelu_tanh, learned positions, no qk-norm,
    no GQA, no soft-capping. bias=False exports as zero biases (the same function).
    """
    from safetensors.torch import save_file

    check_gpt2(model.config)
    c = model.config
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith(_CONV1D):
            v = v.t()
        sd[k] = v.detach().to("cpu", torch.float32).contiguous()
        if not c.bias and k.endswith(_CONV1D + ("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            sd[k.removesuffix("weight") + "bias"] = torch.zeros(sd[k].size(-1))  # GPT-2 always has biases
    if c.tie_embeddings:
        del sd["lm_head.weight"]  # stored once, as wte (safetensors refuses shared tensors)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    hf = dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", vocab_size=c.vocab_size,
              n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head, n_inner=None,
              activation_function="gelu_new" if c.mlp == "gelu_tanh" else "gelu",
              resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout, layer_norm_epsilon=1e-5,
              initializer_range=0.02, tie_word_embeddings=c.tie_embeddings, torch_dtype="float32")
    (path / "config.json").write_text(json.dumps(hf, indent=2) + "\n")


_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_HF_GELU = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
            "gelu_fast": "gelu_tanh"}


def _config_from_hf(hf: dict, path: Path) -> dict:
    """GPTConfig kwargs from a Hugging Face GPT2Config dict; refuse what our GPT cannot represent exactly."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{path}: model_type={hf['model_type']!r}; only GPT2LMHeadModel checkpoints "
                         "(GPT-2, GPT-SW3) load into GPT")
    act = hf.get("activation_function", "gelu_new")
    bad = []
    if act not in _HF_GELU:
        bad.append(f"activation_function={act!r} (supported: {', '.join(_HF_GELU)})")
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        bad.append(f"n_inner={hf['n_inner']} (our GELU MLP is 4 * n_embd wide)")
    if abs(hf.get("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12:
        bad.append(f"layer_norm_epsilon={hf['layer_norm_epsilon']} (ours is 1e-5)")
    for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(key):
            bad.append(f"{key}=True")
    if not hf.get("scale_attn_weights", True):
        bad.append("scale_attn_weights=False")
    if bad:
        raise ValueError(f"{path}/config.json: not representable by model.GPT: " + "; ".join(bad))
    return dict(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                n_head=hf["n_head"], n_embd=hf["n_embd"], bias=True, norm="layernorm",
                pos="learned", mlp=_HF_GELU[act], tie_embeddings=hf.get("tie_word_embeddings", True))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a Hugging Face folder: model.safetensors, else pytorch_model.bin (weights_only)."""
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin (sharded checkpoints are not "
                            "supported: re-save with save_pretrained(..., max_shard_size='100GB'))")
