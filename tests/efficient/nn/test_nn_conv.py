"""ConvBN and the PyTorch-semantics transposed convolution against float64 numpy loops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from efficient.nn import ConvBN, conv_general_dilated, conv_transpose_2d


def _conv_transpose_numpy(x, kernel, stride, padding):
    """torch.nn.ConvTranspose2d by definition: every input pixel scatters a weighted kernel."""
    batch, h, w, _ = x.shape
    k = kernel.shape[0]
    full = np.zeros((batch, (h - 1) * stride + k, (w - 1) * stride + k, kernel.shape[-1]))
    for i in range(h):
        for j in range(w):
            patch = np.einsum("bc,uvco->buvo", x[:, i, j], kernel)
            full[:, i * stride : i * stride + k, j * stride : j * stride + k] += patch
    return full[:, padding : full.shape[1] - padding, padding : full.shape[2] - padding]


def _conv_numpy(x, kernel, stride, pad, groups=1):
    """Cross-correlation with symmetric zero padding (torch.nn.Conv2d)."""
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = kernel.shape[0]
    out_h = (xp.shape[1] - k) // stride + 1
    out_w = (xp.shape[2] - k) // stride + 1
    cin_g, cout = kernel.shape[2], kernel.shape[3]
    cout_g = cout // groups
    out = np.zeros((x.shape[0], out_h, out_w, cout))
    for i in range(out_h):
        for j in range(out_w):
            window = xp[:, i * stride : i * stride + k, j * stride : j * stride + k]
            for g in range(groups):
                win = window[..., g * cin_g : (g + 1) * cin_g]
                ker = kernel[..., g * cout_g : (g + 1) * cout_g]
                out[:, i, j, g * cout_g : (g + 1) * cout_g] = np.einsum("buvc,uvco->bo", win, ker)
    return out


@pytest.mark.parametrize(
    ("stride", "k", "padding", "h", "w"),
    [(2, 4, 1, 3, 4), (1, 3, 1, 4, 3), (3, 6, 1, 2, 3), (4, 8, 2, 2, 2)],
)
def test_conv_transpose_matches_torch_definition(stride, k, padding, h, w):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, h, w, 3))
    kernel = rng.normal(size=(k, k, 3, 5))
    fn = jax.jit(lambda x, kern: conv_transpose_2d(x, kern, strides=stride, padding=padding))
    got = fn(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32))
    want = _conv_transpose_numpy(x, kernel, stride, padding)
    size = lambda n: (n - 1) * stride - 2 * padding + k  # noqa: E731
    assert got.shape == want.shape == (2, size(h), size(w), 5)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("h", [3, 4, 7])
def test_conv_transpose_stride2_doubles(h):
    # LowFormer's upsample: kernel 2s, stride s, padding s/2 maps h -> 2h exactly.
    y = conv_transpose_2d(jnp.ones((1, h, h + 1, 2)), jnp.ones((4, 4, 2, 3)), strides=2, padding=1)
    assert y.shape == (1, 2 * h, 2 * (h + 1), 3)


def test_conv_transpose_rejects_bad_padding():
    with pytest.raises(ValueError, match="padding=4"):
        conv_transpose_2d(jnp.ones((1, 2, 2, 1)), jnp.ones((4, 4, 1, 1)), strides=2, padding=4)


@pytest.mark.parametrize(("stride", "groups", "size"), [(2, 1, 6), (2, 4, 7), (1, 1, 5)])
def test_conv_bn_uses_torch_symmetric_padding(stride, groups, size):
    # Flax 'SAME' would pad (0, 1) for a stride-2 3x3 conv on an even input; torch pads (1, 1).
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, size, size, 4))
    layer = ConvBN(
        8 if groups == 1 else 4, 3, strides=stride, feature_group_count=groups, use_norm=False
    )
    variables = jax.eval_shape(
        lambda: layer.init(jax.random.key(0), jnp.zeros(x.shape), train=False)
    )
    kernel = rng.normal(size=nn.meta.unbox(variables)["params"]["conv"]["kernel"].shape)
    params = {"params": {"conv": {"kernel": jnp.asarray(kernel, jnp.float32)}}}
    got = jax.jit(lambda p, x: layer.apply(p, x, train=False))(params, jnp.asarray(x, jnp.float32))
    want = _conv_numpy(x, kernel, stride, 1, groups)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_conv_bn_axis_names_and_fold_form():
    x = jnp.zeros((1, 4, 4, 8))
    dense = jax.eval_shape(lambda: ConvBN(16, 3).init(jax.random.key(0), x, train=False))
    assert dense["params"]["conv"]["kernel"].names == (
        "conv_height",
        "conv_width",
        "conv_in",
        "conv_out",
    )
    assert dense["params"]["bn"]["scale"].names == ("norm",)
    assert "bias" not in dense["params"]["conv"]
    depthwise = jax.eval_shape(
        lambda: ConvBN(8, 3, feature_group_count=8).init(jax.random.key(0), x, train=False)
    )
    assert depthwise["params"]["conv"]["kernel"].names == (
        "conv_height",
        "conv_width",
        None,
        "conv_out",
    )
    folded = jax.eval_shape(
        lambda: ConvBN(16, 3, fold_bn=True).init(jax.random.key(0), x, train=False)
    )
    assert set(folded) == {"params"} and set(folded["params"]) == {"conv"}
    assert folded["params"]["conv"]["bias"].names == ("conv_out",)


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "pad", "groups", "lhs_dilation"),
    [
        ((3, 2, 2, 8), (3, 3, 8, 16), 1, 1, 1, 1),  # tiny map: im2col + matmul
        ((3, 4, 3, 8), (3, 3, 8, 16), 2, 1, 1, 1),  # tiny map after a stride
        ((2, 2, 2, 6), (3, 3, 6, 5), 1, 1, 1, 2),  # tiny, input-dilated (transposed conv)
        ((3, 2, 2, 8), (3, 3, 1, 8), 1, 1, 8, 1),  # depthwise (shift-and-add on CPU)
        ((2, 7, 6, 8), (5, 5, 1, 8), 2, 2, 8, 1),  # depthwise, strided, odd sizes
        ((2, 6, 6, 4), (3, 3, 2, 6), 1, 1, 2, 1),  # grouped: the lax path
    ],
)
def test_conv_general_dilated_routes_match_lax(shape, kernel, stride, pad, groups, lhs_dilation):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=kernel), jnp.float32)
    args = ((stride, stride), ((pad, pad), (pad, pad)))
    kwargs = dict(lhs_dilation=(lhs_dilation,) * 2, feature_group_count=groups)

    def ours(x, w):
        return conv_general_dilated(x, w, *args, **kwargs)

    def ref(x, w):
        dn = ("NHWC", "HWIO", "NHWC")
        return lax.conv_general_dilated(x, w, *args, dimension_numbers=dn, **kwargs)

    np.testing.assert_allclose(jax.jit(ours)(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
    # Same gradients (the routes are plain jnp, differentiated by JAX).
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731
    for got, want in zip(
        jax.jit(jax.grad(loss(ours), (0, 1)))(x, w), jax.grad(loss(ref), (0, 1))(x, w), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
