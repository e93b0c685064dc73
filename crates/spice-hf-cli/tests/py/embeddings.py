"""Embeddings through the official OpenAI Python client.

Run by the CLI's `embeddings_*` test against a real `spice-hf serve` of all-MiniLM-L6-v2:

    python3 embeddings.py BASE_URL MODEL GOLDEN_JSON

`client.embeddings.create` asks for base64 by default and decodes it itself; the vectors are
compared with sentence-transformers' (the golden file), then asked for again as floats. The
last line printed is a JSON report the Rust test reads; a failed check raises.
"""

import json
import math
import struct
import sys

from openai import BadRequestError, OpenAI

base, model, golden_path = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600)
golden = json.load(open(golden_path, encoding="utf-8"))["cases"]
texts = [c["text"] for c in golden]
report = {}


def worst(got, want):
    return max(abs(g - w) for g, w in zip(got, want))


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


# The client's default: base64, decoded by the client.
out = client.embeddings.create(model=model, input=texts)
assert [d.index for d in out.data] == list(range(len(texts)))
report["base64_worst"] = max(worst(d.embedding, c["embedding"]) for d, c in zip(out.data, golden))
report["base64_cosine"] = min(cosine(d.embedding, c["embedding"]) for d, c in zip(out.data, golden))
assert report["base64_worst"] < 1e-4, report
assert report["base64_cosine"] >= 0.99999, report
report["prompt_tokens"] = out.usage.prompt_tokens
assert out.usage.prompt_tokens == sum(len(c["ids"]) for c in golden), out.usage

# Floats: the same f32 values as the base64 ones, exactly (JSON prints each f32 in its
# shortest decimal form, which rounds back to the same f32).
floats = client.embeddings.create(model=model, input=texts, encoding_format="float")


def f32(xs):
    return list(struct.unpack(f"<{len(xs)}f", struct.pack(f"<{len(xs)}f", *xs)))


report["float_equals_base64"] = all(
    f32(f.embedding) == b.embedding for f, b in zip(floats.data, out.data)
)
assert report["float_equals_base64"], "float and base64 answers differ"

# Token ids in, as a string out: the golden ids give the golden vector.
ids = client.embeddings.create(model=model, input=[golden[0]["ids"]], encoding_format="float")
report["ids_worst"] = worst(ids.data[0].embedding, golden[0]["embedding"])
assert report["ids_worst"] < 1e-4, report

# A chat request to the embedding model is refused, naming it.
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("chat on an embedding model was accepted")
except BadRequestError as e:
    report["chat_refused"] = str(e)
    assert model in str(e), str(e)

print(json.dumps(report))
