"""Closed-form EBV sets: where mathematics already knows the answer, no optimiser is needed.

* ``orthonormal``  N <= d: coherence 0 (a seeded random orthonormal frame).
* ``simplex``      N = d + 1: the regular simplex, coherence exactly 1/d (optimal).
* ``kerdock``      d = 4^k, N <= d (d/2 + 1): the standard basis plus d/2 real mutually unbiased
  bases (MUBs) from a Kerdock set of quadratic forms (Cameron & Seidel 1973; Calderbank et al.
  1997): coherence exactly 1/sqrt(d) (d=64 -> 2112 vectors at 0.125, d=1024 -> 525,312 at
  1/32). Vectors are generated on demand: a 100k subset never builds the whole set.

Kerdock set used here (MacWilliams & Sloane, ch. 15): with t = log2(d) - 1 (odd) and
F = GF(2^t), each u in F gives the quadratic form on V = F x GF(2)

    Q_u(x, a) = sum_{j=1}^{(t-1)/2} Tr((u x)^(2^j + 1)) + a Tr(u x),

whose polar (alternating) form is B_u(x,y) = Tr(ux)Tr(uy) + Tr(u^2 xy) + a Tr(uy) + b Tr(ux).
For u != v, Q_u - Q_v has a non-degenerate polar form, so (-1)^(Q_u - Q_v) is bent and the
bases {(-1)^(Q_u(z) + c.z)/sqrt(d) : c} are mutually unbiased. Only the polar forms are needed:
a quadratic form is fixed by its polar form up to a linear term, which merely permutes c.
``kerdock_polar_forms`` returns them and ``check_kerdock`` verifies non-degeneracy over GF(2).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

# Irreducible polynomials over GF(2) (bit i = coefficient of x^i) for the odd degrees t we need.
_IRREDUCIBLE = {
    1: 0b11, 3: 0b1011, 5: 0b100101, 7: 0b10000011, 9: 0b1000010001, 11: 0b100000000101,
    13: 0b10000000011011, 15: 0b1000000000000011,
}


def kerdock_capacity(dim: int) -> int:
    """Number of vectors in the real-MUB set of R^dim (0 if dim is not a power of 4)."""
    four = dim >= 4 and (dim & (dim - 1)) == 0 and (dim.bit_length() - 1) % 2 == 0
    return dim * (dim // 2 + 1) if four else 0


def _gf_mul(a: np.ndarray, b: np.ndarray, t: int) -> np.ndarray:
    """Carry-less product in GF(2^t) (ints < 2^t), reduced by the irreducible polynomial."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    out = np.zeros(a.shape, dtype=np.int64)
    for _ in range(t):
        out ^= np.where(b & 1, a, 0)
        b, a = b >> 1, a << 1
        a = np.where(a >> t & 1, a ^ _IRREDUCIBLE[t], a)
    return out


def _gf_trace(a: np.ndarray, t: int) -> np.ndarray:
    """Absolute trace Tr(a) = a + a^2 + ... + a^(2^(t-1)), an element of GF(2) (0/1)."""
    acc = x = np.array(a, dtype=np.int64)
    for _ in range(t - 1):
        x = _gf_mul(x, x, t)
        acc ^= x
    return (acc & 1).astype(np.int64)  # the trace lies in GF(2) = {0, 1}


def kerdock_polar_forms(dim: int) -> np.ndarray:
    """(dim/2, m, m) uint8 alternating matrices A_u (m = log2 dim), u = 0 .. dim/2 - 1.

    Coordinates of V: bits 0..t-1 are x in the polynomial basis of GF(2^t), bit t is a.
    """
    if not kerdock_capacity(dim):
        raise ValueError(f"Kerdock sets exist here only for d = 4^k, got d={dim}")
    m = dim.bit_length() - 1
    t, q = m - 1, 1 << (m - 1)
    u = np.arange(q, dtype=np.int64)
    basis = (1 << np.arange(t, dtype=np.int64))                      # x^i
    tr_u_xi = _gf_trace(_gf_mul(u[:, None], basis[None, :], t), t)    # (q, t): Tr(u x^i)
    u2 = _gf_mul(u, u, t)
    xixj = _gf_mul(basis[:, None], basis[None, :], t)                  # (t, t): x^i x^j
    tr_u2_xixj = _gf_trace(_gf_mul(u2[:, None, None], xixj[None], t), t)  # (q, t, t)
    a = np.zeros((q, m, m), dtype=np.uint8)
    a[:, :t, :t] = (tr_u_xi[:, :, None] * tr_u_xi[:, None, :] + tr_u2_xixj) & 1
    a[:, :t, t] = a[:, t, :t] = tr_u_xi
    a[:, np.arange(m), np.arange(m)] = 0  # alternating (0 by construction; made explicit)
    return a


def _gf2_rank(mats: np.ndarray) -> np.ndarray:
    """Ranks over GF(2) of a stack of square 0/1 matrices (vectorised Gaussian elimination)."""
    a = (np.asarray(mats) & 1).astype(bool)
    k, m, _ = a.shape
    rank = np.zeros(k, dtype=np.int64)  # also the next pivot row of each matrix
    for col in range(m):
        cand = a[:, :, col] & (np.arange(m)[None, :] >= rank[:, None])
        sel = np.flatnonzero(cand.any(axis=1))
        if sel.size == 0:
            continue
        r, p = rank[sel], np.argmax(cand[sel], axis=1)
        a[sel, r], a[sel, p] = a[sel, p], a[sel, r]             # swap the pivot row up
        mask = a[sel, :, col]
        mask[np.arange(sel.size), r] = False
        a[sel] ^= mask[:, :, None] & a[sel, r][:, None, :]
        rank[sel] += 1
    return rank


def check_kerdock(dim: int) -> bool:
    """True if every A_u + A_v (u != v) is non-singular over GF(2), i.e. the bases are unbiased."""
    a = kerdock_polar_forms(dim)
    iu, iv = np.triu_indices(a.shape[0], 1)
    return all(bool((_gf2_rank(a[iu[s:s + 65536]] ^ a[iv[s:s + 65536]]) == a.shape[1]).all())
               for s in range(0, iu.size, 65536))


def _quadratic_tables(dim: int) -> np.ndarray:
    """(dim/2, dim) uint8: Q_u(z) for every z in GF(2)^m, from the upper triangle of A_u."""
    a = kerdock_polar_forms(dim)
    m = a.shape[1]
    z = ((np.arange(dim)[:, None] >> np.arange(m)[None, :]) & 1).astype(np.int64)  # (dim, m)
    upper = np.triu(a.astype(np.int64), 1)                                          # (q, m, m)
    out = np.empty((a.shape[0], dim), dtype=np.uint8)
    step = max(1, (1 << 22) // (dim * m))            # bounded temporaries (~32 MB) at any d
    for s in range(0, a.shape[0], step):
        zu = np.einsum("zi,qij->qzj", z, upper[s:s + step])                         # (q', dim, m)
        out[s:s + step] = (zu * z[None]).sum(-1) & 1
    return out


def _parity_table(dim: int) -> np.ndarray:
    """(dim, dim) uint8 parity(c & z): the Sylvester-Hadamard sign pattern."""
    c = np.arange(dim, dtype=np.int32)
    x = c[:, None] & c[None, :]
    par = np.zeros(x.shape, dtype=np.uint8)
    while x.any():
        par ^= (x & 1).astype(np.uint8)
        x >>= 1
    return par


def kerdock_vectors(dim: int, indices: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Rows ``indices`` of the full real-MUB set of R^dim, as float32 (len(indices), dim).

    Index layout: 0 .. dim-1 the standard basis; then basis u (u = 0 .. dim/2 - 1) occupies
    dim*(1+u) .. dim*(2+u) - 1, vector c of that basis being (-1)^(Q_u(z) + c.z) / sqrt(dim).
    Memory: the output plus O(dim^2) tables and ~64 MB chunks; the full set is never built.
    ``out`` (len(indices) x dim float32, zeroed, may be a column slice of a wider array)
    receives the rows in place.
    """
    indices = np.asarray(indices, dtype=np.int64)
    cap = kerdock_capacity(dim)
    if indices.size and (indices.min() < 0 or indices.max() >= cap):
        raise ValueError(f"Kerdock index out of range [0, {cap}) for d={dim}")
    if out is None:
        out = np.zeros((indices.size, dim), dtype=np.float32)
    chunk = max(1, (1 << 24) // dim)
    std = indices < dim
    out[np.nonzero(std)[0], indices[std]] = 1.0
    rest = np.nonzero(~std)[0]
    if rest.size:
        qtab = _quadratic_tables(dim)
        par = _parity_table(dim)
        scale = np.float32(1.0 / math.sqrt(dim))
        for s in range(0, rest.size, chunk):
            pos = rest[s:s + chunk]
            u, c = np.divmod(indices[pos] - dim, dim)
            bits = qtab[u] ^ par[c]                              # (k, dim) 0/1
            out[pos] = (1.0 - 2.0 * bits.astype(np.float32)) * scale
    return out


def kerdock_subset_indices(dim: int, n: int, seed: int = 0) -> np.ndarray:
    """Deterministic choice of n of the d(d/2+1) vectors: whole bases first (in a seeded order,
    so pairs within a basis are exactly orthogonal, which lowers the mean |cos|), then a seeded
    subset of the last, partial basis. Sorted by (basis, vector)."""
    cap = kerdock_capacity(dim)
    if n > cap:
        raise ValueError(f"d={dim} holds at most {cap} Kerdock vectors, asked for {n}")
    rng = np.random.default_rng(seed)
    nbases = dim // 2 + 1
    order = rng.permutation(nbases)
    full, part = divmod(n, dim)
    chosen = [np.arange(b * dim, (b + 1) * dim) for b in order[:full]]
    if part:
        b = order[full]
        chosen.append(b * dim + np.sort(rng.choice(dim, size=part, replace=False)))
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def kerdock(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """n vectors of the real-MUB set in R^dim (dim = 4^k), coherence exactly 1/sqrt(dim)."""
    return kerdock_vectors(dim, kerdock_subset_indices(dim, n, seed))


def largest_kerdock_dim(n: int, dim: int) -> Optional[int]:
    """Largest 4^k <= dim whose real-MUB set has at least n vectors, else None."""
    k = 4 ** ((dim.bit_length() - 1) // 2)  # the capacity grows with k: the largest 4^k <= dim
    return k if dim >= 4 and kerdock_capacity(k) >= n else None


def padded_kerdock(n: int, dim: int, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """A Kerdock set of R^k (k = largest fitting power of 4 <= dim) placed in R^dim.

    With ``noise`` = 0 the extra coordinates are zero and the coherence stays 1/sqrt(k); a
    small noise lets an optimiser use the extra dimensions (their gradient is otherwise 0).
    """
    k = largest_kerdock_dim(n, dim)
    if k is None:
        raise ValueError(f"no power-of-4 dimension <= {dim} holds {n} Kerdock vectors")
    out = np.zeros((n, dim), dtype=np.float32)
    kerdock_vectors(k, kerdock_subset_indices(k, n, seed), out=out[:, :k])
    if noise > 0 and dim > k:
        rng = np.random.default_rng(seed + 7919)
        out[:, k:] = noise * rng.standard_normal((n, dim - k)).astype(np.float32) / math.sqrt(dim - k)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def orthonormal(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """n <= dim orthonormal rows of a seeded random orthogonal matrix (coherence 0)."""
    if n > dim:
        raise ValueError(f"orthonormal needs N <= d, got N={n}, d={dim}")
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((dim, n))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))[None, :]
    return np.ascontiguousarray(q.T, dtype=np.float32)


def simplex(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """The regular simplex: d+1 unit vectors in R^d with all pairwise cos = -1/d.

    Built as the centred standard basis of R^(d+1) (which lies in the d-dim subspace orthogonal
    to the all-ones vector), expressed in an orthonormal basis of that subspace, then rotated
    by a seeded random orthogonal matrix.
    """
    if n != dim + 1:
        raise ValueError(f"the regular simplex has N = d + 1, got N={n}, d={dim}")
    e = np.eye(n) - 1.0 / n
    # orthonormal basis of the subspace orthogonal to 1: last columns of a Householder-like QR
    q, _ = np.linalg.qr(np.concatenate([np.ones((n, 1)), np.eye(n)[:, :dim]], axis=1))
    coords = e @ q[:, 1:]                                            # (n, dim)
    coords /= np.linalg.norm(coords, axis=1, keepdims=True)
    rot = orthonormal(dim, dim, seed).astype(np.float64)
    return np.ascontiguousarray(coords @ rot, dtype=np.float32)


def closed_form_for(n: int, dim: int) -> Optional[str]:
    """Name of the exact closed form that fits (N, d), or None."""
    if n <= dim:
        return "orthonormal"
    if n == dim + 1:
        return "simplex"
    if kerdock_capacity(dim) >= n:
        return "kerdock"
    return None


def closed_form_coherence(name: str, n: int, dim: int) -> float:
    if name in ("orthonormal", "simplex"):
        return 0.0 if name == "orthonormal" else 1.0 / dim
    k = dim if name == "kerdock" else largest_kerdock_dim(n, dim)
    return 1.0 / math.sqrt(k) if (k and n > k) else 0.0


CLOSED_FORMS = {"orthonormal": orthonormal, "simplex": simplex, "kerdock": kerdock,
                "kerdock_padded": padded_kerdock}
