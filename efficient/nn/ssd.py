"""The SSD (Mamba-2) scan in chunked, quadratic and recurrent form, and the Mamba-2 mixer block.

Transformers are SSMs (Mamba-2, Dao & Gu 2024, arXiv:2405.21060 §3 SSM as a semiseparable matrix,
§6 the chunked algorithm and its Listing 1 `ssd_minimal_discrete`, §7 the block); TiM4Rec (Fan et
al. 2024, arXiv:2409.16182 §4) reuses the block with a time factor on the step size.

Per head h with scalar a_h < 0, step size Δ_t > 0, input x_t ∈ R^K and B_t, C_t ∈ R^N:

    H_t = exp(Δ_t a_h) H_{t-1} + (Δ_t x_t) B_tᵀ        (state H_t ∈ R^{K×N})
    y_t = H_t C_t + D_h x_t

which is the matrix form Y = (L ∘ C Bᵀ)(Δ ⊙ X) + D X with the 1-semiseparable mask
L_ts = exp(Σ_{k=s+1..t} Δ_k a_h) for t ≥ s and 0 otherwise. B and C are shared by groups of heads:
with G groups, head h reads group h // (H / G) (G = 1 in Mamba-2's and TiM4Rec's configs).
"""

import math
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.nn import initializers
from jaxtyping import Array, Float

from efficient.checks import check_float_array, is_integer, validates_arguments
from efficient.nn.causal_conv import CausalConv1d, torch_default_init
from efficient.nn.norms import RMSNorm

Activation = Literal["silu", "hardswish"]

# Einsum letters beyond the shared vocabulary (STYLE.md): c chunk index, l / s target / source
# position inside a chunk (t / s over the whole sequence), r head inside its group (H = G r), and
# z chunk index after the initial state is prepended.


@validates_arguments
def _validate(
    x: Array,
    dt: Array,
    A: Array | None,
    B: Array,
    C: Array,
    D: Array | None,
    initial_state: Array | None,
    *,
    requires_A: bool = True,
) -> None:
    """Raise a ValueError naming the first argument that is missing, not a floating array, or
    whose shape disagrees with x's [B, T, H, K]. D and initial_state may be None; A too when
    not `requires_A` (`ssd_quadratic` takes log_decay instead)."""
    named = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, initial_state=initial_state)
    optional = {"D", "initial_state"} | (set() if requires_A else {"A"})
    for name, value in named.items():
        if value is None and name in optional:
            continue
        check_float_array(name, value)
    if x.ndim != 4:
        raise ValueError(f"x.shape={x.shape}: expected 4 dimensions [B, T, H, K].")
    batch, T, H, K = x.shape
    if dt.shape != (batch, T, H):
        raise ValueError(f"dt.shape={dt.shape}: expected [B, T, H] = {(batch, T, H)} from x.")
    if A is not None and A.shape != (H,):
        raise ValueError(f"A.shape={A.shape}: expected [H] = {(H,)} from x.")
    if B.ndim != 4 or B.shape[:2] != (batch, T):
        raise ValueError(f"B.shape={B.shape}: expected [B, T, G, N] with B, T = {(batch, T)}.")
    if C.shape != B.shape:
        raise ValueError(f"C.shape={C.shape}: expected B's shape {B.shape}.")
    G, N = B.shape[2:]
    if G < 1 or H % G:
        raise ValueError(f"B and C have G={G} groups, which must divide the H={H} heads of x.")
    if D is not None and D.shape != (H,):
        raise ValueError(f"D.shape={D.shape}: expected [H] = {(H,)} from x.")
    if initial_state is not None and initial_state.shape != (batch, H, K, N):
        raise ValueError(
            f"initial_state.shape={initial_state.shape}: expected [B, H, K, N] = "
            f"{(batch, H, K, N)} from x and B."
        )


def _compute_dtype(*arrays: Array | None) -> Any:
    """float64 if any input is float64, else float32: decays and states never run below float32."""
    wide = any(a is not None and a.dtype == jnp.float64 for a in arrays)
    return jnp.float64 if wide else jnp.float32


def _segsum(a: Array) -> Array:
    """s[..., t, j] = a[..., j+1] + ... + a[..., t] for t >= j (0 on the diagonal), and for t < j
    the dtype's most negative finite value (exp -> exactly 0).

    The stable form of Listing 1: a masked cumulative sum rather than cumsum differences, so no
    large partial sums cancel, and the mask is put in BEFORE the exp: an exp of the unmasked
    upper triangle can overflow, and masking afterwards sends 0 * inf = NaN into the gradient.
    Finite rather than -inf so that `jax.debug_infs` stays quiet on finite inputs.
    """
    n = a.shape[-1]
    idx = jnp.arange(n)
    lead = (1,) * (a.ndim - 1)
    strict = (idx[:, None] > idx[None, :]).reshape(*lead, n, n)
    causal = (idx[:, None] >= idx[None, :]).reshape(*lead, n, n)
    rows = jnp.broadcast_to(a[..., :, None], (*a.shape, n))  # [..., k, j]: a_k
    seg = jnp.cumsum(jnp.where(strict, rows, 0), axis=-2)  # [..., t, j]
    return jnp.where(causal, seg, jnp.finfo(seg.dtype).min)


def _skip(y: Array, x: Array, D: Array | None) -> Array:
    """y + D_h x (Mamba-2's D skip acts on x, not on Δ x)."""
    if D is None:
        return y
    return y + D.astype(y.dtype)[None, None, :, None] * x.astype(y.dtype)


@validates_arguments
def ssd_chunked(
    x: Float[Array, "B T H K"],
    dt: Float[Array, "B T H"],
    A: Float[Array, " H"],
    B: Float[Array, "B T G N"],
    C: Float[Array, "B T G N"],
    *,
    chunk_size: int,
    D: Float[Array, " H"] | None = None,
    initial_state: Float[Array, "B H K N"] | None = None,
) -> tuple[Float[Array, "B T H K"], Float[Array, "B H K N"]]:
    """The SSD scan by chunks: quadratic (attention-like) inside a chunk, recurrent across chunks.

    Mamba-2 §6 (Listing 1, `ssd_minimal_discrete`, with Δ and a kept apart and G groups). With
    chunks of length l and a^c the log-decays Δ a of chunk c:
      1. diagonal blocks: Y_diag = (exp(segsum(a^c)) ∘ C Bᵀ)(Δ ⊙ X) inside each chunk;
      2. chunk states: S_c = Σ_s exp(Σ_{k>s} a^c_k) (Δ_s x_s) B_sᵀ, the state a chunk leaves
         behind from a zero start;
      3. inter-chunk recurrence: H_c = exp(Σ_k a^c_k) H_{c-1} + S_c from H_0 = initial_state, as
         a `lax.associative_scan`, so the cost stays linear in T (Listing 1's segsum over chunks
         is quadratic in their number) and parallel over chunks;
      4. off-diagonal blocks: Y_off,t = exp(Σ_{k≤t} a^c_k) H_{c-1} C_t.
    y = Y_diag + Y_off + D x. Work O(T l (G N + H K) + T H K N), memory O(T l H): linear in T.

    A T that is not a multiple of the chunk is padded at the end with Δ = 0 (and zeros for x, B,
    C): a zero step neither decays the state (exp(0 · a) = 1) nor writes to it (Δ x = 0), so y
    and the final state are exact. Inputs are computed in float32 (float64 if any is float64).

    Non-finite inputs: an inf or NaN at step s reaches every output of its chunk, earlier steps
    too (the masked-out upper triangle of step 1 multiplies it by 0, and 0 · inf = NaN), where
    `ssd_scan` keeps it to steps >= s. Finite inputs are causal exactly as in the scan.

    Args:
      x: inputs, H heads of width K.
      dt: the step sizes Δ > 0, already positive: apply softplus(dt + dt_bias) (and any time
        factor) before calling; padding relies on Δ = 0 being a no-op.
      A: the per-head scalars a_h < 0 (Mamba-2 stores A_log and uses a = -exp(A_log)).
      B: input projections of the state, G groups; G must divide H.
      C: output projections of the state, like B.
      chunk_size: l (Mamba-2: 256; TiM4Rec: 32); clipped to T.
      D: per-head skip y += D_h x; None for none.
      initial_state: H_0; None for zeros.

    Returns:
      (y in x's dtype, the final state H_T in the compute dtype).

    Raises:
      ValueError: a shape disagrees with x's [B, T, H, K], G does not divide H, or chunk_size < 1.
    """
    _validate(x, dt, A, B, C, D, initial_state)
    if not is_integer(chunk_size) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}: expected an int >= 1.")
    batch, T, H, K = x.shape
    G, N = B.shape[2:]
    r = H // G
    dtype = _compute_dtype(x, dt, A, B, C, D, initial_state)
    chunk = max(1, min(int(chunk_size), T))  # positions per chunk
    pad = -T % chunk
    chunks = (T + pad) // chunk

    def blocks(v: Array, *tail: int) -> Array:
        v = jnp.pad(v.astype(dtype), [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2))
        return v.reshape(batch, chunks, chunk, *tail)

    xs = blocks(x, G, r, K)  # [B, c, l, G, r, K]
    dts = blocks(dt, G, r)  # [B, c, l, G, r]
    Bs = blocks(B, G, N)  # [B, c, l, G, N]
    Cs = blocks(C, G, N)  # [B, c, l, G, N]
    a = jnp.moveaxis(dts * A.astype(dtype).reshape(1, 1, 1, G, r), 2, -1)  # [B, c, G, r, l]
    u = xs * dts[..., None]  # Δ ⊙ X: [B, c, l, G, r, K]

    # 1. Diagonal blocks.
    decay = jnp.exp(_segsum(a))  # [B, c, G, r, l, s]
    CB = jnp.einsum("BclGN,BcsGN->BcGls", Cs, Bs)  # [B, c, G, l, s]
    scores = CB[:, :, :, None] * decay  # [B, c, G, r, l, s]
    y_diag = jnp.einsum("BcGrls,BcsGrK->BclGrK", scores, u)  # [B, c, l, G, r, K]

    # 2. Chunk states: the last row of the chunk's mask decays each input to the chunk's end.
    to_end = decay[..., -1, :]  # [B, c, G, r, s]
    states = jnp.einsum("BcsGN,BcGrs,BcsGrK->BcGrKN", Bs, to_end, u)  # [B, c, G, r, K, N]

    # 3. Inter-chunk recurrence; (log decay, state) pairs compose associatively.
    if initial_state is None:
        h0 = jnp.zeros((batch, 1, G, r, K, N), dtype)
    else:
        h0 = initial_state.astype(dtype).reshape(batch, 1, G, r, K, N)
    log_decay = jnp.concatenate(
        [jnp.zeros((batch, 1, G, r), dtype), jnp.sum(a, axis=-1)], axis=1
    )  # [B, z, G, r]
    carried = jnp.concatenate([h0, states], axis=1)  # [B, z, G, r, K, N]

    def compose(first, second):
        (a1, h1), (a2, h2) = first, second
        return a1 + a2, jnp.exp(a2)[..., None, None] * h1 + h2

    _, ends = lax.associative_scan(compose, (log_decay, carried), axis=1)  # [B, z, G, r, K, N]
    starts, final = ends[:, :-1], ends[:, -1]  # [B, c, G, r, K, N], [B, G, r, K, N]

    # 4. Off-diagonal blocks: the state entering each chunk, decayed to position l.
    from_start = jnp.exp(jnp.cumsum(a, axis=-1))  # [B, c, G, r, l]
    y_off = jnp.einsum("BclGN,BcGrKN,BcGrl->BclGrK", Cs, starts, from_start)  # [B, c, l, G, r, K]

    y = (y_diag + y_off).reshape(batch, chunks * chunk, H, K)[:, :T]  # [B, T, H, K]
    y = _skip(y, x, D)
    return y.astype(x.dtype), final.reshape(batch, H, K, N)


@validates_arguments
def ssd_quadratic(
    x: Float[Array, "B T H K"],
    dt: Float[Array, "B T H"],
    A: Float[Array, " H"] | None,
    B: Float[Array, "B T G N"],
    C: Float[Array, "B T G N"],
    *,
    D: Float[Array, " H"] | None = None,
    initial_state: Float[Array, "B H K N"] | None = None,
    log_decay: Float[Array, "B T H"] | None = None,
) -> tuple[Float[Array, "B T H K"], Float[Array, "B H K N"]]:
    """The materialised form Y = (L ∘ C Bᵀ)(Δ ⊙ X) + D X, O(T²): a reference for `ssd_chunked`.

    Mamba-2 §3.2 (the SSM as a semiseparable matrix M = L ∘ C Bᵀ). L_ts = exp(ℓ_t - ℓ_s) for
    t ≥ s and 0 otherwise, with ℓ the cumulative sum of the log-decays (Δ a by default); ℓ_t - ℓ_s
    is summed segment by segment (`_segsum`) and masked before the exp. An initial state adds
    exp(ℓ_t) H_0 C_t to y_t; the final state is H_T = exp(ℓ_T) H_0 + Σ_s L_Ts (Δ_s x_s) B_sᵀ.

    Args:
      x, dt, B, C, D, initial_state: as in `ssd_chunked`.
      A: a_h < 0; None when `log_decay` is given.
      log_decay: explicit per-position log-decays log L_t,t-1 (e.g. TiM4Rec's time-aware
        a_h softplus(dt τ + b)) in place of Δ a; Δ still scales the inputs.

    Returns:
      (y in x's dtype, the final state H_T in the compute dtype).

    Raises:
      ValueError: bad shapes (as `ssd_chunked`), or not exactly one of A and log_decay.
    """
    if (A is None) == (log_decay is None):
        raise ValueError("ssd_quadratic: pass exactly one of A and log_decay.")
    _validate(x, dt, A, B, C, D, initial_state, requires_A=False)
    if log_decay is not None:
        check_float_array("log_decay", log_decay)
    if log_decay is not None and log_decay.shape != dt.shape:
        raise ValueError(f"log_decay.shape={log_decay.shape}: expected dt's shape {dt.shape}.")
    H = x.shape[2]
    r = H // B.shape[2]
    dtype = _compute_dtype(x, dt, A, B, C, D, initial_state, log_decay)
    dt = dt.astype(dtype)
    if log_decay is None:
        log_decay = dt * A.astype(dtype)[None, None, :]
    cum = jnp.cumsum(log_decay.astype(dtype), axis=1)  # ℓ: [B, T, H]
    Bh = jnp.repeat(B.astype(dtype), r, axis=2)  # [B, T, H, N]
    Ch = jnp.repeat(C.astype(dtype), r, axis=2)  # [B, T, H, N]
    u = x.astype(dtype) * dt[..., None]  # [B, T, H, K]
    T = x.shape[1]
    # ℓ_t - ℓ_s as a masked segment sum, not a difference of cumulative sums: with large
    # log-decays (long sequences, large Δ) the difference of two large f32 partial sums loses
    # most of its digits (errors up to ~1e-2 relative against a float64 loop).
    mask = jnp.exp(_segsum(log_decay.astype(dtype).transpose(0, 2, 1)))  # L: [B, H, t, s]
    M = mask * jnp.einsum("BtHN,BsHN->BHts", Ch, Bh)  # [B, H, t, s]
    y = jnp.einsum("BHts,BsHK->BtHK", M, u)  # [B, T, H, K]
    if T:
        final = jnp.einsum("BHs,BsHN,BsHK->BHKN", mask[:, :, -1], Bh, u)  # [B, H, K, N]
    else:  # no positions: the state is the initial one (added below), else zero
        final = jnp.zeros((x.shape[0], H, x.shape[3], B.shape[3]), dtype)
    if initial_state is not None:
        h0 = initial_state.astype(dtype)
        y = y + jnp.einsum("BtHN,BHKN,BtH->BtHK", Ch, h0, jnp.exp(cum))
        decay = jnp.exp(cum[:, -1]) if T else jnp.ones(h0.shape[:2], dtype)  # [B, H]
        final = final + decay[..., None, None] * h0
    return _skip(y, x, D).astype(x.dtype), final


@validates_arguments
def ssd_scan(
    x: Float[Array, "B T H K"],
    dt: Float[Array, "B T H"],
    A: Float[Array, " H"],
    B: Float[Array, "B T G N"],
    C: Float[Array, "B T G N"],
    *,
    D: Float[Array, " H"] | None = None,
    initial_state: Float[Array, "B H K N"] | None = None,
) -> tuple[Float[Array, "B T H K"], Float[Array, "B H K N"]]:
    """The sequential recurrence, one `lax.scan` step per position: a reference for `ssd_chunked`.

    H_t = exp(Δ_t a) H_{t-1} + (Δ_t x_t) B_tᵀ,  y_t = H_t C_t + D x_t  (Mamba-2 §3.1, eq. 2;
    also the O(1)-per-token decoding step).

    Args:
      x, dt, A, B, C, D, initial_state: as in `ssd_chunked`.

    Returns:
      (y in x's dtype, the final state H_T in the compute dtype).

    Raises:
      ValueError: bad shapes, as `ssd_chunked`.
    """
    _validate(x, dt, A, B, C, D, initial_state)
    batch, _, H, K = x.shape
    N = B.shape[3]
    r = H // B.shape[2]
    dtype = _compute_dtype(x, dt, A, B, C, D, initial_state)
    a = A.astype(dtype)[None, :]  # [1, H]
    h0 = (
        jnp.zeros((batch, H, K, N), dtype) if initial_state is None else initial_state.astype(dtype)
    )

    def step(h, inputs):
        x_t, dt_t, B_t, C_t = inputs  # [B, H, K], [B, H], [B, H, N], [B, H, N]
        h = jnp.exp(dt_t * a)[..., None, None] * h + jnp.einsum(
            "BHK,BHN->BHKN", x_t * dt_t[..., None], B_t
        )  # [B, H, K, N]
        return h, jnp.einsum("BHKN,BHN->BHK", h, C_t)

    time_major = (
        jnp.moveaxis(x.astype(dtype), 1, 0),  # [T, B, H, K]
        jnp.moveaxis(dt.astype(dtype), 1, 0),  # [T, B, H]
        jnp.moveaxis(jnp.repeat(B.astype(dtype), r, axis=2), 1, 0),  # [T, B, H, N]
        jnp.moveaxis(jnp.repeat(C.astype(dtype), r, axis=2), 1, 0),  # [T, B, H, N]
    )
    final, y = lax.scan(step, h0, time_major)  # y: [T, B, H, K]
    return _skip(jnp.moveaxis(y, 0, 1), x, D).astype(x.dtype), final


def _uniform_log(low: float, high: float) -> initializers.Initializer:
    """log U(low, high): Mamba-2's A_log init (a = -exp(A_log) spread over [-high, -low])."""

    def init(key, shape, dtype=jnp.float32):
        return jnp.log(jax.random.uniform(key, shape, jnp.float32, low, high)).astype(dtype)

    return init


def _dt_bias_init(dt_min: float, dt_max: float, floor: float) -> initializers.Initializer:
    """softplus⁻¹(Δ₀) with Δ₀ = max(exp U(log dt_min, log dt_max), floor): Mamba-2's dt_bias."""

    def init(key, shape, dtype=jnp.float32):
        log_dt = jax.random.uniform(key, shape, jnp.float32, math.log(dt_min), math.log(dt_max))
        dt = jnp.maximum(jnp.exp(log_dt), floor)
        return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)

    return init


class _GatedRMSNorm(nn.Module):
    """RMSNorm(y ⊙ SiLU(z)) · scale, per group of channels, in float32 (or float64).

    Mamba-2's RMSNormGated with norm_before_gate=False and group_size = d_inner / G.

    Attributes:
      num_groups: G; each group of C / G channels is normalised on its own (one group: the whole
        width, as TiM4Rec, whose configs have G = 1).
      epsilon: added to the mean square.
      dtype: output dtype; None keeps y's.
      param_dtype: parameter storage dtype.
    """

    num_groups: int = 1
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, y: Float[Array, "B T C"], z: Float[Array, "B T C"]) -> Float[Array, "B T C"]:
        batch, T, channels = y.shape
        acc = _compute_dtype(y, z)
        gated = y.astype(acc) * jax.nn.silu(z.astype(acc))  # [B, T, C]
        grouped = gated.reshape(batch, T, self.num_groups, channels // self.num_groups)
        normed = RMSNorm(self.epsilon, use_scale=False)(grouped).reshape(batch, T, channels)
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(initializers.ones, ("norm",)),
            (channels,),
            self.param_dtype,
        )
        return (normed * scale.astype(acc)[None, None, :]).astype(self.dtype or y.dtype)


class Mamba2Mixer(nn.Module):
    """The Mamba-2 block: in_proj -> [z, xBC, dt]; xBC = act(causal depthwise conv(xBC)) split
    into x, B, C; y = SSD(x, Δ = softplus(dt · dt_scale + dt_bias), a = -exp(A_log), B, C) + D x;
    out_proj(RMSNorm(y ⊙ SiLU(z)) · w).

    Mamba-2 §7.1 and `mamba_ssm/modules/mamba2.py` (d_ssm = d_inner: no extra MLP channels, a
    per-head D, no dt_limit), as TiM4Rec's `TiSSD` (arXiv:2409.16182 §4.2, its `ssd.py`) calls
    it. TiM4Rec multiplies the pre-softplus dt by its time factor τ: pass it as `dt_scale`
    (None, or all ones, is the plain Mamba-2 block).

    Parameter names follow the PyTorch module (in_proj, conv1d, A_log, dt_bias, D, norm,
    out_proj). Inits: A_log = log U(A_init_range); dt_bias = softplus⁻¹ of
    exp U(log dt_min, log dt_max) floored at dt_init_floor; D = 1; the Dense kernels N(0, 0.02)
    with zero biases (TiM4Rec's `_init_weights`); the conv kernel U(±1/sqrt(W)) (torch's Conv1d
    default, Mamba-2's) with a zero bias (TiM4Rec zeroes it; torch would draw it uniform).

    Attributes:
      state_dim: N (Mamba-2: 128; TiM4Rec: 32).
      conv_width: W of the causal depthwise convolution.
      expand: d_inner = expand · D.
      head_dim: K; H = d_inner / K (Mamba-2: 64; TiM4Rec: 32).
      num_groups: G, groups of heads sharing B and C.
      chunk_size: SSD chunk length.
      activation: after the convolution: "silu" (Mamba-2) or "hardswish" (what every released
        TiM4Rec config runs: its code falls back to Hardswish when H % 8 != 0).
      norm_eps: epsilon of the gated RMSNorm (Mamba-2: 1e-5; TiM4Rec passes its norm_eps).
      use_bias: biases on in_proj and out_proj (TiM4Rec: True; Mamba-2's default: False).
      conv_bias: bias on the convolution.
      A_init_range: (low, high) of -a at init.
      dt_min, dt_max, dt_init_floor: the range of Δ at init (with dt_scale = 1).
      kernel_init: of the in_proj and out_proj kernels (unboxed).
      conv_kernel_init: of the convolution kernel [W, C] (unboxed); None: torch's `nn.Conv1d`
        default, U(±1/sqrt(W)), which mamba_ssm keeps. TiM4Rec's `is_kai_ming_init` (torch
        kaiming_normal_, fan_out, on the [C, 1, W] weight: std sqrt(2 / (C W))) is
        `variance_scaling(2 / W, "fan_out", "normal")` here.
      conv_bias_init: of the convolution bias [C] (unboxed); None: torch's default, U(±1/sqrt(W)),
        as mamba_ssm keeps it (TiM4Rec's `is_kai_ming_init` zeroes it).
      dtype: compute dtype of the projections and the convolution; the SSD, softplus and norm
        run in float32 (float64 when the projections are).
      param_dtype: parameter storage dtype.
    """

    state_dim: int = 128
    conv_width: int = 4
    expand: int = 2
    head_dim: int = 64
    num_groups: int = 1
    chunk_size: int = 256
    activation: Activation = "silu"
    norm_eps: float = 1e-5
    use_bias: bool = True
    conv_bias: bool = True
    A_init_range: tuple[float, float] = (1.0, 16.0)
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    kernel_init: initializers.Initializer = initializers.normal(0.02)
    conv_kernel_init: initializers.Initializer | None = None
    conv_bias_init: initializers.Initializer | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _checked_heads(self, features: int) -> int:
        """The number of heads H for inputs of width `features`, after checking the fields."""
        d_inner = self.expand * features
        if self.head_dim < 1 or d_inner % self.head_dim:
            raise ValueError(
                f"head_dim={self.head_dim}: must divide d_inner = expand * D = {d_inner}."
            )
        heads = d_inner // self.head_dim
        if self.num_groups < 1 or heads % self.num_groups:
            raise ValueError(
                f"num_groups={self.num_groups}: must be a positive divisor of the {heads} heads."
            )
        if self.activation not in ("silu", "hardswish"):
            raise ValueError(f"activation={self.activation!r}: expected 'silu' or 'hardswish'.")
        if not 0 < self.A_init_range[0] <= self.A_init_range[1]:
            raise ValueError(f"A_init_range={self.A_init_range}: expected 0 < low <= high.")
        return heads

    @nn.compact
    @validates_arguments
    def __call__(
        self, inputs: Float[Array, "B T D"], dt_scale: Float[Array, "B T H"] | None = None
    ) -> Float[Array, "B T D"]:
        """Mix `inputs` along time, causally.

        Args:
          inputs: the sequence.
          dt_scale: a factor on the pre-softplus dt, Δ = softplus(dt · dt_scale + dt_bias)
            (TiM4Rec's τ); None for none.

        Returns:
          The block's output, in `dtype` (the input's when None).

        Raises:
          ValueError: inputs or dt_scale is not a floating array of its shape, head_dim does
            not divide expand · D, num_groups does not divide the heads, or an unknown
            activation.
        """
        check_float_array("inputs", inputs)
        if dt_scale is not None:
            check_float_array("dt_scale", dt_scale)
        if inputs.ndim != 3:
            raise ValueError(f"inputs.shape={inputs.shape}: expected [B, T, D].")
        batch, T, features = inputs.shape
        H = self._checked_heads(features)
        G, N, K = self.num_groups, self.state_dim, self.head_dim
        d_inner = H * K
        if dt_scale is not None and dt_scale.shape != (batch, T, H):
            raise ValueError(
                f"dt_scale.shape={dt_scale.shape}: expected [B, T, H] = {(batch, T, H)}."
            )
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # Order of the torch module: [z, x, B, C, dt]; the conv sees x, B, C together.
        zxbcdt = nn.Dense(
            2 * d_inner + 2 * G * N + H,
            use_bias=self.use_bias,
            kernel_init=nn.with_logical_partitioning(self.kernel_init, ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("mlp",)),
            name="in_proj",
            **dtypes,
        )(inputs)  # [B, T, 2 d_inner + 2 G N + H]
        z, xBC, dt = jnp.split(zxbcdt, [d_inner, 2 * d_inner + 2 * G * N], axis=-1)
        conv_init = torch_default_init(self.conv_width)
        if self.conv_kernel_init is not None:
            conv_init["kernel_init"] = self.conv_kernel_init
        if self.conv_bias_init is not None:
            conv_init["bias_init"] = self.conv_bias_init
        xBC = CausalConv1d(
            self.conv_width,
            use_bias=self.conv_bias,
            channel_axis="mlp",
            name="conv1d",
            **conv_init,
            **dtypes,
        )(xBC)  # [B, T, d_inner + 2 G N]
        act = jax.nn.silu if self.activation == "silu" else jax.nn.hard_swish
        acc = _compute_dtype(zxbcdt)
        x, B, C = jnp.split(act(xBC), [d_inner, d_inner + G * N], axis=-1)

        def head_param(name: str, init: initializers.Initializer):
            boxed = nn.with_logical_partitioning(init, ("heads",))
            return self.param(name, boxed, (H,), self.param_dtype).astype(acc)

        A_log = head_param("A_log", _uniform_log(*self.A_init_range))
        dt_bias = head_param("dt_bias", _dt_bias_init(self.dt_min, self.dt_max, self.dt_init_floor))
        D = head_param("D", initializers.ones)
        dt = dt.astype(acc)  # [B, T, H]
        if dt_scale is not None:
            dt = dt * dt_scale.astype(acc)
        delta = jax.nn.softplus(dt + dt_bias[None, None, :])  # Δ: [B, T, H]
        y, _ = ssd_chunked(
            x.reshape(batch, T, H, K),
            delta,
            -jnp.exp(A_log),
            B.reshape(batch, T, G, N),
            C.reshape(batch, T, G, N),
            chunk_size=self.chunk_size,
            D=D,
        )  # [B, T, H, K]
        y = _GatedRMSNorm(G, self.norm_eps, name="norm", **dtypes)(
            y.reshape(batch, T, d_inner), z
        )  # [B, T, d_inner]
        return nn.Dense(
            features,
            use_bias=self.use_bias,
            kernel_init=nn.with_logical_partitioning(self.kernel_init, ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("embed",)),
            name="out_proj",
            **dtypes,
        )(y)  # [B, T, D]
