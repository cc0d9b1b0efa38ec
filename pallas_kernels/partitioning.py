"""Partitioning rules for the kernels: under a sharded jit a `pallas_call` runs on each shard.

XLA cannot see into a `pallas_call`, so without a rule it gathers every operand onto every device
and runs the whole kernel there (the result replicated, the work and memory multiplied by the
device count). `partitioned` gives a kernel call a rule, through
`jax.experimental.custom_partitioning`: the caller names each array's dimensions by factors, as
in an einsum, and says which factors may be split over mesh axes — the batch (`...`, or a named
factor) and independent channels. Each device then runs the kernel on its own block; a result
that lacks a split factor is a sum over it (the coefficient gradients sum over the batch) and is
all-reduced (`psum`) over that factor's mesh axes. Every other factor (a transform's length, a
coefficient's index) is kept whole on each device.

The shardings come from the first operand that has each factor (its spec for that dimension,
dropping mesh axes that do not divide it evenly); every other operand and result is resharded to
match. `jax.vmap` folds the mapped axis into a leading batch factor where that is exact (no result
sums over the batch), and otherwise maps the unpartitioned kernel call (Pallas's own batching).

Inside a `jax.shard_map` that checks varying axes (its default), every operand is first made to
vary over the same manual axes (`jax.lax.pcast`), each kernel declares its results to vary as its
operands (`manual_type`), and `typed_like` sums a custom VJP's cotangent over the axes its primal
does not vary over (a coefficient's gradient from each device's rows).

Under a mesh with Explicit axes (`jax.set_mesh` of a mesh made with `AxisType.Explicit`) the
shardings are part of the operands' types, and a `pallas_call` may only run where every mesh axis
is Manual: there `partitioned` plans the same shardings from the operands' types and runs the call
in a `jax.shard_map` over the mesh's non-Manual axes instead (`in_explicit_mesh`).
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["Rule", "in_explicit_mesh", "manual_type", "partitioned", "typed_like"]

_BATCH = "..."


@dataclasses.dataclass(frozen=True)
class Rule:
    """Dimension factors of a kernel call's array operands and results.

    Attributes:
        inputs: One string per operand, its dimensions' factor names separated by spaces
            ("... d", "i d"); `...` (leading only) stands for any number of batch dimensions.
        outputs: One string per result, as `inputs`.
        split: Named factors that may be split over mesh axes (`...` always may).
        batch: The factor that `jax.vmap` may fold a mapped axis into: `...`, or a named factor
            that leads every array that has it; None: vmap maps the unpartitioned call.
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    split: tuple[str, ...] = ()
    batch: str | None = _BATCH

    def __post_init__(self):
        for dims in self.inputs + self.outputs:
            names = dims.split()
            if _BATCH in names[1:]:
                raise ValueError(f"Rule dims {dims!r}: '...' may only lead")
        known = {n for dims in self.inputs for n in dims.split()}
        for dims in self.outputs:
            if missing := set(dims.split()) - known:
                raise ValueError(f"Rule output {dims!r}: factors {sorted(missing)} in no input")
        if unknown := set(self.split) - known:
            raise ValueError(f"Rule split {self.split}: factors {sorted(unknown)} in no input")
        if self.batch is not None and self.batch not in known:
            raise ValueError(f"Rule batch {self.batch!r}: not a factor of any input")

    @property
    def sharding_rule(self) -> str:
        return f"{', '.join(self.inputs)} -> {', '.join(self.outputs)}"

    @property
    def replicated(self) -> tuple[str, ...]:
        """Factors kept whole on every device, in order of first appearance (Shardy wants them
        in the rule's factor order)."""
        names = [n for dims in self.inputs for n in dims.split()]
        keep = set(self.split) | {_BATCH}
        return tuple(n for n in dict.fromkeys(names) if n not in keep)


def _expand(dims: str, ndim: int) -> list[str]:
    """Factor names per dimension, `...` expanded to "...0", "...1", ... (aligned from the left)."""
    names = dims.split()
    if names and names[0] == _BATCH:
        count = ndim - (len(names) - 1)
        if count < 0:
            raise ValueError(f"an array of rank {ndim} cannot have dims {dims!r}")
        return [f"{_BATCH}{i}" for i in range(count)] + names[1:]
    if len(names) != ndim:
        raise ValueError(f"an array of rank {ndim} cannot have dims {dims!r}")
    return names


def _is_split(rule: Rule, factor: str) -> bool:
    return factor.startswith(_BATCH) or factor in rule.split


def _spec_axes(spec, dim: int) -> tuple[str, ...]:
    entry = spec[dim] if dim < len(spec) else None
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _factor_axes(rule: Rule, mesh, shapes) -> dict[str, tuple[str, ...]]:
    """factor -> the mesh axes it is split over, from the first operand that has it."""
    axes: dict[str, tuple[str, ...]] = {}
    used: set[str] = set()
    for dims, shape in zip(rule.inputs, shapes, strict=True):
        sharding = shape.sharding
        spec = sharding.spec if isinstance(sharding, NamedSharding) else P()
        factors = _expand(dims, len(shape.shape))
        for dim, (factor, size) in enumerate(zip(factors, shape.shape, strict=True)):
            if factor in axes:
                continue
            kept: list[str] = []
            if _is_split(rule, factor):
                for name in _spec_axes(spec, dim):
                    count = math.prod(mesh.shape[a] for a in kept) * mesh.shape[name]
                    if name in used or size % count:
                        break  # an axis used twice, or an uneven split: stop splitting here
                    kept.append(name)
            axes[factor] = tuple(kept)
            used.update(kept)
    return axes


def _sharding(mesh, axes, dims: str, ndim: int) -> NamedSharding:
    entries = []
    for factor in _expand(dims, ndim):
        names = axes.get(factor, ())
        entries.append(None if not names else names[0] if len(names) == 1 else names)
    return NamedSharding(mesh, P(*entries))


def _plan(rule: Rule, mesh, arg_shapes, result_shapes):
    """(operand shardings, result shardings, mesh axes each result is summed over)."""
    axes = _factor_axes(rule, mesh, arg_shapes)
    args = tuple(
        _sharding(mesh, axes, dims, len(s.shape))
        for dims, s in zip(rule.inputs, arg_shapes, strict=True)
    )
    results, reduced = [], []
    for dims, s in zip(rule.outputs, result_shapes, strict=True):
        factors = set(_expand(dims, len(s.shape)))
        results.append(_sharding(mesh, axes, dims, len(s.shape)))
        reduced.append(tuple(a for f, names in axes.items() if f not in factors for a in names))
    return args, tuple(results), tuple(reduced)


def _as_tuple(tree) -> tuple:
    return tuple(tree) if isinstance(tree, (tuple, list)) else (tree,)


def partitioned(fn: Callable, rule: Rule) -> Callable:
    """`fn` (positional array operands, static arguments bound) with a partitioning rule.

    Args:
        fn: A kernel call; it must compute each shard's results from that shard's operands, and a
            result without a split factor as the sum over that factor (all-reduced here).
        rule: The operands' and results' factors.

    Returns:
        A function of the same operands with the same results (a tuple where `rule.outputs` has
        several), that a sharded jit runs per shard.
    """
    single = len(rule.outputs) == 1

    def shard_results(reduced, *args):
        outs = _as_tuple(fn(*args))
        return tuple(
            jax.lax.psum(out, names) if names else out
            for out, names in zip(outs, reduced, strict=True)
        )

    @custom_partitioning
    def call(*args):
        outs = _as_tuple(fn(*args))
        return outs[0] if single else outs

    def partition(mesh, arg_shapes, result_shape):
        results = _as_tuple(result_shape)
        arg_shardings, result_shardings, reduced = _plan(rule, mesh, arg_shapes, results)

        def lower(*args):
            outs = shard_results(reduced, *args)
            return outs[0] if single else outs

        out = result_shardings[0] if single else result_shardings
        return mesh, lower, out, arg_shardings

    def infer(mesh, arg_shapes, result_shape):  # the GSPMD partitioner's question
        results = _as_tuple(result_shape)
        shardings = _plan(rule, mesh, arg_shapes, results)[1]
        return shardings[0] if single else shardings

    call.def_partition(
        partition=partition,
        infer_sharding_from_operands=infer,
        sharding_rule=rule.sharding_rule,
        need_replication_factors=rule.replicated,
    )

    @custom_vmap
    def mapped(*args):
        return call(*args)

    @mapped.def_vmap
    def _vmap(axis_size, in_batched, *args):
        if axis_size == 0:  # no examples: nothing to launch (a kernel grid over no rows fails)
            outs = _empty_map(fn, in_batched, args)
        elif _foldable(rule, in_batched):
            outs = _fold(mapped, rule, axis_size, in_batched, args)
        else:  # Pallas's own batching of the unpartitioned call
            outs = jax.vmap(fn, in_axes=tuple(0 if b else None for b in in_batched))(*args)
        return outs, jax.tree.map(lambda _: True, outs)

    @functools.wraps(fn)
    def wrapper(*args):
        if len(args) != len(rule.inputs):
            raise TypeError(f"expected {len(rule.inputs)} operands {rule.inputs}, got {len(args)}")
        args = _vary_alike(args)
        if in_explicit_mesh():
            outs = _shard_mapped(fn, shard_results, rule, args)
            return outs[0] if single else outs
        return mapped(*args)

    return wrapper


def _empty_map(fn: Callable, in_batched: Sequence[bool], args):
    """`jax.vmap(fn)` over a mapped axis of size 0: zeros of each result's per-example shape,
    after a leading axis of 0 (found by tracing `fn` on one example's shapes, not running it)."""
    example = [
        jax.ShapeDtypeStruct(a.shape[1:], a.dtype) if b else jax.ShapeDtypeStruct(a.shape, a.dtype)
        for a, b in zip(args, in_batched, strict=True)
    ]
    shapes = jax.eval_shape(fn, *example)
    return jax.tree.map(lambda s: jnp.zeros((0, *s.shape), s.dtype), shapes)


def in_explicit_mesh() -> bool:
    """Whether the current mesh (`jax.set_mesh`) has Explicit axes: shardings are then part of
    the arrays' types, and a jnp reshape that would move a sharded axis needs its result's
    sharding spelled out."""
    return AxisType.Explicit in jax.sharding.get_abstract_mesh().axis_types


def manual_type(x: jax.Array) -> dict:
    """Keyword arguments for a kernel's `jax.ShapeDtypeStruct` results: vary over the manual axes
    that x varies over. Inside a `jax.shard_map` that checks varying axes a `pallas_call` must
    declare this; elsewhere there are none."""
    return {"manual_axis_type": jax.typeof(x).mat}


def typed_like(values, like):
    """A custom VJP's cotangents `values` given the types of their primals `like` (pytrees of the
    same structure, None leaves allowed).

    Inside a `jax.shard_map`, a cotangent that varies over manual axes its primal does not (a
    replicated coefficient's gradient from each device's rows) is summed over them (`psum`):
    the primal was used on every device. Under an Explicit mesh each cotangent is resharded to
    its primal's sharding.
    """
    explicit = in_explicit_mesh()

    def one(v, p):
        if extra := _varying(v) - _varying(p):
            v = jax.lax.psum(v, tuple(sorted(extra)))
        if explicit:
            v = jax.sharding.reshard(v, jax.typeof(p).sharding.spec)
        return v

    return jax.tree.map(one, values, like)


def _varying(x) -> frozenset:
    """The manual axes (of an enclosing `jax.shard_map`) over which x's value varies."""
    return jax.typeof(x).mat.varying


def _vary_alike(args) -> list:
    """The operands made to vary over the union of their manual axes (a `pallas_call` declares
    its results' variation from one operand, `manual_type`)."""
    union = frozenset().union(*(_varying(a) for a in args))
    return [
        jax.lax.pcast(a, tuple(sorted(missing)), to="varying")
        if (missing := union - _varying(a))
        else a
        for a in args
    ]


def _shard_mapped(fn: Callable, shard_results: Callable, rule: Rule, args) -> tuple:
    """The kernel call in a `jax.shard_map` over the current mesh's Explicit and Auto axes, with
    the operands' shardings read from their types and planned as `_plan` plans them for
    `custom_partitioning`."""
    mesh = jax.sharding.get_abstract_mesh()
    free = {
        n for n, t in zip(mesh.axis_names, mesh.axis_types, strict=True) if t != AxisType.Manual
    }
    types = [jax.typeof(a) for a in args]
    plain = [jax.ShapeDtypeStruct(t.shape, t.dtype) for t in types]
    # Only the results' ranks matter here; traced unsharded, which a pallas_call accepts.
    results = _as_tuple(jax.eval_shape(fn, *plain))
    arg_shardings, result_shardings, reduced = _plan(rule, mesh, types, results)
    in_specs = tuple(s.spec for s in arg_shardings)
    args = [jax.sharding.reshard(a, spec) for a, spec in zip(args, in_specs, strict=True)]
    return jax.shard_map(
        functools.partial(shard_results, reduced),
        in_specs=in_specs,
        out_specs=tuple(s.spec for s in result_shardings),
        axis_names=free,
        check_vma=False,  # a pallas_call's results carry no varying-axes types
    )(*args)


def _foldable(rule: Rule, in_batched: Sequence[bool]) -> bool:
    """A mapped axis can join the batch factor: only batch operands are mapped, every result has
    the factor, and it leads."""
    if rule.batch is None:
        return False
    for dims, batched in zip(rule.inputs, in_batched, strict=True):
        names = dims.split()
        if batched and (not names or names[0] != rule.batch):
            return False
    return all(dims.split()[:1] == [rule.batch] for dims in rule.outputs)


def _fold(call, rule: Rule, axis_size: int, in_batched, args):
    """Run `call` with the mapped axis (leading) merged into each batch operand's batch factor."""
    batch_ops = [dims.split()[:1] == [rule.batch] for dims in rule.inputs]
    merged = []
    for arg, is_batch, batched in zip(args, batch_ops, in_batched, strict=True):
        if is_batch and not batched:
            arg = jax.numpy.broadcast_to(arg, (axis_size, *arg.shape))
        if is_batch and rule.batch != _BATCH:  # a named factor: [V, B, ...] -> [V B, ...]
            arg = arg.reshape(axis_size * arg.shape[1], *arg.shape[2:])
        merged.append(arg)
    outs = call(*merged)
    if rule.batch == _BATCH:
        return outs
    return jax.tree.map(lambda out: out.reshape(axis_size, -1, *out.shape[1:]), outs)
