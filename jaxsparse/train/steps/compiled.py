"""Compile a run's train and eval steps for a mesh and measure them (memory, FLOPs, collectives);
pick `train.grad_accum="auto"` by compiling, keeping the chosen steps' executables.

Used by the trainer (`for_run`: the steps its session calls, compiled once) and by
`jaxsparse.train.tpu_target.compile_for` (`--compile_for=SLICE`). `run` arguments are resolved runs
(`jaxsparse.train.resolve.run.Run`: model, tx, batch_size, seq_len, grad_accum, mesh); bytes are
per device.
"""
from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from jaxsparse import models
from jaxsparse.errors import ConfigError
from jaxsparse.train.steps.step import jit_steps

HEADROOM = 0.9  # a step fits when its bytes per device are at most this fraction of HBM
_COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")


def _memory(compiled: Any) -> dict[str, int]:
    m = compiled.memory_analysis()
    args, outs = int(m.argument_size_in_bytes), int(m.output_size_in_bytes)
    temps, alias = int(m.temp_size_in_bytes), int(m.alias_size_in_bytes)
    return {"arguments": args, "outputs": outs, "aliased": alias, "temporaries": temps,
            "total": args + outs - alias + temps}


def collective_counts(hlo_text: str) -> dict[str, int]:
    """Number of each collective instruction in compiled HLO text (async -start forms included)."""
    patterns = {name: rf"\s{name}(?:-start)?\(" for name in _COLLECTIVES}
    patterns["reduce-scatter"] = r"\s(?:all-)?reduce-scatter(?:-start)?\("  # TPU spells it all-reduce-scatter
    return {name: len(re.findall(pattern, hlo_text)) for name, pattern in patterns.items()}


def _oom_bytes(message: str) -> int | None:
    """Bytes of temporaries named in a RESOURCE_EXHAUSTED message ('HLO temporaries (94.06G)')."""
    m = re.search(r"temporaries \(([\d.]+)([KMGT])\)", message)
    if not m:
        return None
    return int(float(m.group(1)) * 1024 ** ("KMGT".index(m.group(2)) + 1))


def abstract_batch(batch_size: int, seq_len: int, sharding: NamedSharding) -> dict:
    """ShapeDtypeStructs of one global batch {inputs, targets: int32[B, L], weights: f32[B, L]}."""
    tok = jax.ShapeDtypeStruct((batch_size, seq_len), jnp.int32, sharding=sharding)
    return {"inputs": tok, "targets": tok,
            "weights": jax.ShapeDtypeStruct((batch_size, seq_len), jnp.float32, sharding=sharding)}


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
    """A run's steps compiled for one mesh with `grad_accum` micro-batches: the executables the
    trainer calls (`train(state, batch) -> (state, metrics)`, state donated; `eval(state, batch) ->
    {loss_sum, weights}`; None when the compiler refused it for lack of memory, or not compiled),
    the abstract TrainState and shardings they take, their measurements {"train", "eval"}: each
    {bytes, flops, collectives} or {error, temporaries}, and the search's [{grad_accum, fits,
    compile_s}]."""

    grad_accum: int
    train: Any
    eval: Any
    abstract: Any
    shardings: Any
    measured: dict[str, Any]
    tried: list[dict[str, Any]]


def _compile(fn: Any, abstract: Any, batch: dict) -> tuple[Any, dict[str, Any]]:
    """(executable or None, measurements) of the jitted `fn` lowered for (abstract, batch)."""
    try:
        compiled = fn.lower(abstract, batch).compile()
    except Exception as err:  # noqa: BLE001 - the TPU compiler's out-of-memory error
        if "RESOURCE_EXHAUSTED" not in str(err):
            raise
        return None, {"error": str(err).splitlines()[0][:300], "temporaries": _oom_bytes(str(err))}
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return compiled, {"bytes": _memory(compiled), "flops": float(cost.get("flops", 0.0)),
                      "collectives": collective_counts(compiled.as_text())}


def _measured(programs: tuple[Any, Any], grad_accum: int, state: tuple[Any, Any], batch: dict,
              with_eval: bool) -> CompiledSteps:
    """CompiledSteps of the jitted (train, eval) `programs` lowered for (`state`'s abstract TrainState,
    `batch`) and compiled once each (eval only with `with_eval`); `tried` left empty."""
    (train, evaluate), (abstract, shardings) = programs, state
    train_exe, measured = _compile(train, abstract, batch)
    out = {"train": measured}
    eval_exe = None
    if with_eval:
        eval_exe, out["eval"] = _compile(evaluate, abstract, batch)
    return CompiledSteps(grad_accum, train_exe, eval_exe, abstract, shardings, out, [])


def compile_steps(run: Any, mesh: Any, grad_accum: int, state: tuple[Any, Any],
                  with_eval: bool = True) -> CompiledSteps:
    """Lower and compile `run`'s train step (its pruning-event branch included) and, with
    `with_eval`, its eval step for `mesh` with `grad_accum` micro-batches, each once.
    `state`: (abstract TrainState, its shardings) on `mesh`, `jaxsparse.train.steps.state.abstract_state`."""
    batch = abstract_batch(run.batch_size, run.seq_len, models.batch_sharding(mesh))
    programs = jit_steps(run.model, run.tx, grad_accum, mesh, state[1])
    return _measured(programs, grad_accum, state, batch, with_eval)


def _fits(result: dict[str, Any], hbm: int) -> bool:
    return all("bytes" in r and r["bytes"]["total"] <= HEADROOM * hbm for r in result.values())


def accum_candidates(batch_size: int, shards: int) -> list[int]:
    """Micro-batch counts A, fewest first, with batch_size / A a multiple of the data shards."""
    return [a for a in range(1, batch_size + 1) if batch_size % a == 0 and (batch_size // a) % shards == 0]


def _say(progress: Callable[[str], None] | None, message: str) -> None:
    if progress is not None:
        progress(message)


def search(run: Any, mesh: Any, hbm: int | None, tries: list[int], with_eval: bool = True,
           progress: Callable[[str], None] | None = None, *, state: tuple[Any, Any]
           ) -> CompiledSteps:
    """Compile with each train.grad_accum in `tries` in turn; stop at the first whose steps fit `hbm`
    bytes per device (None: no limit known, the first fits). Returns the last compiled (the first
    that fits, else the last tried), with `tried` = [{grad_accum, fits, compile_s}]. `state`: the
    (abstract TrainState, shardings) on `mesh`, the same for every accum
    (`jaxsparse.train.steps.state.abstract_state`)."""
    tried: list[dict[str, Any]] = []
    batch = abstract_batch(run.batch_size, run.seq_len, models.batch_sharding(mesh))  # as in `compile_steps`
    for accum in tries:
        _say(progress, f"compiling with grad_accum={accum} ...")
        start = time.time()
        programs = jit_steps(run.model, run.tx, accum, mesh, state[1])
        steps = _measured(programs, accum, state, batch, with_eval)
        fits = hbm is None or _fits(steps.measured, hbm)
        tried.append({"grad_accum": accum, "fits": fits, "compile_s": round(time.time() - start, 1)})
        _say(progress, f"grad_accum={accum}: {'fits' if fits else 'does not fit'} ({tried[-1]['compile_s']} s)")
        if fits:
            break
    return dataclasses.replace(steps, tried=tried)


def for_run(run: Any, limit: int | None, state: tuple[Any, Any]) -> CompiledSteps:
    """The steps the trainer runs, compiled once for `run`'s mesh: with `run.grad_accum`, or for
    "auto" (None) the fewest micro-batches whose steps fit `limit` bytes per device (the local
    devices' memory; None on the CPU: 1 micro-batch, compiled once). `state`: `search`'s. Raises
    ConfigError when the compiler refuses the chosen steps for lack of memory."""
    if run.grad_accum is not None:
        tries = [run.grad_accum]
    else:
        tries = accum_candidates(run.batch_size, run.mesh.shape["data"] * run.mesh.shape["fsdp"]) or [1]
    say = (lambda m: print(m, flush=True)) if run.grad_accum is None and limit else None
    steps = search(run, run.mesh, limit if len(tries) > 1 else None, tries, progress=say,
                   state=state)
    for name, exe in (("train", steps.train), ("eval", steps.eval)):
        if exe is None:  # the compiler's out-of-memory refusal: bad input, before any compute
            raise ConfigError(f"the {name} step does not fit these devices' memory "
                              f"({steps.measured[name]['error']}); raise train.grad_accum (or use 'auto'), "
                              "lower train.batch_size, or set model.remat=True")
    return steps
