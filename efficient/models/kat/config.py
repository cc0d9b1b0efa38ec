"""KAT configuration and presets: a ViT/DeiT whose MLPs are GR-KAN blocks.

Kolmogorov-Arnold Transformer (KAT, Yang & Wang, arXiv:2409.10594) §4-5; sizes and settings from
the authors' code (Adamdad/kat: katransformer.py `kat_{tiny,small,base}_swish_patch16_224`,
scripts/train_kat_*_8x128.sh) and its README table (params, ImageNet-1k top-1 from scratch).
"""

import dataclasses

import jax.numpy as jnp

from efficient.checks import check_positive_ints, validates_arguments
from efficient.models.vit import ViTConfig
from efficient.nn.kan import FcInit, Implementation, check_preset


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class KATConfig(ViTConfig):
    """`ViTConfig` plus the GR-KAN settings; every ViT field keeps its meaning.

    Attributes:
      num_groups: G, rational groups of both activations of a block; it must divide `features`
        and `mlp_dim` (KAT: 8).
      act1_init: preset of the rational before fc1 ("identity" in KAT).
      act2_init: preset of the rational before fc2 ("swish" in KAT's released models).
      shared_numerator: one numerator [1, 6] for all groups and a denominator [G, 4] per group
        (KAT, FlashKAT), or a numerator per group too.
      fc_init: "trunc_normal" (what the authors' code does in effect: the README explains) or
        "variance_preserving" (KAT §4.3 as written).
      implementation: passed to `group_rational` ("auto": Pallas on TPU, an XLA forward and
        a Pallas backward on GPU (each pass the faster one there; under a sharded jit the
        kernels run per shard), the XLA path on CPU).
    """

    num_groups: int = 8
    act1_init: str = "identity"
    act2_init: str = "swish"
    shared_numerator: bool = True
    fc_init: FcInit = "trunc_normal"
    implementation: Implementation = "auto"

    def __post_init__(self):
        super().__post_init__()
        check_positive_ints(self, ("num_groups",))  # numpy ints too; not bools
        object.__setattr__(self, "num_groups", int(self.num_groups))
        try:
            dtype = jnp.dtype(self.dtype).name
        except TypeError:
            dtype = None
        if dtype not in ("float32", "bfloat16"):  # group_rational's input dtypes
            raise ValueError(
                f"dtype={self.dtype!r}: expected float32 or bfloat16 (group_rational's inputs)."
            )
        for name in ("features", "mlp_dim"):
            if getattr(self, name) % self.num_groups:
                raise ValueError(
                    f"num_groups={self.num_groups} must divide {name}={getattr(self, name)} "
                    "(each rational splits its channels into equal groups)."
                )
        check_preset(self.act1_init, "act1_init")
        check_preset(self.act2_init, "act2_init")

    @classmethod
    def tiny(cls) -> "KATConfig":
        """KAT-T: DeiT-Ti sizes, G 8; 5,718,328 params (README: 5.7M, 74.6% top-1)."""
        return cls(features=192, num_layers=12, num_heads=3, mlp_dim=768, drop_path_rate=0.1)

    @classmethod
    def small(cls) -> "KATConfig":
        """KAT-S: DeiT-S sizes, G 8; 22,051,576 params (README: 22.1M, 81.2% top-1)."""
        return cls(features=384, num_layers=12, num_heads=6, mlp_dim=1536, drop_path_rate=0.1)

    @classmethod
    def base(cls) -> "KATConfig":
        """KAT-B: ViT-B/DeiT-B sizes, G 8; 86,568,568 params (README: 86.6M, 82.3% top-1).

        Drop path 0.4 as in the authors' scripts/train_kat_base_8x128.sh (DeiT-B: 0.1).
        """
        return cls(features=768, num_layers=12, num_heads=12, mlp_dim=3072, drop_path_rate=0.4)

    # smoke() is inherited from ViTConfig: its `cls(...)` builds a KATConfig with G = 8.

    @classmethod
    def fashion_mnist(cls) -> "KATConfig":
        """KAT-T on 28x28x1 with 7x7 patches (16 tokens), 10 classes: the size of the ViT of
        `vit/fashion_mnist` (DeiT-Ti, patch 7) plus 912 rational coefficients."""
        return dataclasses.replace(
            cls.tiny(), image_size=28, patch_size=7, in_channels=1, num_classes=10
        )
