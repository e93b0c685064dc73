#!/usr/bin/env python3
"""Writes golden.json: a small SentencePiece BPE model (byte fallback on, as Llama 2, Mistral
7B and TinyLlama have it) trained by the `sentencepiece` library itself, as the vocabulary a
GGUF stores it (`tokenizer.ggml.tokens`, `.scores`, `.token_type`), and the ids
`sentencepiece` gives a set of texts (with its dummy-prefix space, no BOS).

The test writes that vocabulary into a GGUF whose `tokenizer.ggml.model` is `llama` and checks
our tokenizer gives the same ids and decodes them back to the text.

CI does not run this; the file it writes is committed. Usage (needs sentencepiece):

    python3 golden.py
"""

import io
import json
import os

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))

CORPUS = """The quick brown fox jumps over the lazy dog. A model answers questions about the weather,
the news and the time. Rust programs are fast; Python programs are easy to write. Hello world!
Mistral and Llama use SentencePiece with byte fallback. Numbers like 12345 and 3.14159 appear.
Tokenizers split text into pieces: words, sub-words and bytes. The farmer counts his sheep.
""" * 20

TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "  two leading spaces and trailing  ",
    "unseen: Zyzzyva qat",
    "café naïve — déjà vu 数据",
    "emoji 🦀 and tabs\tand\nnewlines",
    "12345 + 3.14159 = ?",
    "a",
]

TYPES = {"normal": 1, "unknown": 2, "control": 3, "byte": 6}


def main():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines()),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        pieces.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(TYPES["unknown"])
        elif sp.is_control(i):
            types.append(TYPES["control"])
        elif sp.is_byte(i):
            types.append(TYPES["byte"])
        else:
            types.append(TYPES["normal"])
    golden = {
        "sentencepiece": spm.__version__,
        "tokens": pieces,
        "scores": scores,
        "token_type": types,
        "cases": [{"text": t, "ids": sp.encode(t)} for t in TEXTS],
    }
    with open(os.path.join(HERE, "golden.json"), "w", encoding="utf-8") as fh:
        json.dump(golden, fh, ensure_ascii=False)
        fh.write("\n")
    for t in TEXTS:
        print(repr(t), sp.encode(t, out_type=str))


if __name__ == "__main__":
    main()
