"""Exact k-nearest neighbours between two sets of vectors: faiss-cpu when installed, else torch.

    dist, idx = exact_knn(synthetic_features, training_features, k=5)        # (m, 5) each

Both backends first find `k` + a few candidates per query with float32 distances
(``|a|^2 + |b|^2 - 2 a.b``: faiss's flat L2 index, or torch matrix products in row blocks), then
re-rank those candidates by distances computed in float64 from the difference vectors, ties broken
by the lower reference index. The answer is therefore the same, neighbours and distances, whichever
backend found the candidates (unless float32 rounding pushes a true neighbour beyond the margin,
which needs distances equal to ~1e-7 relative).
"""
import numpy as np
import torch

from ..checks import check_int
from ..metrics.precision_recall import squared_distances

BACKENDS = ("auto", "faiss", "torch")
# Candidates beyond k that the float32 search keeps for the float64 re-ranking.
MARGIN = 4
BLOCK_BYTES = 256 * 2 ** 20


def faiss_available():
    """True when faiss (faiss-cpu) can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend):
    """'faiss' or 'torch' for `backend` ('auto' picks faiss when it is installed)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "faiss" if faiss_available() else "torch"
    if backend == "faiss" and not faiss_available():
        raise ValueError("backend 'faiss' asked for, but faiss is not installed (pip install faiss-cpu)")
    return backend


def _as_matrix(x, name):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or inf")
    return a


def _candidates_faiss(q, r, kc):
    import faiss

    index = faiss.IndexFlatL2(r.shape[1])
    index.add(np.ascontiguousarray(r, np.float32))
    _, idx = index.search(np.ascontiguousarray(q, np.float32), kc)
    return idx.astype(np.int64)


def _candidates_torch(q, r, kc, block_bytes):
    qt = torch.from_numpy(np.ascontiguousarray(q, np.float32))
    rt = torch.from_numpy(np.ascontiguousarray(r, np.float32))
    r_sq = (rt * rt).sum(1)
    rows = max(1, int(block_bytes) // (4 * rt.shape[0]))
    out = np.empty((len(qt), kc), np.int64)
    with torch.no_grad():
        for i in range(0, len(qt), rows):
            d = squared_distances(qt[i:i + rows], rt, b_sq=r_sq)
            out[i:i + rows] = torch.topk(d, kc, dim=1, largest=False, sorted=True).indices.numpy()
    return out


def _rerank(q, r, cand, k, exclude, rows=1024):
    """float64 distances to the candidates; the k nearest, ties by index; `exclude` dropped."""
    dist = np.empty((len(q), k))
    idx = np.empty((len(q), k), np.int64)
    for i in range(0, len(q), rows):
        c = cand[i:i + rows]
        diff = r[c].astype(np.float64) - q[i:i + rows, None, :].astype(np.float64)
        d2 = np.einsum("ijk,ijk->ij", diff, diff)
        if exclude is not None:
            d2 = np.where(c == exclude[i:i + rows, None], np.inf, d2)
        # lexsort: last key is primary; the candidate index breaks ties between equal distances
        order = np.lexsort((c, d2), axis=1)[:, :k]
        idx[i:i + rows] = np.take_along_axis(c, order, 1)
        dist[i:i + rows] = np.sqrt(np.take_along_axis(d2, order, 1))
    return dist, idx


def exact_knn(queries, reference, k=1, *, backend="auto", exclude=None, block_bytes=BLOCK_BYTES):
    """The `k` nearest reference vectors of each query vector (Euclidean), exactly.

    Parameters
    ----------
    queries : (m, D) array or tensor
    reference : (n, D) array or tensor
    k : int
        Neighbours per query, 1 <= k <= n (n - 1 with `exclude`).
    backend : {'auto', 'faiss', 'torch'}
        Who finds the candidates: faiss's exact flat index, or chunked torch matrix products
        (rows of at most `block_bytes` of distances). 'auto': faiss when installed.
    exclude : (m,) int array, optional
        A reference index per query that is not a neighbour of it (the query's own row, for the
        nearest *other* vector of a set).
    block_bytes : int
        Bytes of one block of the float32 distance matrix (torch backend).

    Returns
    -------
    distances : (m, k) float64
        Euclidean distances in feature units, ascending along each row.
    indices : (m, k) int64
        Reference rows; among equal distances, the lower index first.
    """
    backend = resolve_backend(backend)
    q, r = _as_matrix(queries, "queries"), _as_matrix(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} dimensions, reference {r.shape[1]}")
    n = len(r)
    if exclude is not None:
        exclude = np.asarray(exclude, np.int64)
        if exclude.shape != (len(q),):
            raise ValueError(f"exclude must hold one reference index per query ({len(q)}), got {exclude.shape}")
    limit = n - (exclude is not None)
    k = check_int("k", k, 1, limit)   # limit: the reference's size, less an excluded self-match
    kc = min(n, int(k) + MARGIN + (exclude is not None))
    if backend == "faiss":
        cand = _candidates_faiss(q, r, kc)
    else:
        cand = _candidates_torch(q, r, kc, block_bytes)
    return _rerank(q, r, cand, int(k), exclude)
