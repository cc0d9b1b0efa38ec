"""SASRec: causal self-attention over item sequences for next-item recommendation (RecBole's
implementation, the attention baseline of TiM4Rec).

Self-Attentive Sequential Recommendation (Kang & McAuley, ICDM 2018, arXiv:1808.09781 §3);
RecBole 1.2.1 `recbole/model/sequential_recommender/sasrec.py`, `recbole/model/layers.py`
(`TransformerEncoder`) and `abstract_recommender.py` (`get_attention_mask`, `gather_indexes`).
"""

import flax.linen as nn
import jax.numpy as jnp
from jax.nn import initializers
from jaxtyping import Array, Bool, Float, Float32, Int

from efficient.checks import validates_arguments
from efficient.models.sasrec.config import SASRecConfig
from efficient.nn import LayerNorm, Mlp, MultiHeadAttention, gelu_exact
from efficient.nn.next_item import check_inputs, item_scores, last_position


class SASRecLayer(nn.Module):
    """RecBole's post-LN `TransformerLayer`: x = LN(Dropout(Attention(x)) + x), then
    x = LN(Dropout(W2 GELU(W1 x)) + x).

    Attributes:
      config: the model configuration.
    """

    config: SASRecConfig

    @nn.compact
    def __call__(
        self, x: Float[Array, "B T D"], mask: Bool[Array, "B 1 1 T"], train: bool = False
    ) -> Float[Array, "B T D"]:
        """Args: x; mask: True on real keys (and-ed with the causal mask); train: dropout on."""
        c = self.config
        dtypes = dict(dtype=c.dtype, param_dtype=c.param_dtype)
        init = initializers.normal(c.init_std)

        def drop(v: Array) -> Array:
            return nn.Dropout(c.dropout_rate)(v, deterministic=not train)

        y = MultiHeadAttention(
            num_heads=c.num_heads,
            head_dim=c.head_dim,
            use_bias=True,
            causal=True,
            dropout_rate=c.attention_dropout_rate,
            kernel_init=init,
            name="attention",
            **dtypes,
        )(x, mask=mask, deterministic=not train)
        x = LayerNorm(epsilon=c.norm_eps, name="attention_norm", **dtypes)(drop(y) + x)
        y = Mlp(c.mlp_dim, activation=gelu_exact, kernel_init=init, name="mlp", **dtypes)(x)
        return LayerNorm(epsilon=c.norm_eps, name="mlp_norm", **dtypes)(drop(y) + x)


class SASRec(nn.Module):
    """SASRec: x = Dropout(LN(Emb(items) + Pos)), N x `SASRecLayer` with causal attention and a
    key-padding mask, the interest vector h = output at position length - 1, scores = h Eᵀ
    over every embedding row (padding row 0 included, as in RecBole).

    RecBole masks keys with `item_seq != 0`; here positions >= length are masked, the same for
    the left-aligned batches of `efficient.data`. With right padding and the causal mask the
    key mask only changes the padded positions' outputs, never h. RecBole adds -10000 to masked
    logits; `MultiHeadAttention` uses the float32 minimum: the same softmax wherever a row has a
    real key, which every row has (position 0 is real when length >= 1).

    Attributes:
      config: the model configuration.
    """

    config: SASRecConfig

    def setup(self):
        c = self.config

        def embed(rows: int, axes: tuple[str, str]) -> nn.Embed:
            return nn.Embed(
                rows,
                c.features,
                embedding_init=nn.with_logical_partitioning(initializers.normal(c.init_std), axes),
                dtype=c.dtype,
                param_dtype=c.param_dtype,
            )

        self.item_embedding = embed(c.num_items + 1, ("vocab", "embed"))
        self.position_embedding = embed(c.max_len, ("seq", "embed"))
        self.embed_norm = LayerNorm(epsilon=c.norm_eps, dtype=c.dtype, param_dtype=c.param_dtype)
        self.dropout = nn.Dropout(c.dropout_rate)
        self.layers = [SASRecLayer(c) for _ in range(c.num_layers)]

    @validates_arguments
    def encode(
        self,
        items: Int[Array, "B T"],
        timestamps: Float[Array, "B T"],
        lengths: Int[Array, " B"],
        train: bool = False,
    ) -> Float[Array, "B T D"]:
        """The last layer's output at every position.

        Args and Raises: as `__call__`.
        """
        c = self.config
        check_inputs(
            items,
            timestamps,
            lengths,
            max_len=c.max_len,
            exact=False,
            num_items=c.num_items,
            time_aware=False,
            train=train,
        )
        T = items.shape[1]
        positions = jnp.arange(T, dtype=jnp.int32)
        x = self.item_embedding(items) + self.position_embedding(positions)[None]  # [B, T, D]
        x = self.dropout(self.embed_norm(x), deterministic=not train)
        real = positions.astype(lengths.dtype)[None, :] < lengths[:, None]  # [B, T]
        mask = real[:, None, None, :]  # [B, 1, 1, T]: keys
        for layer in self.layers:
            x = layer(x, mask, train)
        return x

    @validates_arguments
    def __call__(
        self,
        items: Int[Array, "B T"],
        timestamps: Float[Array, "B T"],
        lengths: Int[Array, " B"],
        train: bool = False,
    ) -> Float32[Array, "B V"]:
        """Scores of every item id as the next item.

        Args:
          items: item ids in 0..num_items, left-aligned, right-padded with 0.
          timestamps: ignored (the shared recommender signature); its shape is still checked.
          lengths: real positions per row (0 for batch padding: that row reads position 0).
          train: dropout on (needs `rngs={"dropout": key}`).

        Returns:
          float32 [B, num_items + 1]; column 0 is the padding item.

        Raises:
          ValueError: a type, shape or dtype is wrong, or T > max_len; and, in an eager call,
            an id outside 0..num_items or a length outside 0..T or disagreeing with the padding.
        """
        h = last_position(self.encode(items, timestamps, lengths, train), lengths)  # [B, D]
        return item_scores(h, self.item_embedding.embedding)
