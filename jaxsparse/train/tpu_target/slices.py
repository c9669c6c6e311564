"""TPU chip facts (one table) and slice names -> topologies for compiling without a TPU.

Slice names as Cloud TPU spells them: v4-N and v5p-N count TensorCores (two per chip, run as one
"megacore" JAX device per chip), v5e-N (also v5litepod-N) and v6e-N count chips (one device each).
A multi-slice target is `KxNAME`, e.g. 2xv5e-256. Facts are per chip, from the public Cloud TPU
documentation (bf16 dense peak; HBM capacity); check them before relying on them.
"""
from __future__ import annotations

import dataclasses
import re

from jaxsparse.errors import ConfigError

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation: HBM bytes and bf16 peak FLOP/s per JAX device (= per chip), topology
    name prefix for `get_topology_desc`, torus rank, whether slice names count cores (2 per chip)."""

    hbm_bytes: int
    peak_flops: float
    topology_prefix: str
    torus_dims: int
    megacore: bool
    max_chips: int


# The table: generation -> facts.
CHIPS: dict[str, Chip] = {
    "v4": Chip(32 * GIB, 275e12, "v4", 3, True, 2048),
    "v5p": Chip(95 * GIB, 459e12, "v5p", 3, True, 4480),
    "v5e": Chip(16 * GIB, 197e12, "v5e", 2, False, 256),
    "v6e": Chip(32 * GIB, 918e12, "v6e", 2, False, 256),
}
_ALIASES = {"v5litepod": "v5e"}
EXAMPLES = ("v4-8", "v4-16", "v4-32", "v4-64", "v4-128", "v4-256", "v4-512", "v4-1024", "v4-2048",
            "v4-4096", "v5p-8", "v5p-128", "v5e-1", "v5e-4", "v5e-8", "v5e-16", "v5e-64", "v5e-256",
            "v5litepod-256", "v6e-1", "v6e-8", "v6e-256", "2xv5e-256")


@dataclasses.dataclass(frozen=True)
class Slice:
    """A target: `name` as typed, its generation's `chip`, `chips` per slice, `num_slices`, and the
    `get_topology_desc` arguments (`topology_name`, `chips_per_host_bounds` or None)."""

    name: str
    generation: str
    chip: Chip
    chips: int
    num_slices: int
    topology_name: str
    chips_per_host_bounds: tuple[int, ...] | None

    @property
    def devices(self) -> int:
        """JAX devices in the whole target (one per chip)."""
        return self.chips * self.num_slices

    @property
    def chips_per_host(self) -> int:
        """Chips on one host (TPU VM) of the slice: its host bounds, 2x2 where libtpu picks them."""
        x, y, z = self.chips_per_host_bounds or (2, 2, 1)
        return x * y * z

    @property
    def hosts(self) -> int:
        """Hosts in one slice, one JAX process each (a Kubernetes launch's workers per slice)."""
        return self.chips // self.chips_per_host


def torus_shape(chips: int, dims: int) -> tuple[int, ...]:
    """The usual torus of `chips` (a power of two): grow the smallest dimension, last one first
    (v4: 4 -> 2x2x1, 64 -> 4x4x4, 128 -> 4x4x8; v5e: 8 -> 2x4, 256 -> 16x16)."""
    shape = [2, 2, 1] if dims == 3 else [1, 1]
    while shape[0] * shape[1] * (shape[2] if dims == 3 else 1) < chips:
        smallest = min(shape)
        i = max(j for j, s in enumerate(shape) if s == smallest)
        shape[i] *= 2
    return tuple(shape)


def _unknown(name: str, why: str) -> ConfigError:
    return ConfigError(f"--compile_for={name!r}: {why}. Known slices: v4-N and v5p-N (N TensorCores, "
                       f"8 <= N, a power of two), v5e-N / v5litepod-N and v6e-N (N chips, 1 <= N <= 256, "
                       f"a power of two), and KxSLICE for K slices; e.g. {', '.join(EXAMPLES)}")


def parse_slice(name: str) -> Slice:
    """The Slice of a name like v4-128, v5litepod-16 or 2xv5e-256; ConfigError listing known names."""
    m = re.fullmatch(r"(?:(\d+)x)?([a-z0-9]+)-(\d+)", name.strip().lower()) if isinstance(name, str) else None
    if m is None:
        raise _unknown(name, "not a slice name")
    num_slices = int(m.group(1) or 1)
    generation = _ALIASES.get(m.group(2), m.group(2))
    count = int(m.group(3))
    if generation not in CHIPS:
        raise _unknown(name, f"unknown TPU generation {m.group(2)!r}")
    chip = CHIPS[generation]
    chips = count // 2 if chip.megacore else count
    smallest = 4 if chip.megacore else 1
    if num_slices < 1 or count & (count - 1) or not smallest <= chips <= chip.max_chips:
        raise _unknown(name, f"{count} is not a {generation} slice size")
    shape = torus_shape(chips, chip.torus_dims)
    topology = f"{chip.topology_prefix}:{'x'.join(map(str, shape))}"
    bounds = (2, 2, 1) if chip.megacore else ((*shape, 1) if chips < 4 else None)
    return Slice(name, generation, chip, chips, num_slices, topology, bounds)
