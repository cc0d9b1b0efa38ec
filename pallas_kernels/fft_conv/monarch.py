"""The DFT as Monarch matmuls on real and imaginary planes, shared by the XLA path and the kernel.

FlashFFTConv: Efficient Convolutions for Long Sequences with Tensor Cores
(arXiv 2311.05908), §3.1-3.2.

N = N_0 * N_1 * ... * N_{r-1}. A signal of length N is held in "digit layout" [N_0, ..., N_{r-1}]
(row-major: n = n_0 * N_1...N_{r-1} + ...). The forward transform contracts axis 0 with the DFT
matrix of size N_0, multiplies by a twiddle, then transforms the remaining axes the same way
(Cooley-Tukey, decimation in time). Its output stays in the same array positions, which hold the
digit-reversed frequency f = k_0 + N_0 * (k_1 + N_1 * (k_2 + ...)): the "permuted layout". The
filter spectrum is stored in that layout, and the inverse transform walks the levels backwards with
conjugate matrices, ending in natural order. No transpose or bit reversal happens anywhere.
"""

import dataclasses
import functools
import math
import numbers
import string
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pallas_kernels import arguments, platform

__all__ = [
    "DOT_PRECISIONS",
    "MAX_RADICES",
    "MonarchMatrices",
    "MonarchPlan",
    "cmul",
    "from_digits",
    "forward",
    "inverse_real",
    "monarch_factors",
    "monarch_matrices",
    "to_digits",
]

Planes = tuple[jax.Array, jax.Array]


# The radix caps `monarch_factors` accepts (kernels choose one with `BlockSizes.max_radix`).
MAX_RADICES = (32, 64, 128, 256)


def monarch_factors(fft_size: int, max_radix: int = 32) -> tuple[int, ...]:
    """Radices of the decomposition: as few levels as keep every radix in [16, max_radix] (one
    radix may reach 2 * max_radix where one level fewer would push a radix below 16).

    max_radix = 32 (the default, FlashFFTConv's plan, except 512/2048 where it uses a real-to-real
    trick instead): 256 = 16*16, 512 = 16*32, 1024 = 32*32, 2048 = 32*64, 4096 = 16^3,
    8192 = 16*16*32, 16384 = 16*32*32, 32768 = 32^3, 65536 = 16^4 ... 2^20 = 32^4.
    max_radix = 128 keeps order 2 up to 16384 = 128*128 (4096 = 64*64, 8192 = 64*128): fewer,
    larger matmuls and no middle contraction, for matrix units that want big tiles.
    The last radix never shrinks as max_radix grows, so frequency-sparsity steps stay valid.
    """
    if max_radix not in MAX_RADICES:
        raise ValueError(
            f"max_radix={max_radix!r}: must be one of {', '.join(map(str, MAX_RADICES))}"
        )
    if isinstance(fft_size, bool) or not isinstance(fft_size, numbers.Integral):
        raise ValueError(f"fft_size={fft_size!r}: must be a power of two >= 256")
    fft_size = int(fft_size)
    if fft_size < 256 or fft_size & (fft_size - 1):
        raise ValueError(f"fft_size={fft_size}: must be a power of two >= 256")
    bits = fft_size.bit_length() - 1
    order = max(2, -(-bits // (max_radix.bit_length() - 1)))
    if bits // order < 4:
        order -= 1
    base, extra = divmod(bits, order)
    return tuple(2 ** (base + (i >= order - extra)) for i in range(order))


@dataclasses.dataclass(frozen=True, kw_only=True)
class MonarchPlan:
    """The static shape of one transform pair.

    Attributes:
        fft_size: N.
        factors: Radices (N_0, ..., N_{r-1}), product N.
        rows_in: Nonzero rows of axis 0 on input (implicit zero padding: input length <= rows_in
            * N / N_0; the other rows are never multiplied).
        rows_out: Rows of axis 0 the inverse produces (output length <= rows_out * N / N_0).
        kept_last: Frequency sparsity: number c of kept last digits on each side, k_{r-1} in
            [0, c) or [N_{r-1} - c, N_{r-1}); None keeps all.
    """

    fft_size: int
    factors: tuple[int, ...]
    rows_in: int
    rows_out: int
    kept_last: int | None = None

    @property
    def row_size(self) -> int:
        """Samples per row of axis 0: N / N_0."""
        return self.fft_size // self.factors[0]

    @property
    def spectrum_shape(self) -> tuple[int, ...]:
        """Digit layout of the (kept) spectrum."""
        last = self.factors[-1] if self.kept_last is None else 2 * self.kept_last
        return (*self.factors[:-1], last)

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Digit layout of the input."""
        return (self.rows_in, *self.factors[1:])

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Digit layout of the output."""
        return (self.rows_out, *self.factors[1:])


class MonarchMatrices(NamedTuple):
    """DFT matrices and twiddles of a plan as real/imaginary planes (a pytree of f32 arrays).

    Attributes:
        fwd: Per level, the [out, in] matrix of the forward contraction (level 0: the rows_in
            columns; last level: the kept frequency rows).
        twiddle: Per level but the last, [N_j, N_{j+1}, ..., N_{r-1}] factors
            exp(-2 pi i k_j m / M_j), m the natural index of the remaining axes.
        inv: Per level, the conjugate [out, in] matrix of the inverse contraction (level 0: the
            rows_out rows; last level: the kept frequency columns).
    """

    fwd: tuple[Planes, ...]
    twiddle: tuple[Planes, ...]
    inv: tuple[Planes, ...]


@functools.lru_cache(maxsize=64)
def _numpy_matrices(plan: MonarchPlan):
    factors = plan.factors
    kept = np.arange(factors[-1])
    if plan.kept_last is not None:
        c = plan.kept_last
        kept = np.concatenate([kept[:c], kept[factors[-1] - c :]])
    fwd, twiddle, inv = [], [], []
    for level, radix in enumerate(factors):
        idx = np.arange(radix)
        dft = np.exp(-2j * np.pi * np.outer(idx, idx) / radix)  # [k, n], symmetric
        f, g = dft, np.conj(dft)
        if level == 0:
            f, g = f[:, : plan.rows_in], g[: plan.rows_out, :]
        if level == len(factors) - 1:
            f, g = f[kept, :], g[:, kept]
        fwd.append(f)
        inv.append(g)
        if level < len(factors) - 1:
            rest = factors[level + 1 :]
            m = math.prod(rest)
            tw = np.exp(-2j * np.pi * np.outer(idx, np.arange(m)) / (radix * m))
            twiddle.append(tw.reshape(radix, *rest))
    return tuple(fwd), tuple(twiddle), tuple(inv)


def monarch_matrices(plan: MonarchPlan) -> MonarchMatrices:
    """The plan's matrices (computed in float64 with numpy, rounded once to float32)."""

    def planes(a):
        return (jnp.asarray(a.real, jnp.float32), jnp.asarray(a.imag, jnp.float32))

    fwd, twiddle, inv = _numpy_matrices(plan)
    return MonarchMatrices(
        fwd=tuple(planes(a) for a in fwd),
        twiddle=tuple(planes(a) for a in twiddle),
        inv=tuple(planes(a) for a in inv),
    )


# The matmuls' arithmetic: f32 throughout unless a kernel asks for its matrix units' formats.
DOT_PRECISIONS = {
    "f32": lax.Precision.HIGHEST,
    "tf32x3": lax.DotAlgorithmPreset.TF32_TF32_F32_X3,
    "tf32": lax.DotAlgorithmPreset.TF32_TF32_F32,
    "bf16x3": lax.DotAlgorithmPreset.BF16_BF16_F32_X3,
    "bf16": lax.DotAlgorithmPreset.BF16_BF16_F32,
}


def _terms(a: jax.Array, b: jax.Array, dot: str) -> list[tuple[jax.Array, jax.Array, object]]:
    """(a_i, b_i, precision) whose dot products, summed, give the `dot` arithmetic's a . b.

    On GPU and TPU that is one dot carrying the algorithm. XLA:CPU ignores the bf16 algorithms
    and multiplies in f32, so there (interpret mode) their rounding is spelled out: operands
    rounded to bfloat16, exact f32 products ("bf16"), and for "bf16x3" the split a = a_hi + a_lo
    with a_hi b_hi + a_hi b_lo + a_lo b_hi. The CPU tests then see the bf16 variants' error.
    """
    if dot not in ("bf16", "bf16x3") or platform.current() != "cpu":
        return [(a, b, DOT_PRECISIONS[dot])]

    def hi(v):
        return v.astype(jnp.bfloat16).astype(jnp.float32)

    exact = lax.Precision.HIGHEST
    a_hi, b_hi = hi(a), hi(b)
    if dot == "bf16":
        return [(a_hi, b_hi, exact)]
    return [(hi(a - a_hi), b_hi, exact), (a_hi, hi(b - b_hi), exact), (a_hi, b_hi, exact)]


def _apply(
    mat: jax.Array, x: jax.Array, axis: int, two_d: bool = False, dot: str = "f32"
) -> jax.Array:
    """Contract `x`'s `axis` with `mat` [out, in]; the result keeps the axis position.

    `two_d` spells it with 2-D dots, transposes and reshapes only (what Triton lowers): the last
    axis as x[rest, n] @ mat^T, any other axis moved to the front and done as mat @ x[n, rest].
    `dot` names the matmul arithmetic (`DOT_PRECISIONS`, spelled out on CPU: `_terms`);
    accumulation is f32 in every case.
    """
    f32 = jnp.float32
    if two_d:
        last = x.ndim - 1
        if axis == last:
            x2 = x.reshape(-1, x.shape[last])  # [rest, n]
            dims = (((1,), (1,)), ((), ()))
            y = sum(
                lax.dot_general(p, q, dims, precision=prec, preferred_element_type=f32)
                for p, q, prec in _terms(x2, mat, dot)
            )
            return y.reshape(*x.shape[:last], mat.shape[0])
        perm = (axis, *(i for i in range(x.ndim) if i != axis))
        xt = x if axis == 0 else jnp.transpose(x, perm)
        y = sum(
            jnp.dot(p, q, precision=prec, preferred_element_type=f32)
            for p, q, prec in _terms(mat, xt.reshape(xt.shape[0], -1), dot)
        )
        y = y.reshape(mat.shape[0], *xt.shape[1:])
        return y if axis == 0 else jnp.transpose(y, tuple(np.argsort(perm)))
    letters = string.ascii_lowercase[: x.ndim]
    out_sub = letters[:axis] + "z" + letters[axis + 1 :]
    return sum(
        jnp.einsum(
            f"z{letters[axis]},{letters}->{out_sub}", p, q, precision=prec,
            preferred_element_type=f32,
        )
        for p, q, prec in _terms(mat, x, dot)
    )  # fmt: skip


def _capply(
    mat: Planes, x: tuple[jax.Array, jax.Array | None], axis: int, two_d: bool, dot: str
) -> Planes:
    mr, mi = mat
    xr, xi = x
    apply = functools.partial(_apply, axis=axis, two_d=two_d, dot=dot)
    if xi is None:  # real input: half the matmuls
        return apply(mr, xr), apply(mi, xr)
    return apply(mr, xr) - apply(mi, xi), apply(mr, xi) + apply(mi, xr)


def _expand(a: jax.Array, ndim: int) -> jax.Array:
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


def cmul(a: Planes, b: Planes, *, conj_b: bool = False) -> Planes:
    """Complex product of planes (b broadcast over a's leading axes); `conj_b` uses conj(b)."""
    ar, ai = a
    br, bi = (_expand(p, ar.ndim) for p in b)
    if conj_b:
        return ar * br + ai * bi, ai * br - ar * bi
    return ar * br - ai * bi, ar * bi + ai * br


def forward(
    x: jax.Array, mats: MonarchMatrices, *, two_d: bool = False, dot: str = "f32"
) -> Planes:
    """Unnormalised DFT of a real signal in digit layout [..., rows_in, N_1, ...].

    `two_d`: only 2-D dots (the kernels' spelling, for Triton); the same numbers either way.
    `dot`: the matmuls' arithmetic (`DOT_PRECISIONS`).

    Returns:
        (re, im) in the permuted layout [..., N_0, N_1, ..., kept last digits].

    Raises:
        ValueError: `dot` is not a key of `DOT_PRECISIONS`.
    """
    arguments.check_choice("monarch.forward", "dot", dot, DOT_PRECISIONS)
    order = len(mats.fwd)
    lead = x.ndim - order
    planes: tuple[jax.Array, jax.Array | None] = (x, None)
    for level in range(order):
        planes = _capply(mats.fwd[level], planes, lead + level, two_d, dot)
        if level < order - 1:
            planes = cmul(planes, mats.twiddle[level])  # type: ignore[arg-type]
    return planes  # type: ignore[return-value]


def inverse_real(
    spectrum: Planes, mats: MonarchMatrices, *, two_d: bool = False, dot: str = "f32"
) -> jax.Array:
    """Real part of the unnormalised inverse DFT of a permuted-layout spectrum.

    `two_d`, `dot`: as in `forward`.

    Returns:
        [..., rows_out, N_1, ..., N_{r-1}] in natural digit layout.

    Raises:
        ValueError: `dot` is not a key of `DOT_PRECISIONS`.
    """
    arguments.check_choice("monarch.inverse_real", "dot", dot, DOT_PRECISIONS)
    order = len(mats.inv)
    lead = spectrum[0].ndim - order
    planes = spectrum
    for level in reversed(range(order)):
        if level < order - 1:
            planes = cmul(planes, mats.twiddle[level], conj_b=True)
        if level == 0:  # only the real part of the last contraction is needed
            (gr, gi), (pr, pi) = mats.inv[0], planes
            return _apply(gr, pr, lead, two_d, dot) - _apply(gi, pi, lead, two_d, dot)
        planes = _capply(mats.inv[level], planes, lead + level, two_d, dot)
    raise AssertionError("unreachable")


def to_digits(x: jax.Array, plan: MonarchPlan) -> jax.Array:
    """[..., T] (T <= rows_in * N / N_0) -> digit layout [..., rows_in, N_1, ...].

    Pads only up to rows_in whole rows, never to N: the zero rows beyond are implicit.
    """
    pad = plan.rows_in * plan.row_size - x.shape[-1]
    if pad:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
    return x.reshape(*x.shape[:-1], *plan.in_shape)


def from_digits(y: jax.Array, plan: MonarchPlan, length: int) -> jax.Array:
    """Digit layout [..., rows_out, N_1, ...] -> [..., length]."""
    order = len(plan.factors)
    y = y.reshape(*y.shape[:-order], plan.rows_out * plan.row_size)
    return y[..., :length]
