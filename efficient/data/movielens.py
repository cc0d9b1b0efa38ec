"""MovieLens-100K interactions read from the `recbole` wheel's atomic file `ml-100k.inter`."""

import functools
import importlib.util
import os
import pathlib
import shlex
import sys

import numpy as np
from jaxtyping import Float64, Shaped

ENV_VAR = "EFFICIENT_ML100K_INTER"
RECBOLE_VERSION = "1.2.1"
# The interpreter that runs, so the command installs where it is needed (a venv, a notebook
# kernel); `make setup` does it in this repository's checkout.
INSTALL_HINT = (
    f"install it with `{shlex.quote(sys.executable)} -m pip install --no-deps "
    f"recbole=={RECBOLE_VERSION}` (--no-deps: only its data files are used, not its torch code), "
    f"or set the environment variable {ENV_VAR} to an ml-100k.inter file"
)
# Where the wheel keeps the file, relative to the `recbole` package directory.
_PACKAGE_PATH = ("dataset_example", "ml-100k", "ml-100k.inter")
# The columns RecBole's sequential models load (`load_col: inter: [user_id, item_id, timestamp]`
# in the TiM4Rec configs); the atomic header names each as `name:type`.
_COLUMNS = {"user": "user_id:token", "item": "item_id:token", "timestamp": "timestamp:float"}

Table = dict[str, np.ndarray]


def ml100k_path() -> pathlib.Path:
    """The ml-100k.inter file: `$EFFICIENT_ML100K_INTER`, else the one in the `recbole` wheel.

    The package directory is found with `importlib.util.find_spec`, which does not import
    `recbole` (importing it needs torch, which a `--no-deps` install leaves out).

    Raises:
        FileNotFoundError: neither is there; the message says how to install the wheel.
    """
    if os.environ.get(ENV_VAR):
        path = pathlib.Path(os.environ[ENV_VAR])
        if not path.is_file():
            raise FileNotFoundError(f"{ENV_VAR}={path} is not a file: {INSTALL_HINT}.")
        return path
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"MovieLens-100K needs the `recbole` package: {INSTALL_HINT}.")
    for location in spec.submodule_search_locations:
        path = pathlib.Path(location).joinpath(*_PACKAGE_PATH)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the installed `recbole` package ({', '.join(spec.submodule_search_locations)}) has no "
        f"{'/'.join(_PACKAGE_PATH)}: {INSTALL_HINT}."
    )


def read_atomic_inter(
    path: str | pathlib.Path,
) -> dict[str, Shaped[np.ndarray, " n"] | Float64[np.ndarray, " n"]]:
    """Reads a RecBole atomic `.inter` file: tab-separated, a `name:type` header line.

    Args:
        path: the file; its header must name `user_id:token`, `item_id:token` and
            `timestamp:float` (in any order, among other columns).

    Returns:
        `{"user": str [n], "item": str [n], "timestamp": float64 [n]}` in file order; user and
        item ids stay tokens (strings), as RecBole reads them.

    Raises:
        ValueError: a column is missing, a row has the wrong number of fields, or a timestamp
            is not a finite number.
    """
    path = pathlib.Path(path)
    with path.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
    missing = [spec for spec in _COLUMNS.values() if spec not in header]
    if missing:
        raise ValueError(
            f"{path}: header {header} lacks {missing} (a RecBole atomic .inter file names its "
            "columns as name:type)."
        )
    try:
        rows = np.loadtxt(path, dtype=str, delimiter="\t", skiprows=1, ndmin=2, comments=None)
    except ValueError as e:
        raise ValueError(
            f"{path}: rows do not have the header's {len(header)} fields ({e})."
        ) from None
    if rows.shape[1] != len(header):
        raise ValueError(f"{path}: {rows.shape[1]} fields per row, header has {len(header)}.")
    table = {name: rows[:, header.index(spec)] for name, spec in _COLUMNS.items()}
    try:
        table["timestamp"] = table["timestamp"].astype(np.float64)
    except ValueError as e:
        raise ValueError(f"{path}: a timestamp is not a number ({e}).") from None
    if not np.isfinite(table["timestamp"]).all():
        raise ValueError(f"{path}: timestamps must be finite.")
    return table


@functools.cache
def _load_ml100k(path: pathlib.Path) -> Table:
    table = read_atomic_inter(path)
    for x in table.values():
        x.flags.writeable = False  # shared by every caller in the process
    return table


def load_ml100k() -> Table:
    """MovieLens-100K as RecBole ships it: 100,000 ratings of 1,682 movies by 943 users.

    Read once per process and cached (read-only). Ratings are not loaded: sequential
    recommendation treats every rating as an interaction, as RecBole's sequential configs do.
    Ratings were entered in bursts: 51% of a user's consecutive interactions (50,561 of 99,057)
    share their timestamp (whole seconds), so the order within a tie is the file order.

    Returns:
        `{"user": str [100000], "item": str [100000], "timestamp": float64 [100000]}` (Unix
        seconds, 1997-09-20 to 1998-04-22 UTC) in file order.

    Raises:
        FileNotFoundError: the `recbole` wheel is not installed (the message says how).
    """
    return _load_ml100k(ml100k_path().resolve())
