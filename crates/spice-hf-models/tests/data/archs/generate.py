#!/usr/bin/env python3
"""Writes the tiny random models of the architectures beyond Llama, built by transformers
itself, and their reference logits.

For each of qwen2, qwen3, mistral and gemma3 it writes `<arch>/`:

- `config.json`, `model.safetensors` (F16 weights, as `save_pretrained` writes them),
  `tokenizer.json`, `tokenizer_config.json` (byte-level BPE over 3 specials + 256 bytes);

and next to the directory `<arch>.reference.safetensors` (outside it, so a loader that maps
every `*.safetensors` there does not take it for weights): for each prompt `p<i>.ids` (I64:
the prompt, then the greedily decoded ids fed one at a time through the cache) and
`p<i>.logits` (F64, one row per id fed: the prefill rows, then one per cached decode step),
with the prompt length in the metadata.

The reference runs transformers' own modeling code in float64 (eager attention; its RoPE
tables stay float32) over the F16 weights widened exactly, so an F32 engine reading the same
file can match it to 1e-4.
Every matrix is 256 columns wide: whole K-quant super-blocks, so the same weights can be
written as a Q4_K GGUF.

CI does not run this: the files it writes are committed. To refresh them (needs torch,
transformers and safetensors):

    python3 crates/spice-hf-models/tests/data/archs/generate.py
"""

import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 259  # <|endoftext|>, <|im_start|>, <|im_end|>, then the 256 byte-level symbols
DECODE_STEPS = 4
PROMPTS = [
    [3 + b for b in b"Hello, world! "],  # 14 positions: past every sliding window
    [1] + [3 + b for b in b"user\nHi"] + [2],
    [72],
]

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=256,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    bos_token_id=None,
    eos_token_id=2,
    pad_token_id=0,
)

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def models():
    t = transformers
    yield "qwen2", t.Qwen2ForCausalLM(
        t.Qwen2Config(
            **COMMON,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            use_sliding_window=False,
            attn_implementation="eager",
        )
    )
    qwen3 = dict(COMMON, num_attention_heads=8)  # 8 heads of 64: wider than the hidden size
    yield "qwen3", t.Qwen3ForCausalLM(
        t.Qwen3Config(
            **qwen3,
            head_dim=64,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            attention_bias=False,
            use_sliding_window=False,
            attn_implementation="eager",
        )
    )
    yield "mistral", t.MistralForCausalLM(
        t.MistralConfig(
            **COMMON,
            sliding_window=5,
            rope_theta=10_000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            attn_implementation="eager",
        )
    )
    yield "gemma3", t.Gemma3ForCausalLM(
        t.Gemma3TextConfig(
            **COMMON,
            head_dim=64,
            query_pre_attn_scalar=48,
            sliding_window=5,
            layer_types=["sliding_attention", "full_attention"],
            rope_theta=1_000_000.0,
            rope_local_base_freq=10_000.0,
            rms_norm_eps=1e-6,
            hidden_activation="gelu_pytorch_tanh",
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
            rope_scaling=None,
            tie_word_embeddings=True,
            attn_implementation="eager",
        )
    )


def randomize(name, model, seed):
    """Weights wide enough that every part moves the logits (transformers' init is 0.02)."""
    g = torch.Generator().manual_seed(seed)
    gemma = name == "gemma3"
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                # Gemma stores `w - 1`; the others the scale itself.
                lo = -0.5 if gemma else 0.5
                p.copy_(torch.rand(p.shape, generator=g) + lo)
            elif pname.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif "embed" in pname:
                p.copy_(torch.randn(p.shape, generator=g) * (0.05 if gemma else 0.5))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.06)


def byte_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = [""] * 256
    for b, c in zip(bs, cs):
        table[b] = chr(c)
    return table


def tokenizer_json():
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {s: i for i, s in enumerate(specials)}
    for b, c in enumerate(byte_to_unicode()):
        vocab[c] = b + len(specials)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, s in enumerate(specials)
        ],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": False, "vocab": vocab, "merges": [],
        },
    }


def reference(model):
    """Prefill then cached greedy decode in float64; every row of logits the model gave."""
    tensors, meta = {}, {}
    for i, prompt in enumerate(PROMPTS):
        fed = list(prompt)
        out = model(torch.tensor([prompt]), use_cache=True)
        rows = [out.logits[0]]
        past = out.past_key_values
        nxt = int(out.logits[0, -1].argmax())
        for _ in range(DECODE_STEPS):
            fed.append(nxt)
            out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            rows.append(out.logits[0])
            nxt = int(out.logits[0, -1].argmax())
        logits = torch.cat(rows, 0)
        # The cached path must agree with one uncached pass over everything fed (to the
        # float32 RoPE tables transformers computes even for a float64 model: ~1e-6).
        whole = model(torch.tensor([fed]), use_cache=False).logits[0]
        assert torch.allclose(logits, whole, atol=1e-5), "cached and uncached transformers differ"
        tensors[f"p{i}.ids"] = torch.tensor(fed, dtype=torch.int64)
        tensors[f"p{i}.logits"] = logits.contiguous()
        meta[f"p{i}.prompt_len"] = str(len(prompt))
    return tensors, meta


def main():
    torch.set_grad_enabled(False)
    for seed, (name, model) in enumerate(models()):
        out = os.path.join(HERE, name)
        os.makedirs(out, exist_ok=True)
        randomize(name, model, 1000 + seed)
        model = model.half()
        model.save_pretrained(out, safe_serialization=True)
        with open(os.path.join(out, "tokenizer.json"), "w") as f:
            json.dump(tokenizer_json(), f, ensure_ascii=False)
        with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
            json.dump({"chat_template": CHATML, "eos_token": "<|im_end|>",
                       "bos_token": None}, f, indent=1)
        # The reference reads the F16 weights back through transformers' loader: what it
        # computes on is exactly what the file holds.
        loaded = type(model).from_pretrained(out, torch_dtype=torch.float64,
                                             attn_implementation="eager")
        loaded.eval()
        tensors, meta = reference(loaded)
        meta["transformers"] = transformers.__version__
        meta["torch"] = torch.__version__
        save_file(tensors, os.path.join(HERE, f"{name}.reference.safetensors"), metadata=meta)
        print(f"{name}: {sum(p.numel() for p in loaded.parameters())} parameters, "
              f"transformers {transformers.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
