"""Kolmogorov-Arnold Transformer: the ViT with every MLP replaced by a GR-KAN block.

Kolmogorov-Arnold Transformer (KAT, arXiv:2409.10594) §4 (GR-KAN), §5 (KAT-T/S/B); the
authors' code is Adamdad/kat katransformer.py (`KATVisionTransformer`, `KAN`).
"""

import flax.linen as nn

from efficient.models.kat.config import KATConfig
from efficient.models.vit import ViT
from efficient.nn import GRKAN


class KAT(ViT):
    """KAT image classifier: `ViT` (patch embedding, class token, pre-LN blocks, head) whose
    blocks use `GRKAN` (identity rational -> fc1 -> swish rational -> fc2) as the MLP.

    Parameters are the ViT's, under the same names, plus per block `mlp/act1` and `mlp/act2`
    ("numerator" [1, 6], "denominator" [G, 4]).

    Attributes:
      config: the architecture (see `KATConfig` and its presets).
    """

    config: KATConfig

    def block_mlp(self) -> nn.Module:
        cfg = self.config
        return GRKAN(
            cfg.mlp_dim,
            num_groups=cfg.num_groups,
            act1_init=cfg.act1_init,
            act2_init=cfg.act2_init,
            shared_numerator=cfg.shared_numerator,
            fc_init=cfg.fc_init,
            implementation=cfg.implementation,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            parent=None,
        )
