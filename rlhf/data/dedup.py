"""Exact and near-duplicate detection, deduplication, and cluster-aware train/eval splits.

Method:

1. **Exact duplicates.** Key = the normalised prompt, case-folded, whitespace runs (newlines included)
   collapsed to one space. Records with the same key form one group.
2. **Near duplicates.** For one representative per exact group: the set of character 5-grams of the key
   (a key shorter than 5 characters is one shingle), each hashed to 32 bits with a vectorised polynomial
   rolling hash and the splitmix64 finaliser. MinHash signatures use ``num_perm`` multiply-add-shift hash
   functions ``(a * x + b) mod 2**64 >> 32`` whose ``a, b`` come from a fixed-seed PCG64 generator, so
   signatures are the same on every machine. LSH banding proposes candidates: the most rows per band (fewest
   chance collisions) for which a pair exactly at ``threshold`` is proposed with probability >= 0.995
   (``1 - (1 - t**rows)**bands``; 21 bands x 6 rows for t = 0.8 and 128 permutations); each candidate
   pair is confirmed with the **exact** Jaccard similarity of the shingle sets. Deterministic throughout;
   about 3 s for 20k prompts on 2 cores.
3. **Clusters** are the connected components of confirmed pairs plus exact groups. Within each LSH bucket a
   new member is compared with members of every component it is not yet joined to, until one matches, so
   every confirmed pair that shares a bucket ends up in one component (transitively similar prompts join too).
4. **Dedup** keeps the first record of each cluster (file order) and reports every removed record with the
   kept record's id, the reason (``exact`` or ``near``) and its Jaccard similarity to the kept record.
5. **Split**: the cluster key is the smallest record id in the cluster (independent of file order); a
   record goes to eval when ``sha256(f"{seed}:{cluster_key}")`` read as a fraction of 2**64 is below
   ``eval_fraction``. Near duplicates therefore always land on the same side, whether or not they were
   removed, and the split depends on content only (no Python ``hash()``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlhf.data.prompts import PromptRecord

__all__ = [
    "DedupResult",
    "RemovedRecord",
    "Split",
    "cluster_records",
    "dedup_key",
    "dedup_records",
    "split_records",
]

SHINGLE = 5
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_MINHASH_SEED = 20260314
RECALL = 0.995


def dedup_key(text: str) -> str:
    """Case-folded text with every whitespace run replaced by one space."""
    return " ".join(text.casefold().split())


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _shingle_sets(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique 32-bit shingle hashes of every key, concatenated; returns (hashes, offsets[n+1])."""
    if not keys:
        return np.zeros(0, dtype=np.uint64), np.zeros(1, dtype=np.int64)
    code_arrays = [np.frombuffer(k.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64) for k in keys]
    lengths = np.array([len(a) for a in code_arrays], dtype=np.int64)
    codes = np.concatenate(code_arrays)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    n_grams = np.maximum(lengths - SHINGLE + 1, 1)
    # Position of every shingle's first character, and how many characters it spans.
    doc_of = np.repeat(np.arange(len(keys)), n_grams)
    gram_starts = np.cumsum(n_grams) - n_grams
    first = np.arange(int(n_grams.sum()), dtype=np.int64) - np.repeat(gram_starts - starts, n_grams)
    span = np.minimum(lengths[doc_of], SHINGLE)
    padded = np.concatenate([codes, np.zeros(SHINGLE, dtype=np.uint64)])
    h = np.zeros(len(first), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for t in range(SHINGLE):
            char = np.where(t < span, padded[first + t], np.uint64(0))
            h = h * np.uint64(0x100000001B3) + char + np.uint64(1)
    combined = np.sort((doc_of.astype(np.uint64) << np.uint64(32)) | (_mix64(h) >> np.uint64(32)))
    combined = combined[np.concatenate([[True], combined[1:] != combined[:-1]])]
    offsets = np.searchsorted(combined >> np.uint64(32), np.arange(len(keys) + 1, dtype=np.uint64))
    return combined & np.uint64(0xFFFFFFFF), offsets


def _minhash(hashes: np.ndarray, offsets: np.ndarray, num_perm: int) -> np.ndarray:
    """MinHash signatures, shape [n_docs, num_perm] uint32."""
    rng = np.random.Generator(np.random.PCG64(_MINHASH_SEED))
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    n_docs = len(offsets) - 1
    sig = np.empty((n_docs, num_perm), dtype=np.uint32)
    doc = 0
    chunk = 65536
    while doc < n_docs:
        end = int(np.searchsorted(offsets, offsets[doc] + chunk, side="right")) - 1
        end = max(end, doc + 1)
        lo, hi = offsets[doc], offsets[end]
        with np.errstate(over="ignore"):
            perm = (hashes[lo:hi][None, :] * a[:, None] + b[:, None]) >> np.uint64(32)  # [num_perm, n_shingles]
        sig[doc:end] = np.minimum.reduceat(perm, offsets[doc:end] - lo, axis=1).T.astype(np.uint32)
        doc = end
    return sig


@functools.cache
def _band_shape(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows): the most rows per band whose chance of proposing a pair at ``threshold`` is >= RECALL."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= RECALL:
            return bands, rows
    return num_perm, 1


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)


def _jaccard(hashes: np.ndarray, offsets: np.ndarray, i: int, j: int) -> float:
    a, b = hashes[offsets[i] : offsets[i + 1]], hashes[offsets[j] : offsets[j + 1]]
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def cluster_records(records: Sequence[PromptRecord], threshold: float = 0.8, num_perm: int = 128) -> list[int]:
    """Cluster label of each record: the index of the first record of its near-duplicate cluster."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"near-duplicate threshold {threshold} must be in (0, 1]")
    if num_perm < 8:
        raise ValueError(f"num_perm {num_perm} is too small for MinHash; use at least 8 (default 128)")
    n = len(records)
    uf = _UnionFind(n)
    first_of_key: dict[str, int] = {}
    reps: list[int] = []
    for i, record in enumerate(records):
        j = first_of_key.setdefault(dedup_key(record.prompt), i)
        if j == i:
            reps.append(i)
        else:
            uf.union(j, i)
    if threshold < 1.0 and len(reps) > 1:
        hashes, offsets = _shingle_sets([dedup_key(records[i].prompt) for i in reps])
        sig = _minhash(hashes, offsets, num_perm)
        bands, rows = _band_shape(threshold, num_perm)
        local = _UnionFind(len(reps))
        mult = np.random.Generator(np.random.PCG64(_MINHASH_SEED + 1)).integers(1, 2**63, size=rows, dtype=np.uint64)
        for band in range(bands):
            block = sig[:, band * rows : (band + 1) * rows].astype(np.uint64)
            with np.errstate(over="ignore"):
                keys = _mix64((block * mult).sum(axis=1, dtype=np.uint64))
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
            same = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])  # i: sorted i and i + 1 share a bucket
            run_starts = same[np.concatenate([[True], np.diff(same) > 1])] if same.size else same
            for start in run_starts.tolist():
                end = start + 1
                while end < len(order) and sorted_keys[end] == sorted_keys[start]:
                    end += 1
                _link_bucket(order[start:end].tolist(), local, hashes, offsets, threshold)
        for k, i in enumerate(reps):
            uf.union(reps[local.find(k)], i)
    return [uf.find(i) for i in range(n)]


def _link_bucket(members: list[int], uf: _UnionFind, hashes: np.ndarray, offsets: np.ndarray, threshold: float) -> None:
    """Join each member to every component in the bucket holding a member similar to it."""
    groups: list[list[int]] = []
    for j in members:
        merged = [j]
        rest = []
        for group in groups:
            if uf.find(group[0]) == uf.find(j) or any(_jaccard(hashes, offsets, j, x) >= threshold for x in group):
                uf.union(j, group[0])
                merged.extend(group)
            else:
                rest.append(group)
        rest.append(merged)
        groups = rest


@dataclass(frozen=True)
class RemovedRecord:
    """A record dropped as a duplicate: which kept record it duplicates, why, and how similar they are."""

    record: PromptRecord
    duplicate_of: str
    reason: str  # "exact" or "near"
    similarity: float


@dataclass(frozen=True)
class DedupResult:
    """Records kept (file order) and records removed with their reasons."""

    kept: list[PromptRecord]
    removed: list[RemovedRecord]

    def summary(self) -> dict[str, int]:
        return {
            "kept": len(self.kept),
            "removed_exact": sum(r.reason == "exact" for r in self.removed),
            "removed_near": sum(r.reason == "near" for r in self.removed),
        }


def dedup_records(
    records: Sequence[PromptRecord], near: bool = True, threshold: float = 0.8, num_perm: int = 128
) -> DedupResult:
    """Keep the first record of every cluster (exact duplicates only when ``near`` is False)."""
    labels = cluster_records(records, threshold=threshold if near else 1.0, num_perm=num_perm)
    kept = [record for i, record in enumerate(records) if labels[i] == i]
    dropped = [i for i in range(len(records)) if labels[i] != i]
    keys = [(dedup_key(records[i].prompt), dedup_key(records[labels[i]].prompt)) for i in dropped]
    near_pairs = [pair for pair in keys if pair[0] != pair[1]]
    hashes, offsets = _shingle_sets([key for pair in near_pairs for key in pair])
    similarities = iter(_jaccard(hashes, offsets, 2 * k, 2 * k + 1) for k in range(len(near_pairs)))
    removed = []
    for i, (key, first_key) in zip(dropped, keys):
        exact = key == first_key
        similarity = 1.0 if exact else round(next(similarities), 4)
        removed.append(RemovedRecord(records[i], records[labels[i]].id, "exact" if exact else "near", similarity))
    return DedupResult(kept=kept, removed=removed)


@dataclass(frozen=True)
class Split:
    """Train and eval records (each in file order) and the number of clusters on each side."""

    train: list[PromptRecord]
    eval: list[PromptRecord]
    train_clusters: int
    eval_clusters: int


def _unit_interval(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_records(
    records: Sequence[PromptRecord],
    eval_fraction: float = 0.1,
    seed: int = 0,
    threshold: float = 0.8,
    num_perm: int = 128,
) -> Split:
    """Deterministic train/eval split by cluster: near duplicates always land on the same side."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction {eval_fraction} must be in [0, 1); e.g. 0.1 keeps 10% for eval")
    labels = cluster_records(records, threshold=threshold, num_perm=num_perm)
    cluster_key: dict[int, str] = {}
    for i, label in enumerate(labels):
        rid = records[i].id
        if label not in cluster_key or rid < cluster_key[label]:
            cluster_key[label] = rid
    to_eval = {label: _unit_interval(seed, key) < eval_fraction for label, key in cluster_key.items()}
    train = [r for r, label in zip(records, labels) if not to_eval[label]]
    evals = [r for r, label in zip(records, labels) if to_eval[label]]
    n_eval = sum(to_eval.values())
    return Split(train=train, eval=evals, train_clusters=len(to_eval) - n_eval, eval_clusters=n_eval)
