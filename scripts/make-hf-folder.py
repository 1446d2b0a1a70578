#!/usr/bin/env python3
"""Write a random-weight Hugging Face model folder of a real model's shape (bf16 safetensors,
as `save_pretrained` lays it out), for benchmarks of loading folders (`tinyrt generate DIR
--requant nf4`). numpy only; the weights are written tensor by tensor, never all in memory.

    scripts/make-hf-folder.py --shape tinyllama-1.1b --tokenizer-from DIR OUT_DIR [--shards 2] [--seed 0]

The folder gets `config.json` (LlamaForCausalLM, transformers-4 layout), `generation_config.json`,
`model.safetensors` (or `model-0000K-of-0000N.safetensors` + `model.safetensors.index.json`),
and the tokenizer files of `--tokenizer-from` (a folder with `tokenizer.json`; rows of the
embedding past its vocabulary are padding, as in padded Hub checkpoints). Weights: normals
scaled 1/sqrt(fan_in) for matrices, σ 0.02 for embeddings, norms 1 ± 0.05.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np

SHAPES = {
    # hidden, intermediate, layers, heads, kv heads, vocab, context, tied
    "tinyllama-1.1b": (2048, 5632, 22, 32, 4, 32000, 2048, False),
    "smollm2-135m": (576, 1536, 30, 9, 3, 49152, 8192, True),
}


def bf16_bytes(x):
    """float32 → bf16 bits, round to nearest even (as torch's `.to(torch.bfloat16)`)."""
    u = x.astype(np.float32).view(np.uint32)
    rounded = u + 0x7FFF + ((u >> 16) & 1)
    return (rounded >> 16).astype(np.uint16).tobytes()


def tensors(shape):
    h, f, n_layer, n_head, n_kv, vocab, _, tied = shape
    hd = h // n_head
    out = [("model.embed_tokens.weight", (vocab, h), "emb")]
    for i in range(n_layer):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (h,), "norm"),
            (p + "mlp.down_proj.weight", (h, f), "mat"),
            (p + "mlp.gate_proj.weight", (f, h), "mat"),
            (p + "mlp.up_proj.weight", (f, h), "mat"),
            (p + "post_attention_layernorm.weight", (h,), "norm"),
            (p + "self_attn.k_proj.weight", (n_kv * hd, h), "mat"),
            (p + "self_attn.o_proj.weight", (h, h), "mat"),
            (p + "self_attn.q_proj.weight", (h, h), "mat"),
            (p + "self_attn.v_proj.weight", (n_kv * hd, h), "mat"),
        ]
    out.append(("model.norm.weight", (h,), "norm"))
    if not tied:
        out.append(("lm_head.weight", (vocab, h), "emb"))
    return out


def values(rng, shape, kind):
    if kind == "norm":
        return 1.0 + 0.05 * rng.standard_normal(shape, dtype=np.float32)
    if kind == "emb":
        return 0.02 * rng.standard_normal(shape, dtype=np.float32)
    return rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[1])


def write_shard(path, items, rng):
    header, off = {}, 0
    for name, shape, _ in items:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(len(h).to_bytes(8, "little"))
        fh.write(h)
        for name, shape, kind in items:
            fh.write(bf16_bytes(values(rng, shape, kind)))
    os.replace(tmp, path)
    return off


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--tokenizer-from", required=True)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("out")
    a = ap.parse_args()
    shape = SHAPES[a.shape]
    h, f, n_layer, n_head, n_kv, vocab, ctx, tied = shape
    if not os.path.isfile(os.path.join(a.tokenizer_from, "tokenizer.json")):
        sys.exit(f"make-hf-folder: {a.tokenizer_from} has no tokenizer.json")
    if not 1 <= a.shards <= 64:
        sys.exit("make-hf-folder: --shards must be 1..64")
    os.makedirs(a.out, exist_ok=True)
    tok_cfg = {}
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "chat_template.jinja"):
        src = os.path.join(a.tokenizer_from, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(a.out, name))
    cfg_path = os.path.join(a.tokenizer_from, "tokenizer_config.json")
    if os.path.isfile(cfg_path):
        tok_cfg = json.load(open(cfg_path))
    src_gen = os.path.join(a.tokenizer_from, "generation_config.json")
    gen = json.load(open(src_gen)) if os.path.isfile(src_gen) else {}
    bos, eos = gen.get("bos_token_id", 1), gen.get("eos_token_id", 2)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": h,
        "intermediate_size": f,
        "num_hidden_layers": n_layer,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": h // n_head,
        "vocab_size": vocab,
        "max_position_embeddings": ctx,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.57.0",
    }
    with open(os.path.join(a.out, "config.json"), "w") as fh:
        json.dump(config, fh, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as fh:
        json.dump({"bos_token_id": bos, "eos_token_id": eos, "transformers_version": "4.57.0"}, fh, indent=2)
    rng = np.random.default_rng(a.seed)
    items = tensors(shape)
    if a.shards == 1:
        write_shard(os.path.join(a.out, "model.safetensors"), items, rng)
    else:
        per = -(-len(items) // a.shards)
        weight_map, total = {}, 0
        for k in range(a.shards):
            part = items[k * per : (k + 1) * per]
            name = f"model-{k + 1:05d}-of-{a.shards:05d}.safetensors"
            total += write_shard(os.path.join(a.out, name), part, rng)
            weight_map.update({t[0]: name for t in part})
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as fh:
            json.dump(index, fh, indent=2)
    n_params = sum(int(np.prod(s)) for _, s, _ in items)
    print(f"wrote {a.out}: {a.shape}, {n_params} parameters, bf16, {a.shards} shard(s); "
          f"tokenizer of {a.tokenizer_from} (tokenizer_config: {len(tok_cfg)} keys)")


if __name__ == "__main__":
    main()
