"""Grain helpers shared by the image and text pipelines: seeds, batches, sharding, iterators."""

import grain
import numpy as np
from absl import flags

# In-process reading: arrays are in memory and the work is vectorised numpy per batch, so one
# thread that prepares a few batches ahead of the trainer is enough (grain's defaults, 16 threads
# and 500 elements, are meant for remote files and would hold 500 batches).
_READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)


def _train_index_batches(num_examples: int, batch_size: int, seed: int) -> grain.MapDataset:
    """Infinite MapDataset of int64 [batch_size] example indices: step -> batch.

    grain's `shuffle` reads the epoch from an index past its length and permutes each epoch with
    seed `seed + epoch`; `batch` and `repeat` pass such indices through, so the order is
    shuffle -> batch (per epoch, dropping the remainder) -> repeat. (`repeat` before `shuffle`
    would permute one infinite epoch instead.)
    """
    ds = grain.MapDataset.range(num_examples).shuffle(seed=seed)
    return ds.batch(batch_size, drop_remainder=True).repeat()


def _derived_seed(seed: int, stream: int) -> int:
    # grain's shuffle uses seed + epoch, so raw consecutive seeds would replay each other's epochs
    # (seed 1, epoch 0 == seed 0, epoch 1): hash (seed, stream) to an unrelated 32-bit seed.
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _check_shard(batch_size: int, name: str, process_index: int, process_count: int) -> None:
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index}: expected in [0, {process_count}).")
    if batch_size % process_count:
        raise ValueError(
            f"{name}={batch_size}: the global batch must be divisible by the process count "
            f"({process_count})."
        )


def _shard_slice(size: int, process_index: int, process_count: int) -> slice:
    """Rows `[i * b, (i + 1) * b)` of a global batch of `size`, `b = size // process_count`."""
    b = size // process_count
    return slice(process_index * b, (process_index + 1) * b)


def _to_iter(ds: grain.MapDataset, worker_count: int) -> grain.IterDataset:
    it = ds.to_iter_dataset(_READ_OPTIONS)
    if worker_count:
        # grain 0.2.18 + jaxlib >= 0.11 read an absl flag in `mp_prefetch` and fail unless flags
        # were parsed (google/grain#1355, fixed after 0.2.18); parsing here keeps their defaults.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return it
