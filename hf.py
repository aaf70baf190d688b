"""
Hugging Face model folders to and from our models; the one home of Hugging Face in and out:

    model = hf.load_hf("folder")             # GPT2LMHeadModel, LlamaForCausalLM, Qwen3ForCausalLM, GlmForCausalLM,
                                             # Glm4MoeForCausalLM (dense) or StableLmForCausalLM -> model.GPT
    hf.save_hf(model, "out/hf", tokenizer)   # model.GPT -> the one HF architecture that computes the same
                                             # function, plus the tokenizer files and generation_config.json
    model = hf.load_gpt2("gpt2-folder")      # GPT-2 only (GPT-2, GPT-SW3), as before
    hf.save_gpt2(model, "out/hf")            # GPT-2 architecture only, weights and config.json

GPT-2 layout: GPT's parameter names follow Hugging Face GPT-2 (transformer.wte, transformer.h[i].attn.c_attn, ...,
lm_head), so weights map 1:1; only HF's Conv1D layers store (in, out) where nn.Linear stores (out, in).
Llama-family layouts (pos='rope', mlp='swiglu'): our fused c_attn (q|k|v) and c_fc (gate|value) are split into
q/k/v_proj and gate/up_proj, and the rotated channels of q and k are reordered: ours rotates interleaved pairs
(2i, 2i+1) (the OEC code's RoPE), HF's rotate_half pairs (i, i + rot/2); attention scores are dot products of
q and k, so the same permutation of both leaves them unchanged (GLM rotates interleaved pairs like ours).
Which layout holds which options: export_layout. read_weights is the one weight reader, also used by bert.py
for BERT folders. Nothing is downloaded.
"""
import json
from pathlib import Path

import torch

from model import GPT, GPTConfig, swiglu_hidden


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


# ----------------------------------------------------------------------------------------------------
# every layout: which Hugging Face architecture computes the same function as our GPT

ROPE_LAYOUTS = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM", "glm": "GlmForCausalLM",
                "glm4_moe": "Glm4MoeForCausalLM", "stablelm": "StableLmForCausalLM"}  # model_type -> class


def export_layout(c: GPTConfig) -> str:
    """The model_type of the Hugging Face architecture whose forward equals a GPT with config c (fp32):
    'gpt2' (layernorm, learned positions, GELU: check_gpt2), 'llama' (rmsnorm, RoPE on every channel, SwiGLU,
    biases or not), 'qwen3' (llama's + RMSNorm qk-norm over each head before RoPE, no biases), 'glm' (rmsnorm,
    RoPE on a fraction of each head in interleaved pairs as ours, SwiGLU, no biases), 'glm4_moe' (glm's with
    RMSNorm qk-norm over each head before RoPE; every layer dense: first_k_dense_replace = n_layer), 'stablelm'
    (layernorm, RoPE on a fraction of each head, SwiGLU, optional per-head LayerNorm qk-norm, no biases: the OEC
    architecture). Raises ValueError naming every option of c that no exportable architecture holds."""
    if c.pos == "learned":
        check_gpt2(c)
        return "gpt2"
    bad = []
    if c.norm not in ("layernorm", "rmsnorm"):
        bad.append(f"norm={c.norm!r} (no Hugging Face architecture has DyT/DyISRU norms)")
    if c.logit_softcap is not None:
        bad.append(f"logit_softcap={c.logit_softcap} (Llama, Qwen3, GLM and StableLM do not soft-cap logits)")
    if c.mlp != "swiglu":
        bad.append(f"mlp={c.mlp!r} with pos='rope' (Llama, Qwen3, GLM and StableLM use SwiGLU)")
    layout = None
    if c.norm == "layernorm":
        layout = "stablelm"
        if c.bias:
            bad.append("bias=True with norm='layernorm' (StableLM has no MLP, output-projection or qk-norm biases)")
    elif c.norm == "rmsnorm" and not c.qk_norm:
        layout = "llama" if c.rope_fraction == 1 else "glm"
        if c.bias and layout == "glm":
            bad.append(f"bias=True with rope_fraction={c.rope_fraction} (GLM has no MLP or output-projection "
                       "biases; Llama has biases but rotates every channel: rope_fraction=1.0)")
    elif c.norm == "rmsnorm":
        layout = "qwen3" if c.rope_fraction == 1 else "glm4_moe"
        if c.bias:
            bad.append("bias=True with qk_norm=True and norm='rmsnorm' (Qwen3 and GLM-4-MoE, RMSNorm over each "
                       "head before RoPE, have no MLP biases; OLMo-2 normalises the whole projection, not each head)")
    if bad:
        raise ValueError("cannot export to a Hugging Face architecture with the same function: " + "; ".join(bad)
                         + ". Keep the torch checkpoint instead.")
    return layout


# ----------------------------------------------------------------------------------------------------
# Llama-family layouts: one table maps our tensors to theirs, used in both directions

def _rope_order(head_dim: int, rot: int) -> torch.Tensor:
    """HF rotate_half's channel order of one head, in our channel indices: [0, 2, .., rot-2, 1, 3, .., rot-1,
    rot, .., head_dim-1] (our pair (2i, 2i+1) becomes their pair (i, i + rot/2), both rotated by angle i)."""
    return torch.cat([torch.arange(0, rot, 2), torch.arange(1, rot, 2), torch.arange(rot, head_dim)])


def _reorder(t: torch.Tensor, heads: int, order: torch.Tensor) -> torch.Tensor:
    """Rows of t (heads * head_dim, ...) reordered within each head by order (head_dim,)."""
    return t.reshape(heads, len(order), *t.shape[1:])[:, order].reshape(t.shape)


def _rope_table(c: GPTConfig, layout: str) -> list[tuple[str, str, slice | None, int]]:
    """(our key, HF key, rows of our tensor, heads whose channels get _rope_order) for every tensor of a
    Llama-family layout. One our key on several HF keys: copies (StableLM's per-head qk LayerNorms)."""
    hs, ff = c.n_embd // c.n_head, swiglu_hidden(c.n_embd)
    q, kv = c.n_head * hs, c.n_kv_head * hs
    rot = 0 if layout == "glm" else 1  # GLM rotates interleaved pairs, as we do: no reordering
    ln_bias = ("weight", "bias") if layout == "stablelm" else ("weight",)  # nn.LayerNorm always has a bias
    lin = ("weight", "bias") if c.bias else ("weight",)
    t = [("transformer.wte.weight", "model.embed_tokens.weight", None, 0)]
    for i in range(c.n_layer):
        o, h = f"transformer.h.{i}.", f"model.layers.{i}."
        t += [(f"{o}ln_1.{p}", f"{h}input_layernorm.{p}", None, 0) for p in ln_bias]
        t += [(f"{o}ln_2.{p}", f"{h}post_attention_layernorm.{p}", None, 0) for p in ln_bias]
        for p in lin:
            t += [(f"{o}attn.c_attn.{p}", f"{h}self_attn.q_proj.{p}", slice(0, q), rot * c.n_head),
                  (f"{o}attn.c_attn.{p}", f"{h}self_attn.k_proj.{p}", slice(q, q + kv), rot * c.n_kv_head),
                  (f"{o}attn.c_attn.{p}", f"{h}self_attn.v_proj.{p}", slice(q + kv, q + 2 * kv), 0),
                  (f"{o}attn.c_proj.{p}", f"{h}self_attn.o_proj.{p}", None, 0),
                  (f"{o}mlp.c_proj.{p}", f"{h}mlp.down_proj.{p}", None, 0)]
            if layout == "glm":  # GLM-4-MoE's dense MLP has gate_proj and up_proj, as Llama
                t.append((f"{o}mlp.c_fc.{p}", f"{h}mlp.gate_up_proj.{p}", None, 0))
            else:
                t += [(f"{o}mlp.c_fc.{p}", f"{h}mlp.gate_proj.{p}", slice(0, ff), 0),
                      (f"{o}mlp.c_fc.{p}", f"{h}mlp.up_proj.{p}", slice(ff, 2 * ff), 0)]
        if c.qk_norm and layout in ("qwen3", "glm4_moe"):
            t += [(f"{o}attn.{x}_norm.weight", f"{h}self_attn.{x}_norm.weight", None, 1) for x in "qk"]
        elif c.qk_norm:  # StableLM: one LayerNorm per head, without bias; ours is one shared by every head
            t += [(f"{o}attn.q_norm.weight", f"{h}self_attn.q_layernorm.norms.{j}.weight", None, 1)
                  for j in range(c.n_head)]
            t += [(f"{o}attn.k_norm.weight", f"{h}self_attn.k_layernorm.norms.{j}.weight", None, 1)
                  for j in range(c.n_kv_head)]
    t += [(f"transformer.ln_f.{p}", f"model.norm.{p}", None, 0) for p in ln_bias]
    if not c.tie_embeddings:
        t.append(("lm_head.weight", "lm_head.weight", None, 0))
    return t


def _rope_state_to_hf(model: GPT, layout: str) -> dict[str, torch.Tensor]:
    c, ours = model.config, model.state_dict()
    order = _rope_order(c.n_embd // c.n_head, int(c.n_embd // c.n_head * c.rope_fraction))
    sd = {}
    for key, hf_key, rows, heads in _rope_table(c, layout):
        if key not in ours:  # a LayerNorm bias of a bias=False model: zero, the same function
            sd[hf_key] = torch.zeros(c.n_embd)
            continue
        v = ours[key].detach().to("cpu", torch.float32)
        v = v[rows] if rows is not None else v
        sd[hf_key] = (_reorder(v, heads, order) if heads else v).contiguous()
    return sd


def _rope_state_from_hf(sd: dict[str, torch.Tensor], model: GPT, layout: str, path: Path) -> None:
    """Copy an HF state dict of `layout` into model (built with the config of _rope_config_from_hf). A bias our
    model has and the HF class lacks (e.g. GLM's MLP) starts at zero: the same function."""
    c, ours = model.config, model.state_dict()
    order = _rope_order(c.n_embd // c.n_head, int(c.n_embd // c.n_head * c.rope_fraction))
    inverse = torch.argsort(order)
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}  # old files store it
    if c.tie_embeddings:
        sd.pop("lm_head.weight", None)  # the same tensor as embed_tokens (often not stored at all)
    table = _rope_table(c, layout)
    unexpected = sorted(set(sd) - {hf_key for _, hf_key, _, _ in table})
    if unexpected:
        raise ValueError(f"{path}: weights our GPT has no place for: {unexpected[:5]}")
    copied = {}
    with torch.no_grad():
        for key, hf_key, rows, heads in table:
            if hf_key not in sd:
                if key.endswith(".bias"):
                    continue  # ours starts at zero (init_weights)
                raise ValueError(f"{path}: {hf_key} is missing from the weights")
            v = sd[hf_key].float()
            if key not in ours:  # a bias=False model: the HF LayerNorm bias must be zero
                if v.abs().max() > 0:
                    raise ValueError(f"{path}: {hf_key} is not zero but the model has no biases")
                continue
            target = ours[key][rows] if rows is not None else ours[key]
            if v.shape != target.shape:
                raise ValueError(f"{path}: {hf_key} has shape {tuple(v.shape)}, expected {tuple(target.shape)}")
            v = _reorder(v, heads, inverse) if heads else v
            if key in copied and key.endswith("_norm.weight") and not torch.equal(copied[key], v):
                raise ValueError(f"{path}: {hf_key} differs from head 0's: our qk-norm is one norm shared "
                                 "by every head")
            copied[key] = v
            target.copy_(v)


_EPS = 1e-5  # our LayerNorm and RMSNorm epsilon (norms.py)


def _rope_config_to_hf(c: GPTConfig, layout: str) -> dict:
    """config.json of a Llama-family layout. rope_theta and partial_rotary_factor are written both inside
    rope_parameters (transformers >= 5) and at the top level (transformers 4)."""
    rope = dict(rope_type="default", rope_theta=c.rope_theta)
    if layout in ("glm", "glm4_moe", "stablelm"):
        rope["partial_rotary_factor"] = c.rope_fraction
    hf = dict(architectures=[ROPE_LAYOUTS[layout]], model_type=layout, vocab_size=c.vocab_size,
              hidden_size=c.n_embd, intermediate_size=swiglu_hidden(c.n_embd), num_hidden_layers=c.n_layer,
              num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head, head_dim=c.n_embd // c.n_head,
              hidden_act="silu", max_position_embeddings=c.block_size, tie_word_embeddings=c.tie_embeddings,
              rope_parameters=rope, attention_dropout=c.dropout, initializer_range=0.02, use_cache=True,
              torch_dtype="float32", **{k: v for k, v in rope.items() if k != "rope_type"})
    if layout == "stablelm":
        hf.update(layer_norm_eps=_EPS, use_qkv_bias=False, qk_layernorm=c.qk_norm, use_parallel_residual=False,
                  hidden_dropout=c.dropout)
    else:
        hf.update(rms_norm_eps=_EPS, attention_bias=c.bias)
    if layout == "llama":
        hf.update(mlp_bias=c.bias, pretraining_tp=1)
    if layout == "qwen3":
        hf.update(use_sliding_window=False)
    if layout == "glm4_moe":  # no mixture-of-experts layer: the first n_layer layers are dense
        hf.update(use_qk_norm=c.qk_norm, first_k_dense_replace=c.n_layer)
    return hf


def _rope_config_from_hf(hf: dict, path: Path) -> dict:
    """GPTConfig kwargs (bias aside) from a Llama-family config.json; refuse what our GPT cannot compute exactly."""
    layout, bad = hf["model_type"], []
    heads = hf["num_attention_heads"]
    hs = hf["hidden_size"] // heads
    rope = hf.get("rope_parameters") or dict(rope_type=(hf.get("rope_scaling") or {}).get("rope_type", "default"),
                                             rope_theta=hf.get("rope_theta", 10000.0))
    default_fraction = {"glm": 0.5, "glm4_moe": 0.5, "stablelm": 0.25}.get(layout, 1.0)  # the classes' defaults
    fraction = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", default_fraction))
    if layout in ("llama", "qwen3"):
        fraction = 1.0  # their attention rotates every channel, whatever the config says
    eps = hf.get("layer_norm_eps" if layout == "stablelm" else "rms_norm_eps", _EPS)
    for ok, what in ((hf.get("hidden_act", "silu") == "silu", f"hidden_act={hf.get('hidden_act')!r} (ours: silu)"),
                     (rope.get("rope_type", "default") == "default",
                      f"rope type {rope.get('rope_type')!r} (ours: the default RoPE; no scaling)"),
                     ((hf.get("head_dim") or hs) == hs and hf["hidden_size"] % heads == 0,
                      f"head_dim={hf.get('head_dim')} (ours: hidden_size/num_attention_heads={hs})"),
                     (hf["intermediate_size"] == swiglu_hidden(hf["hidden_size"]),
                      f"intermediate_size={hf['intermediate_size']} (ours: 256 * ceil(8/3 * hidden_size / 256) = "
                      f"{swiglu_hidden(hf['hidden_size'])})"),
                     (abs(eps - _EPS) < 1e-12, f"norm epsilon {eps} (ours: {_EPS})"),
                     (not hf.get("use_sliding_window"), "use_sliding_window=True"),
                     (not hf.get("use_parallel_residual"), "use_parallel_residual=True"),
                     (hf.get("first_k_dense_replace", 1) >= hf["num_hidden_layers"] or layout != "glm4_moe",
                      f"first_k_dense_replace={hf.get('first_k_dense_replace', 1)} < num_hidden_layers "
                      "(mixture-of-experts layers; ours are dense)")):
        if not ok:
            bad.append(what)
    if bad:
        raise ValueError(f"{path}/config.json: not representable by model.GPT: " + "; ".join(bad))
    return dict(vocab_size=hf["vocab_size"], block_size=hf["max_position_embeddings"],
                n_layer=hf["num_hidden_layers"], n_head=heads, n_kv_head=hf.get("num_key_value_heads") or heads,
                n_embd=hf["hidden_size"], norm="layernorm" if layout == "stablelm" else "rmsnorm", pos="rope",
                rope_theta=float(rope.get("rope_theta", 10000.0)), rope_fraction=float(fraction), mlp="swiglu",
                qk_norm=layout == "qwen3" or bool(hf.get("qk_layernorm") or hf.get("use_qk_norm")))


def _rope_bias(hf: dict, sd: dict[str, torch.Tensor]) -> bool:
    """Whether our GPT needs biases for this folder: any bias the HF class has (the others start at zero)."""
    if hf["model_type"] == "stablelm":
        return bool(hf.get("use_qkv_bias")) or any(v.abs().max() > 0 for k, v in sd.items()
                                                   if k.endswith("layernorm.bias") or k == "model.norm.bias")
    return bool(hf.get("attention_bias") or hf.get("mlp_bias"))


def load_hf(path: str | Path, dropout: float = 0.0) -> GPT:
    """A GPT computing the same function as a local Hugging Face folder: GPT2LMHeadModel (load_gpt2) or one of
    ROPE_LAYOUTS (Llama, Qwen3, GLM, GLM-4-MoE with dense layers only, StableLM). Raises
    FileNotFoundError for a missing file, ValueError for a config or weights our GPT cannot represent exactly."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path / 'config.json'} not found: pass a folder saved by save_pretrained() "
                                "(or by hf.save_hf)")
    hf = json.loads((path / "config.json").read_text())
    kind = hf.get("model_type", "gpt2")
    if kind == "gpt2":
        return load_gpt2(path, dropout)
    if kind not in ROPE_LAYOUTS:
        raise ValueError(f"{path}: model_type={kind!r}; the folders that load into GPT are gpt2, "
                         f"{', '.join(ROPE_LAYOUTS)}")
    args = _rope_config_from_hf(hf, path)
    sd = read_weights(path)
    tied = hf["tie_word_embeddings"] if "tie_word_embeddings" in hf else "lm_head.weight" not in sd
    model = GPT(GPTConfig(**args, bias=_rope_bias(hf, sd), tie_embeddings=tied, dropout=dropout))
    _rope_state_from_hf(sd, model, kind, path)
    return model


# ----------------------------------------------------------------------------------------------------
# tokenizer files: AutoTokenizer.from_pretrained(folder) gives our Tokenizer's ids

# text every exported tokenizer must encode as ours does before anything is written: several scripts, runs of
# spaces, tabs and newlines, digits, punctuation, code, characters normalize() changes (NBSP, soft hyphen, NFD)
PROBE = ("Hej! Vad är klockan? Það er gott veður i dag, sa Ærlig. Ørnen flyver over Åsen.\n\n"
         "To be, or not to be:   that is the question.\t\tWhere's 3.14159 + 2,718 = 5.86?\n"
         "def f(x):\n    return x ** 2  # 1234567890\n"
         "Γειά σου κόσμε — Привет, мир! 你好，世界。 مرحبا 🙂🎉 naïve café e\u0301 1\u00a0000 co\u00adop"
         "     trailing spaces    \n  \n")


def _special_ids(tok) -> dict:
    """bos/eos/pad ids for config.json and generation_config.json: the SentencePiece model's own (GPT-SW3:
    <s> 2, <|endoftext|> 3, <pad> 0), or tiktoken's end-of-text as both bos and eos as GPT-2 publishes it."""
    if tok is None:
        return dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if tok.sp is not None:
        pad = tok.sp.pad_id()
        return dict(bos_token_id=tok.bos, eos_token_id=tok.eot, pad_token_id=pad if pad >= 0 else None)
    return dict(bos_token_id=tok.eot, eos_token_id=tok.eot, pad_token_id=None)


def _tiktoken_merges(enc) -> list[tuple[str, str]]:
    """BPE merges, in rank order, that make a byte-level BPE tokenizer reproduce a tiktoken encoding: each token
    of two or more bytes is made by merging the two parts that byte-pair encoding with only the lower ranks
    leaves of it (tiktoken's BPE merges the lowest-ranked adjacent pair first, so rank order is merge order)."""
    from tokenizer import _bytes_to_unicode
    b2u = _bytes_to_unicode()
    ranks = enc._mergeable_ranks
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            pair_ranks = [ranks.get(a + b, rank) for a, b in zip(parts, parts[1:])]
            best = min(range(len(pair_ranks)), key=pair_ranks.__getitem__)
            if pair_ranks[best] >= rank:
                break
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        if len(parts) != 2:
            raise ValueError(f"tiktoken token {token!r} (rank {rank}) is not one merge of lower-ranked tokens")
        merges.append(tuple("".join(b2u[b] for b in p) for p in parts))
    return merges


def _tiktoken_to_hf(tok, model_max_length: int):
    """A transformers fast tokenizer (tokenizer.json) with the same ids as a tiktoken Encoding: byte-level BPE
    with the encoding's vocabulary, merges from its ranks, its pre-tokenisation regex, and its special tokens."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import PreTrainedTokenizerFast

    from tokenizer import _bytes_to_unicode
    b2u, enc = _bytes_to_unicode(), tok.enc
    vocab = {"".join(b2u[b] for b in token): rank for token, rank in enc._mergeable_ranks.items()}
    vocab |= enc._special_tokens  # at their own ids (cl100k_base leaves a gap before them): added tokens reuse them
    core = HFTokenizer(models.BPE(vocab, _tiktoken_merges(enc), ignore_merges=False))
    # Oniguruma (the tokenizers library's regex engine) reads `{1,3}+` as a repeated group, not as possessive
    # (cl100k_base's digit runs): at the end of an alternative, greedy `{1,3}` matches the same
    pattern = enc._pat_str.replace("{1,3}+", "{1,3}")
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    eot = enc.decode_single_token_bytes(enc.eot_token).decode()
    hf = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=eot, eos_token=eot, unk_token=eot,
                                 model_max_length=model_max_length, clean_up_tokenization_spaces=False)
    hf.add_special_tokens({"additional_special_tokens": sorted(set(enc._special_tokens) - {eot})})
    return hf


def _sentencepiece_to_hf(tok, model_max_length: int):
    """transformers' GPTSw3Tokenizer over our SentencePiece model: it applies the same normalize() (GPT-SW3's
    preprocess_text: tokenizer.py) before SentencePiece, and names the model's own special pieces."""
    from transformers import GPTSw3Tokenizer
    sp = tok.sp
    if tok.eot is None:
        raise ValueError(f"{tok.name} has no end-of-text piece (eos_id=-1): GPTSw3Tokenizer would add one "
                         "with a new id; train the tokenizer with an eos piece")
    piece = sp.id_to_piece
    return GPTSw3Tokenizer(vocab_file=tok.name, name_or_path=str(tok.name), eos_token=piece(tok.eot),
                           unk_token=piece(tok.unk), bos_token=piece(tok.bos if tok.bos is not None else tok.eot),
                           pad_token=piece(sp.pad_id() if sp.pad_id() >= 0 else tok.unk),
                           model_max_length=model_max_length, clean_up_tokenization_spaces=False)


def hf_tokenizer(tok, model_max_length: int):
    """A transformers tokenizer with exactly tok's ids, checked on PROBE (line by line and whole): GPTSw3Tokenizer
    for a SentencePiece model, a byte-level BPE tokenizer.json for a tiktoken encoding. Both map the literal
    text of a special token ("<|endoftext|>", "<s>") to its id where ours encodes its characters: pass
    split_special_tokens=True to transformers for ours. Raises ValueError (the encoding, the first text that
    differs) when they differ."""
    hf = _sentencepiece_to_hf(tok, model_max_length) if tok.sp is not None else _tiktoken_to_hf(tok, model_max_length)
    if hf.eos_token_id != tok.eot:
        raise ValueError(f"tokenizer {tok.name} cannot be exported exactly: its end-of-text id {tok.eot} becomes "
                         f"{hf.eos_token_id} in transformers")
    for text in [PROBE, *PROBE.splitlines(keepends=True)]:
        ours, theirs = tok.encode(text), hf(text, add_special_tokens=False)["input_ids"]
        if ours != theirs:
            i = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            raise ValueError(f"tokenizer {tok.name} cannot be exported exactly: the Hugging Face tokenizer built "
                             f"from it encodes {text!r} to {theirs[i:i + 3]} at token {i}, ours to {ours[i:i + 3]}")
    return hf


# ----------------------------------------------------------------------------------------------------
# one export for every layout

def save_hf(model: GPT, path: str | Path, tokenizer=None, hf_tok=None) -> str:
    """Write `model` as the Hugging Face folder of export_layout(model.config): config.json, model.safetensors,
    generation_config.json and, with tokenizer (tokenizer.Tokenizer), its files (hf_tokenizer; hf_tok: one
    built already) with bos/eos/pad ids in both configs. Every check runs before anything is written.
    Returns the layout (model_type)."""
    from safetensors.torch import save_file

    c = model.config
    layout = export_layout(c)
    if tokenizer is not None and hf_tok is None:
        hf_tok = hf_tokenizer(tokenizer, c.block_size)
    ids = _special_ids(tokenizer)
    path = Path(path)
    if layout == "gpt2":
        save_gpt2(model, path)
        cfg = json.loads((path / "config.json").read_text())
    else:
        path.mkdir(parents=True, exist_ok=True)
        save_file(_rope_state_to_hf(model, layout), str(path / "model.safetensors"), metadata={"format": "pt"})
        cfg = _rope_config_to_hf(c, layout)
    (path / "config.json").write_text(json.dumps(cfg | ids, indent=2) + "\n")
    gen = dict(ids, do_sample=False, max_length=c.block_size)  # greedy unless asked: the same as sample.py's
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    if hf_tok is not None:
        hf_tok.save_pretrained(path)
        tok_cfg = json.loads((path / "tokenizer_config.json").read_text())
        if tok_cfg.get("tokenizer_class") == "TokenizersBackend":  # transformers 5's name; 4 knows only this one
            tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
            (path / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    return layout
