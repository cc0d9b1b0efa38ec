"""Shared configuration checks, and the configurations that used to accept wrong types."""

import dataclasses
from typing import Literal

import jax.numpy as jnp
import numpy as np
import pytest

from efficient.checks import (
    check_field_types,
    check_float_dtypes,
    check_positive,
    check_positive_ints,
    is_integer,
)
from efficient.data import RecSysDataConfig
from efficient.models.hyena import HyenaConfig
from efficient.models.kat import KATConfig
from efficient.models.sasrec import SASRecConfig
from efficient.models.tim4rec import TiM4RecConfig
from efficient.models.vit import ViTConfig
from efficient.train import TrainConfig


@dataclasses.dataclass
class _Owner:
    value: object


def test_is_integer():
    assert all(is_integer(v) for v in (0, -3, np.int64(3), np.uint8(1)))
    assert not any(is_integer(v) for v in (True, np.bool_(False), 2.0, np.float32(1), "1", None))


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


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: HyenaConfig.smoke(features=16.0), "features=16.0: expected an integer"),
        (lambda: HyenaConfig.smoke(order=2.0), "order=2.0: expected an integer"),
        (lambda: HyenaConfig.smoke(emb_dim=5.0), "emb_dim=5.0: expected an integer"),
        (lambda: HyenaConfig.smoke(filter_layers=1.5), "filter_layers=1.5: expected an integer"),
        (lambda: TiM4RecConfig(num_items=2.5), "num_items=2.5: expected an integer"),
    ],
)
def test_configs_reject_floats_for_sizes(make, match):
    """These used to pass the config and fail at init as shape errors."""
    with pytest.raises(ValueError, match=match):
        make()


@dataclasses.dataclass
class _Typed:
    flag: bool = True
    count: int = 1
    rate: float = 0.5
    cap: float | None = None
    pair: tuple[int, int] = (1, 2)
    sizes: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    mode: Literal["a", "b"] = "a"
    level: Literal[1, 2] | None = None
    anything: object = None


@pytest.mark.parametrize(
    "changes",
    [{}, {"flag": np.bool_(False)}, {"count": np.int64(-3)}, {"rate": 2}, {"rate": float("inf")},
     {"cap": 1.0}, {"pair": (np.int32(3), 4)}, {"sizes": (1, 2, 3)}, {"names": ("a", "b")},
     {"mode": "b"}, {"level": 2}, {"level": np.int64(2)}, {"anything": "x"}],
)  # fmt: skip
def test_field_types_accept(changes):
    check_field_types(_Typed(**changes))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"flag": "False"}, "flag='False': expected True or False"),
        ({"flag": 1}, "flag=1: expected True or False"),
        ({"count": 2.0}, "count=2.0: expected an integer"),
        ({"count": True}, "count=True: expected an integer"),
        ({"rate": float("nan")}, "rate=nan: expected a number"),
        ({"rate": "0.5"}, "rate='0.5': expected a number"),
        ({"cap": True}, "cap=True: expected a number"),
        ({"pair": (1,)}, r"pair=\(1,\): expected a tuple of 2 integers"),
        ({"pair": [1, 2]}, "pair=.*expected a tuple of 2 integers"),
        ({"sizes": (1, 2.5)}, "sizes=.*expected a tuple of any number of integers"),
        ({"names": "a"}, "names='a': expected a tuple of non-empty strings"),
        ({"names": ("a", "")}, "names=.*expected a tuple of non-empty strings"),
        ({"names": ("a", 3)}, "names=.*expected a tuple of non-empty strings"),
        ({"mode": "c"}, "mode='c': expected one of 'a', 'b'"),
        ({"mode": ["a"]}, r"mode=\['a'\]: expected one of 'a', 'b'"),  # unhashable: no TypeError
        ({"level": True}, "level=True: expected one of 1, 2"),  # True == 1, but not a level
        ({"level": 2.0}, "level=2.0: expected one of 1, 2"),
    ],
)
def test_field_types_reject(changes, match):
    with pytest.raises(ValueError, match=match):
        check_field_types(_Typed(**changes))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, "float16", np.float64])
def test_float_dtypes_accept(dtype):
    check_float_dtypes(_Owner(dtype), ("value",))


@pytest.mark.parametrize("dtype", [jnp.int32, "int8", bool, "not-a-dtype", None])
def test_float_dtypes_reject(dtype):
    with pytest.raises(ValueError, match="value=.*expected a floating dtype"):
        check_float_dtypes(_Owner(dtype), ("value",))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        # A truthy string would have built TiM4Rec where SSD4Rec was asked for.
        (lambda: TiM4RecConfig(time_aware="False"), "time_aware='False': expected True or False"),
        (lambda: TiM4RecConfig(mask_padding="False"), "mask_padding='False'"),
        (lambda: TiM4RecConfig(init_std=-1.0), "init_std=-1.0: expected a finite number > 0"),
        (lambda: TiM4RecConfig(dtype=jnp.int32), "dtype=.*int32.*expected a floating dtype"),
        (lambda: SASRecConfig(init_std=float("nan")), "init_std=nan"),
        (lambda: SASRecConfig(param_dtype=jnp.int32), "param_dtype=.*expected a floating"),
        # 2.5 ran the 3-core filter; True ran the 1-core one.
        (lambda: RecSysDataConfig(min_interactions=2.5), "min_interactions=2.5: expected an int"),
        (lambda: RecSysDataConfig(min_interactions=True), "min_interactions=True"),
        (lambda: RecSysDataConfig(seed=1.5), "seed=1.5"),
        (lambda: RecSysDataConfig(synthetic_length=(3,)), "synthetic_length=.*tuple of 2"),
        (lambda: KATConfig(param_dtype="int32"), "param_dtype='int32': expected a floating"),
        # Literal fields: the choices named, from the annotation.
        (lambda: KATConfig(implementation="cuda"), "implementation='cuda': expected one of 'auto'"),
        (lambda: KATConfig(fc_init="zeros"), "fc_init='zeros': expected one of 'trunc_normal'"),
        (lambda: TiM4RecConfig(activation="gelu"), "activation='gelu': expected one of 'auto'"),
        # Nested configs: a string or a dict failed later, as an AttributeError.
        (
            lambda: TrainConfig(optimizer="adamw"),
            "optimizer='adamw': expected an instance of OptimizerConfig",
        ),
        (lambda: TrainConfig(mesh={"data": 8}), "mesh=.*expected an instance of MeshConfig"),
        (lambda: TrainConfig(outer=3), "outer=3: expected an instance of OuterConfig"),
        (lambda: RecSysDataConfig(source="ml-1m"), "source='ml-1m': expected one of 'ml-100k'"),
        (lambda: HyenaConfig.smoke(fft_implementation="cufft"), "fft_implementation='cufft'"),
    ],
)
def test_config_fields_are_type_checked(make, match):
    with pytest.raises(ValueError, match=match):
        make()
