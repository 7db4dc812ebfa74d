"""Near-duplicates across splits, on embeddings (cosine) and on pixels (a 64-bit dHash).

Exact copies (same sha256) are validate's `leakage_across_splits`; these are the near ones:
the same picture re-encoded, cropped a little, brightened. Both searches are exact, not
approximate: scikit-learn's brute-force NearestNeighbors on L2-normalised vectors (where
euclidean distance d and cosine similarity s are tied by s = 1 - d**2 / 2), and XOR +
popcount over the packed hashes, in chunks so memory stays bounded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# (earlier, later): an image of the later split is a leak if it nearly equals an earlier one
SPLIT_PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))
PAIR_COLUMNS = ["split_a", "idx_a", "split_b", "idx_b", "method", "similarity", "hamming"]


def normalise(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, D) float32 rows of unit length (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def nearest_cosine(
    reference: np.ndarray, query: np.ndarray, centre: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row: (index of its most similar reference row, cosine similarity),
    both sides centred on `centre` first (see cross_split_pairs)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=1, algorithm="brute", metric="euclidean")
    nn.fit(normalise(reference - centre))
    dist, idx = nn.kneighbors(normalise(query - centre))  # (Q, 1) each
    return idx[:, 0], 1.0 - dist[:, 0] ** 2 / 2


def dhash(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N,) uint64 difference hashes (8 rows x 8 left/right steps).

    Grey, shrunk to 8 x 9 by area means, then bit = pixel brighter than its right neighbour:
    invariant to brightness and contrast, robust to noise and re-encoding.
    """
    out = np.empty(len(images), dtype=np.uint64)
    for start in range(0, len(images), chunk):
        grey = np.asarray(images[start : start + chunk], dtype=np.float32).mean(axis=3)
        small = _shrink(grey, rows=8, cols=9)  # (n, 8, 9)
        bits = small[:, :, 1:] > small[:, :, :-1]  # (n, 8, 8)
        packed = np.packbits(bits.reshape(len(bits), 64), axis=1)  # (n, 8) uint8
        out[start : start + chunk] = packed.view(">u8")[:, 0]
    return out


def _shrink(grey: np.ndarray, *, rows: int, cols: int) -> np.ndarray:
    """(n, H, W) -> (n, rows, cols) means over equal-as-possible pixel blocks."""
    n, h, w = grey.shape
    if h < rows or w < cols:  # tiny images (digits at 8 px): repeat pixels first
        k = int(np.ceil(max(rows / h, cols / w)))
        grey = grey.repeat(k, axis=1).repeat(k, axis=2)
        n, h, w = grey.shape
    r0 = (np.arange(rows) * h) // rows
    c0 = (np.arange(cols) * w) // cols
    sums = np.add.reduceat(np.add.reduceat(grey, r0, axis=1), c0, axis=2)
    counts = np.outer(np.diff([*r0, h]), np.diff([*c0, w]))
    return sums / counts


def nearest_hash(
    reference: np.ndarray, query: np.ndarray, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash: (index of the closest reference hash, Hamming distance 0..64)."""
    idx = np.empty(len(query), dtype=np.int64)
    dist = np.empty(len(query), dtype=np.int64)
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk, None]  # (c, 1)
        d = np.bitwise_count(q ^ reference[None, :])  # (c, R) uint8
        idx[start : start + chunk] = d.argmin(axis=1)
        dist[start : start + chunk] = d.min(axis=1)
    return idx, dist


def cross_split_pairs(
    *,
    embeddings: dict[str, np.ndarray] | None,
    hashes: dict[str, np.ndarray] | None,
    min_similarity: float,
    max_hamming: int,
) -> pd.DataFrame:
    """One row per later-split image with a near-duplicate in an earlier split.

    `method` says which search found it (embedding, hash or both); the pair shown is the
    embedding match when there is one. Either input may be None (the backbone-free case).
    Embeddings are centred on the train mean first: pooled ReLU features share a large
    positive component, so raw cosine similarity is > 0.97 for most pairs of images.
    """
    centre = None
    if embeddings:
        first = embeddings.get("train", next(iter(embeddings.values())))
        centre = np.asarray(first, dtype=np.float64).mean(axis=0).astype(np.float32)
    frames = []
    for a, b in SPLIT_PAIRS:
        emb = embeddings is not None and a in embeddings and b in embeddings
        hsh = hashes is not None and a in hashes and b in hashes
        if not (emb or hsh):
            continue
        n = len(embeddings[b]) if emb else len(hashes[b])
        j_e, sim = nearest_cosine(embeddings[a], embeddings[b], centre) if emb else (None, None)
        j_h, ham = nearest_hash(hashes[a], hashes[b]) if hsh else (None, None)
        by_emb = sim >= min_similarity if emb else np.zeros(n, bool)
        by_hash = ham <= max_hamming if hsh else np.zeros(n, bool)
        rows = np.flatnonzero(by_emb | by_hash)
        if emb and hsh:
            j = np.where(by_emb[rows], j_e[rows], j_h[rows])
        else:
            j = (j_e if emb else j_h)[rows]
        frames.append(
            pd.DataFrame(
                {
                    "split_a": a,
                    "idx_a": j,
                    "split_b": b,
                    "idx_b": rows,
                    "method": np.select(
                        [by_emb[rows] & by_hash[rows], by_emb[rows]], ["both", "embedding"], "hash"
                    ),
                    "similarity": (
                        _cosine(embeddings[a], j, embeddings[b], rows, centre) if emb else np.nan
                    ),
                    "hamming": _hamming(hashes[a], j, hashes[b], rows) if hsh else -1,
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    return pd.concat(frames, ignore_index=True).sort_values(
        ["split_b", "similarity"], ascending=[True, False], ignore_index=True
    )


def _cosine(ref, i: np.ndarray, query, k: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Centred cosine similarity of the pairs (ref[i], query[k]), rounded for the CSV."""
    sim = (normalise(ref[i] - centre) * normalise(query[k] - centre)).sum(axis=1)
    return np.round(sim, 4)


def _hamming(ref: np.ndarray, i: np.ndarray, query: np.ndarray, k: np.ndarray) -> np.ndarray:
    return np.bitwise_count(ref[i] ^ query[k]).astype(np.int64)


def leak_shares(pairs: pd.DataFrame, sizes: dict[str, int]) -> dict[str, dict]:
    """Per later split: images with a near-duplicate in an earlier split, count and share."""
    out = {}
    for split in ("val", "test"):
        if split in sizes:
            n = int(pairs.loc[pairs.split_b == split, "idx_b"].nunique())
            out[split] = {"images": n, "share": round(n / max(sizes[split], 1), 4)}
    return out
