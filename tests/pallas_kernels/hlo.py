"""Reading compiled HLO in the kernel tests."""

import re

import numpy as np


def largest_all_gather(compiled) -> int:
    """Elements of the largest all-gather result in a compiled executable's HLO (0: none)."""
    sizes = [0]
    for dims in re.findall(r"= \w+\[([\d,]*)\]\{[^}]*\} all-gather\(", compiled.as_text()):
        sizes.append(int(np.prod([int(d) for d in dims.split(",") if d])))
    return max(sizes)
