"""Image search with an int8 embedding: embed a folder once, then answer "most similar images" for a query.

    python tools/image_search.py embed_int8.tflite photos/ query.jpg --reference embed.keras --top 5

It uses only the public API: ``load(...).embed`` turns paths, folders or frames into vectors (the preprocessing
stored in the artifact), and a dot product of unit vectors ranks the folder. With ``--reference`` (the float Keras
model the artifact came from) it also embeds the folder in float and prints how often the int8 search finds what
the float search finds (recall@k: the share of int8 results among the float top k), the figure an app depends on.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from resnet_edge import load
from resnet_edge.errors import ResnetEdgeError


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def search(index: np.ndarray, query: np.ndarray, top: int) -> np.ndarray:
    """The positions of the ``top`` most similar rows of ``index`` (cosine similarity), best first."""
    return np.argsort(-(unit(index) @ unit(query)), kind="stable")[:top]


def recall(float_index: np.ndarray, int8_index: np.ndarray, top: int) -> float:
    """Every image a query among the others: the share of the int8 top-k that is in the float top-k."""
    hits = 0
    for position in range(len(float_index)):
        others = np.delete(np.arange(len(float_index)), position)
        wanted = set(others[search(float_index[others], float_index[position], top)])
        found = set(others[search(int8_index[others], int8_index[position], top)])
        hits += len(wanted & found)
    return hits / (top * len(float_index))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", help="an embedding artifact (.tflite, .onnx, .xml, .ncnn.param, .keras)")
    parser.add_argument("folder", help="the images to search")
    parser.add_argument("query", help="the query image")
    parser.add_argument("--reference", help="the float .keras model, to print the int8 search's recall")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        names: list[str] = []
        with load(args.artifact) as embedder:
            index = embedder.embed(args.folder, names=names)
            query = embedder.embed(args.query)[0]
        print(f"indexed {len(names)} images ({index.shape[1]}-d vectors) with {args.artifact}")
        for rank, position in enumerate(search(index, query, args.top), 1):
            print(f"{rank}. {names[position]}  similarity {float(unit(index[position]) @ unit(query)):.3f}")
        if args.reference:
            with load(args.reference) as reference:
                float_index = reference.embed(args.folder)
            k = min(args.top, len(names) - 1)
            print(f"recall@{k} of the int8 search against the float one, every image a query: "
                  f"{recall(float_index, index, k):.2%}")
    except ResnetEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
