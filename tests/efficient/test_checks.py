"""Shared configuration checks, and the configurations that used to accept wrong types."""

import dataclasses

import jaxtyping
import numpy as np
import pytest

from efficient.checks import check_positive, check_positive_ints
from efficient.models.hyena import HyenaConfig
from efficient.models.kat import KATConfig
from efficient.models.tim4rec import TiM4RecConfig
from efficient.models.vit import ViTConfig


@dataclasses.dataclass
class _Owner:
    value: object


@pytest.mark.parametrize("value", [1, 7, np.int64(3)])
def test_positive_ints_accept(value):
    check_positive_ints(_Owner(value), ("value",))


@pytest.mark.parametrize("value", [0, -2, 2.0, 2.5, True, "2", None])
def test_positive_ints_reject(value):
    with pytest.raises(ValueError, match=rf"value={value!r}: expected a positive integer"):
        check_positive_ints(_Owner(value), ("value",))


@pytest.mark.parametrize("value", [1e-12, 3, np.float32(0.5)])
def test_positive_accept(value):
    check_positive(_Owner(value), ("value",))


@pytest.mark.parametrize("value", [0.0, -1, float("nan"), float("inf"), True, "1e-6"])
def test_positive_reject(value):
    with pytest.raises(ValueError, match="expected a finite number > 0"):
        check_positive(_Owner(value), ("value",))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: HyenaConfig.smoke(norm_eps=-1.0), "norm_eps=-1.0: expected a finite number"),
        (lambda: TiM4RecConfig(num_items=10, norm_eps=float("nan")), "norm_eps=nan"),
        (lambda: ViTConfig(patch_size=0), "patch_size=0: expected a positive integer"),
        (lambda: ViTConfig(num_heads=0), "num_heads=0"),
        (lambda: ViTConfig(num_classes=0), "num_classes=0"),
        (lambda: KATConfig(image_size=-32), "image_size=-32"),
    ],
)
def test_configs_name_the_bad_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.fixture
def no_typecheck():
    """Without the import hook's type checks (tests/conftest.py), as users run the code."""
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: HyenaConfig.smoke(features=16.0), "features=16.0: expected a positive integer"),
        (lambda: HyenaConfig.smoke(order=2.0), "order=2.0: expected a positive integer"),
        (lambda: HyenaConfig.smoke(emb_dim=5.0), "emb_dim=5.0: expected a positive integer"),
        (lambda: HyenaConfig.smoke(filter_layers=1.5), "filter_layers=1.5: expected an integer"),
        (lambda: TiM4RecConfig(num_items=2.5), "num_items=2.5: expected a positive integer"),
    ],
)
def test_configs_reject_floats_for_sizes(no_typecheck, make, match):
    """These used to pass the config and fail at init as shape errors. (In the test run the import
    hook's type check meets them first; users get check_positive_ints' message.)"""
    with pytest.raises(ValueError, match=match):
        make()
