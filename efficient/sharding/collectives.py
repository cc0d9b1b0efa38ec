"""What a compiled program sends: its collectives read from the HLO text, and a sync-time model.

`collectives(hlo)` lists every collective instruction of a compiled module (`jitted.lower(...)
.compile().as_text()`) with its computation, payload bytes and group size; `bytes_sent` turns one
into the bytes each participant sends with the usual algorithms (ring all-reduce: 2 (n - 1) / n
of the payload; all-gather, reduce-scatter: (n - 1) / n; collective-permute: the payload once).
`sync_time` is the alpha-beta model of one synchronisation of M bytes over N replicas, the form of
NoLoCo's §3 argument (arXiv:2506.10911): an all-reduce needs O(log N) latency steps (tree) or
2 (N - 1) (ring), a pairwise exchange one, whatever N.
"""

from __future__ import annotations

import dataclasses
import math
import re

from efficient.checks import check_choice

__all__ = ["Collective", "bytes_sent", "collectives", "sync_bytes", "sync_time"]

_DTYPE_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2, "f16": 2,
    "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_OPS = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
_SYNC_KINDS = ("ring", "tree", "pair")
# `%name = TYPE op(` with op possibly an async `-start`; TYPE an array or a tuple of arrays.
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<type>.+?)\s+(?P<op>" + "|".join(_OPS) + r")(?:-start)?\("
)
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?(?P<name>[\w.\-]+)\s.*\{\s*$")
_GROUPS_LIST = re.compile(r"replica_groups=\{(\{[\d,]*\}(?:,\{[\d,]*\})*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(\d+),(\d+)\]")
_PAIRS = re.compile(r"source_target_pairs=\{((?:\{\d+,\d+\},?)*)\}")


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective instruction.

    Attributes:
      op: "all-reduce", "all-gather", "reduce-scatter", "collective-permute" or "all-to-all".
      computation: the HLO computation it is in ("main..." for the entry; a conditional's branch
        runs only when taken).
      payload: bytes of its result (for reduce-scatter: of its operand, the larger side).
      group_size: participants per group (2 for a permute, whose pairs are its groups).
      pairs: for a permute, the number of source -> target pairs.
    """

    op: str
    computation: str
    payload: int
    group_size: int
    pairs: int = 0

    def __post_init__(self):
        check_choice("Collective", "op", self.op, _OPS)  # "all_reduce" is not a ring's bytes


def _type_bytes(type_text: str) -> int:
    total = 0
    for dtype, dims in _ARRAY.findall(type_text):
        total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _group_size(line: str) -> int:
    if m := _GROUPS_IOTA.search(line):
        return int(m.group(2))
    if m := _GROUPS_LIST.search(line):
        groups = re.findall(r"\{([\d,]*)\}", m.group(1))
        return max(len([x for x in g.split(",") if x]) for g in groups)
    return 0  # empty replica_groups: all participants (the caller knows how many)


def collectives(hlo: str) -> list[Collective]:
    """Every collective instruction of a compiled HLO module's text."""
    found, computation = [], ""
    for line in hlo.splitlines():
        if (m := _COMPUTATION.match(line)) and "=" not in line.split("{")[0]:
            computation = m.group("name")
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        op, payload = m.group("op"), _type_bytes(m.group("type"))
        if op == "reduce-scatter":  # the operand is the full buffer: size of the output x n
            payload *= max(_group_size(line), 1)
        if op == "collective-permute":
            pairs = _PAIRS.search(line)
            count = len(re.findall(r"\{\d+,\d+\}", pairs.group(1))) if pairs else 0
            found.append(Collective(op, computation, payload, 2, count))
        else:
            found.append(Collective(op, computation, payload, _group_size(line)))
    return found


def bytes_sent(c: Collective, participants: int | None = None) -> float:
    """Bytes one participant sends for `c` (ring algorithms; `participants` stands in for an
    empty `replica_groups`, which means all of them)."""
    n = c.group_size or participants or 1
    if c.op == "collective-permute":
        return float(c.payload)
    if c.op == "all-reduce":
        return 2.0 * (n - 1) / n * c.payload
    return (n - 1) / n * c.payload  # all-gather, reduce-scatter, all-to-all


def sync_bytes(found: list[Collective], participants: int | None = None) -> float:
    """Bytes one participant sends per execution of the program's most expensive path: the
    collectives of each computation summed, then the largest computation (a conditional's
    branches are alternatives, e.g. NoLoCo's pairings, of which one runs per sync)."""
    per: dict[str, float] = {}
    for c in found:
        per[c.computation] = per.get(c.computation, 0.0) + bytes_sent(c, participants)
    return max(per.values(), default=0.0)


def sync_time(
    kind: str, replicas: int, message_bytes: float, *, latency_s: float, bandwidth: float
) -> float:
    """Seconds for one sync of `message_bytes` per replica among `replicas` (alpha-beta model).

    Args:
      kind: "ring" all-reduce (2 (N - 1) steps of M / N bytes), "tree" all-reduce (reduce then
        broadcast down a binary tree: 2 ceil(log2 N) steps of M bytes), or "pair" (NoLoCo with
        groups of 2: one exchange of M bytes with the peer).
      replicas: N.
      message_bytes: M, the model's bytes.
      latency_s: alpha, seconds per message.
      bandwidth: beta, bytes per second per link.
    """
    check_choice("sync_time", "kind", kind, _SYNC_KINDS)
    if replicas < 1:
        raise ValueError(f"replicas={replicas}: must be >= 1.")
    if replicas == 1:
        return 0.0
    if kind == "ring":
        steps = 2 * (replicas - 1)
        return steps * (latency_s + message_bytes / replicas / bandwidth)
    if kind == "tree":
        return 2 * math.ceil(math.log2(replicas)) * (latency_s + message_bytes / bandwidth)
    return latency_s + message_bytes / bandwidth  # "pair"
