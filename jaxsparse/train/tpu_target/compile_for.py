"""`--compile_for=SLICE`: compile the real train and eval steps for a TPU slice, on any machine.

With libtpu installed (`pip install -e ".[tpu]"`), `jax.experimental.topologies` describes a slice's
devices without a TPU; the steps are lowered with the run's shardings and compiled by the TPU
compiler, whose memory analysis says what one device holds. Nothing is allocated or written.

    report = compile_for(config, "v4-128")   # dict (the JSON printed by the trainer)
    report["fits"]                           # total <= HEADROOM x HBM, for the train and eval steps

Units: bytes are per device; `flops_per_step` counts FLOPs of one optimizer step (model: 6N +
attention per token x tokens, jaxsparse.models.flops_per_token, in total and per device; compiled:
what XLA's cost analysis counts on one device, and that x devices; it counts the body of a scanned
layer loop once, so with model.scan_layers it is far below the executed FLOPs). `estimated_step_s`
is the model's FLOPs per device, x 4/3 with remat (the forward is recomputed), / the chip's bf16
peak: a lower bound at 100% utilisation.
"""
from __future__ import annotations

from typing import Any, Callable

import ml_collections

from jaxsparse import models, noise
from jaxsparse.errors import ConfigError
from jaxsparse.train.steps.compiled import (HEADROOM, _fits, _say, accum_candidates,
                                            search)
from jaxsparse.train.resolve.run import Run, plan_for_mesh, prepare, with_grad_accum
from jaxsparse.train.resolve.parts import build_mesh
from jaxsparse.train.steps.state import abstract_state
from jaxsparse.train.tpu_target.slices import GIB, Slice, parse_slice


def slice_devices(target: Slice) -> list:
    """The slice's (abstract) TPU devices, slice-major for multi-slice targets."""
    from jax.experimental import topologies
    kwargs: dict[str, Any] = {}
    if target.chip.megacore:
        kwargs["chip_config_name"] = "megacore"
    if target.chips_per_host_bounds is not None:
        kwargs["chips_per_host_bounds"] = target.chips_per_host_bounds
    noise.quiet_libtpu()  # a library call too, not only through a command line's entry point
    try:
        topo = topologies.get_topology_desc(platform="tpu", topology_name=target.topology_name,
                                            num_slices=target.num_slices, **kwargs)
    except Exception as err:  # noqa: BLE001 - libtpu missing or refusing the name
        raise ConfigError(f"--compile_for={target.name}: libtpu could not describe topology "
                          f"{target.topology_name} x {target.num_slices} slice(s): {err}. "
                          "Is jax[tpu] installed (pip install -e '.[tpu]')?") from err
    return sorted(topo.devices, key=lambda d: (getattr(d, "slice_index", 0) or 0, d.id))


def compile_for(config: ml_collections.ConfigDict, slice_name: str,
                progress: Callable[[str], None] | None = None, with_eval: bool = True) -> dict[str, Any]:
    """Validate `config` as a run does, build its mesh over `slice_name`'s devices, compile its
    steps, and return the report (module doc). train.grad_accum="auto" compiles A = 1, 2, ... (the
    divisors that keep micro-batches splitting over the data shards) and keeps the first that fits.
    Raises ConfigError (bad slice, config, mesh or batch) before compiling anything."""
    target = parse_slice(slice_name)
    run = prepare(config, local_devices=False)  # validated and resolved as a run is
    devices = slice_devices(target)
    mesh = build_mesh(config, devices)
    auto = run.grad_accum is None
    tries = accum_candidates(run.batch_size, mesh.shape["data"] * mesh.shape["fsdp"]) if auto else [run.grad_accum]
    state = abstract_state(run.model, run.tx, mesh, models.DEFAULT_RULES, run.seq_len)
    steps = search(run, mesh, target.chip.hbm_bytes, tries, with_eval,
                   lambda m: _say(progress, f"{target.name} ({len(devices)} devices, "
                                            f"mesh {dict(mesh.shape)}): {m}"), state=state)
    return report(with_grad_accum(run, steps.grad_accum), target, mesh, steps.measured,
                  steps.tried if auto else None)


def advice(config: ml_collections.ConfigDict, mesh: Any) -> str:
    """What to change when a step does not fit, naming the config fields."""
    cfg = config.model
    hints = ["train.grad_accum=auto (or a larger train.grad_accum)", "a smaller train.batch_size"]
    if cfg.get("remat_policy", "full") != "full" or not cfg.remat:
        hints.append("model.remat=True with model.remat_policy=full")
    if not cfg.get("loss_chunk", 0):
        hints.append("model.loss_chunk=512")
    if cfg.get("attention", "reference") != "flash":
        hints.append("model.attention=flash")
    if mesh.shape["fsdp"] * mesh.shape["tensor"] < mesh.size:
        hints.append("mesh.data=1 mesh.fsdp=-1 (shard the state over every device)")
    return "; ".join(hints)


def report(run: Run, target: Slice, mesh: Any, result: dict[str, Any],
           tried: list | None) -> dict[str, Any]:
    """The JSON report of `run` compiled with `run.grad_accum` (`result`: the steps' measurements;
    `tried`: the "auto" search's candidates, else None; units: the module doc)."""
    model_cfg, config, accum = run.model_config, run.config, run.grad_accum
    seq, batch = run.seq_len, run.batch_size
    hbm = target.chip.hbm_bytes
    train = result["train"]
    devices = mesh.size
    out: dict[str, Any] = {
        "slice": target.name, "topology": target.topology_name, "num_slices": target.num_slices,
        "devices": devices, "mesh": dict(mesh.shape), "model": config.model.size,
        "batch_size": batch, "seq_len": seq, "grad_accum": accum,
        "sequences_per_device": batch / (mesh.shape["data"] * mesh.shape["fsdp"]),
        "micro_batch_per_device": batch / accum / (mesh.shape["data"] * mesh.shape["fsdp"]),
        "hbm_bytes_per_device": hbm, "headroom": HEADROOM,
        "bytes_per_device": train.get("bytes", {"temporaries": train.get("temporaries")}),
        "fits": _fits(result, hbm),
    }
    model_flops = float(models.flops_per_token(model_cfg, seq)) * batch * seq
    out["flops_per_step"] = {"model_total": model_flops, "model_per_device": model_flops / devices}
    if "flops" in train:
        out["flops_per_step"].update(compiled_per_device=train["flops"], compiled_total=train["flops"] * devices)
        out["collectives"] = train["collectives"]
    # executed FLOPs: the model's, plus one more forward of the blocks when they are rematerialised
    recompute = 4.0 / 3.0 if model_cfg.remat and model_cfg.remat_policy != "none" else 1.0
    out["estimated_step_s"] = model_flops * recompute / devices / target.chip.peak_flops
    if "eval" in result:
        ev = result["eval"]
        out["eval_bytes_per_device"] = ev.get("bytes", {"temporaries": ev.get("temporaries")})
    for name, r in result.items():
        if "error" in r:
            out[f"{name}_error"] = r["error"]
    if tried is not None:
        out["grad_accum_tried"] = tried
    if not out["fits"]:
        total = out["bytes_per_device"].get("total") or out["bytes_per_device"].get("temporaries") or 0
        out["message"] = (f"does not fit {target.name}: {total / GIB:.2f} GiB per device (train step) > "
                          f"{HEADROOM:.0%} of {hbm / GIB:.2f} GiB HBM. Try: {advice(config, mesh)}")
    return out


def plan_for(config: ml_collections.ConfigDict, slice_name: str) -> dict[str, Any]:
    """`--dry_run --compile_for`: the run's plan with its memory estimate for the slice's mesh (no
    compile): train/plan.py's estimate, against the slice's HBM."""
    target = parse_slice(slice_name)
    run = prepare(config, local_devices=False)
    mesh = build_mesh(config, slice_devices(target))
    plan = plan_for_mesh(run, dict(mesh.shape)).to_json()
    estimate = plan["memory_per_device_bytes"]["total"]
    plan["target"] = {"slice": target.name, "devices": mesh.size, "hbm_bytes_per_device": target.chip.hbm_bytes,
                      "estimated_fits": estimate <= HEADROOM * target.chip.hbm_bytes,
                      "note": "a rough estimate; drop --dry_run to compile and measure"}
    return plan


def main(config: ml_collections.ConfigDict, slice_name: str, dry_run: bool = False) -> int:
    """The trainer's --compile_for: print the JSON report, return the exit code (0 fits, 4 not)."""
    import json
    import sys

    from jaxsparse.errors import EXIT_DOES_NOT_FIT, EXIT_OK
    if dry_run:
        print(json.dumps(plan_for(config, slice_name), indent=2))
        return EXIT_OK
    result = compile_for(config, slice_name, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2))
    if result["fits"]:
        if result.get("grad_accum_tried"):
            print(f"fits with train.grad_accum={result['grad_accum']}", file=sys.stderr)
        return EXIT_OK
    print(f"error: {result['message']}", file=sys.stderr)
    return EXIT_DOES_NOT_FIT
