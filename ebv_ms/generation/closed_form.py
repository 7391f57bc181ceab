"""Closed-form EBV sets, where mathematics already knows the answer (docs/generation.md):
``orthonormal`` (N <= d: coherence 0), ``simplex`` (N = d + 1: 1/d, optimal) and ``kerdock``
(d = 4^k, N <= d (d/2 + 1): exactly 1/sqrt(d)), the standard basis plus d/2 real mutually unbiased
bases from a Kerdock set (Cameron & Seidel 1973; MacWilliams & Sloane ch. 15). With t = log2(d) - 1
and F = GF(2^t), u in F gives Q_u(x, a) = sum_{j=1}^{(t-1)/2} Tr((u x)^(2^j + 1)) + a Tr(u x) on
F x GF(2), with polar form B_u(x,y) = Tr(ux)Tr(uy) + Tr(u^2 xy) + a Tr(uy) + b Tr(ux). Each
Q_u - Q_v is bent, so the bases {(-1)^(Q_u(z) + c.z)/sqrt(d) : c} are mutually unbiased. Only the
polar forms are needed: they fix a quadratic form up to a linear term, which merely permutes c.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

# Irreducible polynomials over GF(2) (bit i = coefficient of x^i) for the odd degrees t we need.
_IRREDUCIBLE = {1: 0b11, 3: 0b1011, 5: 0b100101, 7: 0b10000011, 9: 0b1000010001,
                11: 0b100000000101, 13: 0b10000000011011, 15: 0b1000000000000011}


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
    return acc & 1  # the trace lies in GF(2) = {0, 1}


def kerdock_polar_forms(dim: int) -> np.ndarray:
    """(dim/2, m, m) uint8 alternating matrices A_u (m = log2 dim), u = 0 .. dim/2 - 1; bits
    0..t-1 of V are x in the polynomial basis of GF(2^t), bit t is a."""
    if not kerdock_capacity(dim):
        raise ValueError(f"Kerdock sets exist here only for d = 4^k, got d={dim}")
    m = dim.bit_length() - 1
    t, q = m - 1, 1 << (m - 1)
    u = np.arange(q, dtype=np.int64)
    basis = (1 << np.arange(t, dtype=np.int64))                      # x^i
    tr_u_xi = _gf_trace(_gf_mul(u[:, None], basis[None, :], t), t)    # (q, t): Tr(u x^i)
    xixj = _gf_mul(basis[:, None], basis[None, :], t)                  # (t, t): x^i x^j
    tr_u2_xixj = _gf_trace(_gf_mul(_gf_mul(u, u, t)[:, None, None], xixj[None], t), t)  # (q, t, t)
    a = np.zeros((q, m, m), dtype=np.uint8)
    a[:, :t, :t] = (tr_u_xi[:, :, None] * tr_u_xi[:, None, :] + tr_u2_xixj) & 1
    a[:, :t, t] = a[:, t, :t] = tr_u_xi  # the diagonal is 0: Tr(u x^i)^2 = Tr((u x^i)^2)
    return a


def _quadratic_tables(dim: int) -> np.ndarray:
    """(dim/2, dim) uint8: Q_u(z) for every z in GF(2)^m, from the upper triangle of A_u."""
    a = kerdock_polar_forms(dim)
    m = a.shape[1]
    z = ((np.arange(dim)[:, None] >> np.arange(m)[None, :]) & 1).astype(np.int64)  # (dim, m)
    upper = np.triu(a.astype(np.int64), 1)                                          # (q, m, m)
    out = np.empty((a.shape[0], dim), dtype=np.uint8)
    step = max(1, (1 << 22) // (dim * m))            # bounded temporaries (~32 MB) at any d
    for s in range(0, a.shape[0], step):
        out[s:s + step] = np.einsum("zi,qij,zj->qz", z, upper[s:s + step], z) & 1
    return out


def _parity_table(dim: int) -> np.ndarray:
    """(dim, dim) uint8 parity(c & z), the Sylvester-Hadamard sign pattern [[P, P], [P, 1 - P]]."""
    par = np.zeros((1, 1), dtype=np.uint8)
    while len(par) < dim:
        par = np.block([[par, par], [par, par ^ 1]])
    return par


def kerdock_vectors(dim: int, indices: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Rows ``indices`` of the full real-MUB set of R^dim, float32, into ``out`` if given (zeroed,
    may be a column slice of a wider array). 0 .. dim-1 are the standard basis, dim*(1+u) + c is
    vector c of basis u, (-1)^(Q_u(z) + c.z) / sqrt(dim). Memory: O(dim^2) tables, ~64 MB chunks."""
    indices = np.asarray(indices, dtype=np.int64)
    cap = kerdock_capacity(dim)
    if indices.size and (indices.min() < 0 or indices.max() >= cap):
        raise ValueError(f"Kerdock index out of range [0, {cap}) for d={dim}")
    out = np.zeros((indices.size, dim), dtype=np.float32) if out is None else out
    chunk = max(1, (1 << 24) // dim)
    std = indices < dim
    out[np.nonzero(std)[0], indices[std]] = 1.0
    rest = np.nonzero(~std)[0]
    if rest.size:
        qtab, par = _quadratic_tables(dim), _parity_table(dim)
        scale = np.float32(1.0 / math.sqrt(dim))
        for s in range(0, rest.size, chunk):
            pos = rest[s:s + chunk]
            u, c = np.divmod(indices[pos] - dim, dim)
            bits = qtab[u] ^ par[c]                              # (k, dim) 0/1
            out[pos] = (1.0 - 2.0 * bits.astype(np.float32)) * scale
    return out


def kerdock_subset_indices(dim: int, n: int, seed: int = 0) -> np.ndarray:
    """n of the d(d/2+1) vectors: whole bases in a seeded order (orthogonal within a basis: a lower
    mean |cos|), then a seeded subset of the last one; sorted by (basis, vector)."""
    cap = kerdock_capacity(dim)
    if n > cap:
        raise ValueError(f"d={dim} holds at most {cap} Kerdock vectors, asked for {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(dim // 2 + 1)
    full, part = divmod(n, dim)
    chosen = [np.arange(b * dim, (b + 1) * dim) for b in order[:full]]
    if part:
        chosen.append(order[full] * dim + np.sort(rng.choice(dim, size=part, replace=False)))
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def kerdock(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """n vectors of the real-MUB set in R^dim (dim = 4^k), coherence exactly 1/sqrt(dim)."""
    return kerdock_vectors(dim, kerdock_subset_indices(dim, n, seed))


def largest_kerdock_dim(n: int, dim: int) -> Optional[int]:
    """Largest 4^k <= dim whose real-MUB set has at least n vectors, else None."""
    k = 4 ** ((dim.bit_length() - 1) // 2)  # the capacity grows with k: the largest 4^k <= dim
    return k if dim >= 4 and kerdock_capacity(k) >= n else None


def padded_kerdock(n: int, dim: int, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """A Kerdock set of R^k (k the largest fitting power of 4 <= dim) zero-padded into R^dim
    (coherence 1/sqrt(k)); ``noise`` lets an optimiser use the extra dimensions (gradient 0)."""
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
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, n)))
    return np.ascontiguousarray((q * np.sign(np.diag(r))).T, dtype=np.float32)


def simplex(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """The regular simplex, d+1 unit vectors in R^d at cos = -1/d: the centred standard basis of
    R^(d+1) in an orthonormal basis of the plane orthogonal to 1, then a seeded rotation."""
    if n != dim + 1:
        raise ValueError(f"the regular simplex has N = d + 1, got N={n}, d={dim}")
    q, _ = np.linalg.qr(np.concatenate([np.ones((n, 1)), np.eye(n)[:, :dim]], axis=1))
    coords = (np.eye(n) - 1.0 / n) @ q[:, 1:]                        # (n, dim)
    coords /= np.linalg.norm(coords, axis=1, keepdims=True)
    rot = orthonormal(dim, dim, seed).astype(np.float64)
    return np.ascontiguousarray(coords @ rot, dtype=np.float32)


def closed_form_for(n: int, dim: int) -> Optional[str]:
    """Name of the exact closed form that fits (N, d), or None."""
    return ("orthonormal" if n <= dim else "simplex" if n == dim + 1
            else "kerdock" if kerdock_capacity(dim) >= n else None)


def closed_form_coherence(name: str, n: int, dim: int) -> float:
    if name in ("orthonormal", "simplex"):
        return 0.0 if name == "orthonormal" else 1.0 / dim
    k = dim if name == "kerdock" else largest_kerdock_dim(n, dim)
    return 1.0 / math.sqrt(k) if (k and n > k) else 0.0


CLOSED_FORMS = {"orthonormal": orthonormal, "simplex": simplex, "kerdock": kerdock,
                "kerdock_padded": padded_kerdock}
