"""Device mesh and logical-axis sharding of the model's variables.

The mesh has axes MESH_AXES = ("data", "fsdp", "tensor"): batch is split over data x fsdp; parameters
are split over fsdp (their "embed" axis, fully-sharded data parallelism) and tensor (heads, mlp,
vocab: tensor parallelism). Rules map the model's logical axis names to mesh axes, in Flax's format:
a sequence of (logical_name, mesh_axis | tuple of mesh axes | None). Each mesh axis is used at most once
per array (a later rule for an axis already used by an earlier rule on the same array is skipped).
A mask gets the same logical names as its kernel and therefore the same sharding.

Activations are constrained the same way (MaxText-style): the model calls `constrain(x, names)` with
logical names "activation_batch", "activation_length", "activation_embed", "activation_heads",
"activation_kv", "activation_mlp", "activation_vocab". It is a no-op unless the caller traces inside
`activation_sharding(mesh, rules)` (the train and eval steps do, wrapped by
`traced_with_activation_sharding`), so the model runs unchanged on one device, under `model.init`,
or in tests that call it directly. In the same context `gathered(kernel, names)` hands a matmul its
kernel all-gathered over the batch's mesh axes (FSDP's gather before use).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

MeshAxes = Union[None, str, tuple[str, ...]]
Rules = Sequence[tuple[str, MeshAxes]]

DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    ("batch", ("data", "fsdp")),  # activations / input tokens
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),  # the fused n_heads * head_dim axis of q/k/v/o kernels
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("norm", None),
    ("layers", None),
    # activations (logical names used by `constrain`): batch over data x fsdp, features over tensor
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
)


def make_mesh(data: int, fsdp: int, tensor: int, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A Mesh of shape (data, fsdp, tensor) over `devices` (default jax.devices()), axes MESH_AXES.

    Raises ValueError when a size is < 1 or data * fsdp * tensor != len(devices).
    """
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"mesh axis {name}={size!r}: must be an integer >= 1")
    devices = list(jax.devices() if devices is None else devices)
    if data * fsdp * tensor != len(devices):
        raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} = {data * fsdp * tensor} devices, "
                         f"but {len(devices)} devices were given: the product must equal the device count")
    return Mesh(np.asarray(devices, dtype=object).reshape(data, fsdp, tensor), MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of int32[batch, seq] token batches: batch split over ("data", "fsdp"), seq replicated.

    The global batch size must be divisible by data * fsdp.
    """
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))


def _as_axes(mesh_axes: MeshAxes) -> tuple[str, ...]:
    if mesh_axes is None:
        return ()
    return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)


def check_rules(mesh: Mesh, rules: Rules) -> None:
    """Raise ValueError if a rule is malformed or names a mesh axis that `mesh` lacks."""
    for rule in rules:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
            raise ValueError(f"sharding rule {rule!r}: must be a pair (logical_name, mesh axes)")
        for axis in _as_axes(rule[1]):
            if axis not in mesh.axis_names:
                raise ValueError(f"sharding rule {rule[0]!r} -> {rule[1]!r}: mesh axis {axis!r} is not in the "
                                 f"mesh; its axes are {tuple(mesh.axis_names)}")


def _mesh_spec(path: str, names: tuple[Any, ...], shape: tuple[int, ...], mesh: Mesh,
               rules: Rules) -> PartitionSpec:
    """Mesh PartitionSpec of one variable with logical axis `names`, checked against its `shape`."""
    known = {rule[0] for rule in rules}
    for name in names:
        if name is not None and name not in known:
            raise ValueError(f"{path}: logical axis {name!r} has no sharding rule; rules cover {sorted(known)}")
    spec = nn.logical_to_mesh_axes(names, rules)
    for dim, (size, mesh_axes) in enumerate(zip(shape, spec)):
        for axis in _as_axes(mesh_axes):
            if size % mesh.shape[axis]:
                raise ValueError(
                    f"{path}: dimension {dim} (logical axis {names[dim]!r}) has size {size}, which mesh axis "
                    f"{axis!r} of size {mesh.shape[axis]} does not divide")
        total = int(np.prod([mesh.shape[a] for a in _as_axes(mesh_axes)]))
        if size % total:
            raise ValueError(f"{path}: dimension {dim} (logical axis {names[dim]!r}) has size {size}, which mesh "
                             f"axes {mesh_axes!r} of total size {total} do not divide")
    return spec


def variable_shardings(model: nn.Module, mesh: Mesh, rules: Rules = DEFAULT_RULES,
                       sample_tokens_shape: tuple[int, int] = (1, 1)) -> tuple[Any, Any]:
    """Abstract variables and their NamedShardings, from `jax.eval_shape` of `model.init` (no allocation).

    Args:
      model: a `Transformer` (any Linen module taking int32 tokens whose variables are logically partitioned).
      mesh: the device mesh; rules: logical -> mesh axis rules (see module doc).
      sample_tokens_shape: (batch, seq) of the dummy tokens used to trace init; does not affect shapes.
    Returns:
      (abstract, shardings): two trees {'params': ..., 'masks': ...} of the same structure, unboxed.
      `abstract` holds jax.ShapeDtypeStruct leaves (carrying their sharding); `shardings` holds
      NamedSharding leaves. Pass `shardings` as in/out shardings of the jitted train step.
    Raises ValueError: a rule names an axis the mesh lacks; a variable's logical axis has no rule; a
    mesh axis does not divide the dimension it shards (the message names the variable path).
    """
    check_rules(mesh, rules)
    tokens = jax.ShapeDtypeStruct(tuple(sample_tokens_shape), jnp.int32)
    boxed = jax.eval_shape(model.init, jax.random.key(0), tokens)
    is_boxed = lambda x: isinstance(x, nn.LogicallyPartitioned)  # noqa: E731

    problems: list[str] = []

    def shard(path: Any, leaf: Any) -> Optional[NamedSharding]:
        value = leaf.value if is_boxed(leaf) else leaf
        names = tuple(leaf.names) if is_boxed(leaf) else (None,) * len(value.shape)
        try:
            return NamedSharding(mesh, _mesh_spec(jax.tree_util.keystr(path), names, value.shape, mesh, rules))
        except ValueError as err:
            problems.append(str(err))
            return None

    shardings = jax.tree_util.tree_map_with_path(shard, boxed, is_leaf=is_boxed)
    if problems:
        raise ValueError(f"cannot shard {len(problems)} variable(s) on mesh {dict(mesh.shape)}:\n  "
                         + "\n  ".join(problems))
    abstract = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
                            nn.unbox(boxed), shardings)
    return abstract, shardings


def init_variables(model: nn.Module, rng: jax.Array, sample_tokens_shape: tuple[int, int],
                   shardings: Optional[Any] = None) -> Any:
    """`model.init` unboxed ({'params', 'masks'}), jitted so each variable is created already sharded
    (by `shardings` from `variable_shardings`; None: default placement)."""
    init = lambda key: nn.unbox(model.init(key, jnp.zeros(sample_tokens_shape, jnp.int32)))  # noqa: E731
    return (jax.jit(init) if shardings is None else jax.jit(init, out_shardings=shardings))(rng)


_ACTIVE: contextvars.ContextVar[Optional[tuple[Mesh, Rules]]] = contextvars.ContextVar(
    "jaxsparse_activation_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Optional[Mesh], rules: Rules = DEFAULT_RULES) -> Iterator[None]:
    """Within this context (at trace time), `constrain` pins activations to `mesh` by `rules`.
    mesh=None: constraints are off (the context is then a no-op)."""
    if mesh is not None:
        check_rules(mesh, rules)
    token = _ACTIVE.set(None if mesh is None else (mesh, tuple(rules)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def traced_with_activation_sharding(fn: Callable, mesh: Optional[Mesh], rules: Rules = DEFAULT_RULES) -> Callable:
    """`fn` (same name and signature) traced inside `activation_sharding(mesh, rules)`: how a jitted
    step shards its activations."""
    @functools.wraps(fn)
    def wrapped(*args):
        with activation_sharding(mesh, rules):
            return fn(*args)
    return wrapped


def active_mesh() -> Optional[Mesh]:
    """The mesh of the enclosing `activation_sharding` context, or None."""
    active = _ACTIVE.get()
    return None if active is None else active[0]


def current_rules() -> Rules:
    """The rules of the enclosing `activation_sharding` context (DEFAULT_RULES outside one)."""
    active = _ACTIVE.get()
    return DEFAULT_RULES if active is None else active[1]


def activation_spec(names: tuple[Optional[str], ...], shape: tuple[int, ...], mesh: Mesh,
                    rules: Rules) -> PartitionSpec:
    """Mesh PartitionSpec for an activation of logical axes `names` and `shape`; a dimension that
    its mesh axes do not divide is left replicated (rather than failing mid-trace)."""
    spec = nn.logical_to_mesh_axes(names, rules)
    out = []
    for size, mesh_axes in zip(shape, spec):
        total = int(np.prod([mesh.shape[a] for a in _as_axes(mesh_axes)]))
        out.append(mesh_axes if size % total == 0 else None)
    return PartitionSpec(*out)


def constrain(x: jax.Array, names: tuple[Optional[str], ...]) -> jax.Array:
    """`jax.lax.with_sharding_constraint` of x by logical axis `names` (one per dimension), under
    the active `activation_sharding` context; x unchanged outside one."""
    active = _ACTIVE.get()
    if active is None:
        return x
    if len(names) != x.ndim:
        raise ValueError(f"constrain: {len(names)} logical names {names} for an array of rank {x.ndim}")
    mesh, rules = active
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, activation_spec(names, x.shape, mesh, rules)))


def gathered(kernel: jax.Array, names: tuple[Optional[str], ...]) -> jax.Array:
    """The kernel (logical axes `names`) as a matmul should read it under the active
    `activation_sharding` context: its stored sharding without the mesh axes that split the batch
    (those of "activation_batch": data and fsdp). This is FSDP's all-gather just before use, one
    layer at a time. Whatever made `kernel` (a cast, the mask's `where`) runs on the stored shards
    first, so only the compute-dtype product travels, not the mask too. The cotangent takes the
    gathered sharding, so each layer's partial gradients are all-reduced (in the compute dtype) and
    the parameter update keeps its own shard.

    Without it XLA picks, from 8 devices on, windowed einsums that loop over the weight shards and
    hold several partial [B, S, F] outputs (the LM head's float32 logits among them): the 58m at a
    global batch of 32 held 0.71x the temporaries on 8 devices that it held on 4 (TPU v4, compiled);
    with it, 0.49x.
    Letting the cotangent keep the stored sharding instead (a reduce-scatter) brings those windowed
    einsums back in the backward pass (0.59x). Tensor-parallel axes stay sharded. Rules without an
    "activation_batch" rule (or whose batch axes shard no kernel) gather nothing.
    Outside the context: kernel unchanged."""
    active = _ACTIVE.get()
    if active is None:
        return kernel
    mesh, rules = active
    batch_axes = set(_as_axes(dict(rules).get("activation_batch")))
    stored = nn.logical_to_mesh_axes(names, rules)
    spec = [tuple(a for a in _as_axes(axes) if a not in batch_axes) or None for axes in stored]
    kernel = jax.lax.with_sharding_constraint(kernel, NamedSharding(mesh, stored))  # computed (masked) on shards
    return jax.lax.with_sharding_constraint(kernel, NamedSharding(mesh, PartitionSpec(*spec)))
