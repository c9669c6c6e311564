"""`pip install .` (no extra) is enough for jaxsparse.pruning: it imports and trains with the
trainer's stack (orbax, tfds, grain, ml_collections, ...) made unimportable."""
import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Packages of the [train], [hf] and [test] extras that flax/optax/jax do not import themselves
# (absl is imported by flax and optax, so it is not blocked; checked with `sys.modules` after
# `import flax.linen, flax.nnx, optax`).
BLOCKED = ("orbax", "tensorflow", "tensorflow_datasets", "grain", "array_record", "ml_collections",
           "sentencepiece", "scipy", "matplotlib", "tensorboardX", "transformers", "torch",
           "safetensors", "tensorstore", "hypothesis", "pytest")

SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys

    BLOCKED = set(sys.argv[1].split(","))

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked by the light-install test: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    import jax, jax.numpy as jnp, numpy as np, optax
    import jaxsparse.pruning as jp
    from jaxsparse.pruning.linen import MaskedDense
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return MaskedDense(4)(nn.relu(MaskedDense(32)(x)))

    model, steps = Net(), 12
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 16)), jnp.float32)
    params = model.init(jax.random.key(0), x)["params"]
    tx = optax.chain(optax.adam(1e-2), jp.magnitude_pruning(jp.Schedule("geometric", 0.5, 0.2, 0.6, 2), steps))
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        masks = jp.mask_collection(jp.get_masks(s))
        g = jax.grad(lambda p: jnp.mean(model.apply({"params": p, "masks": masks}, x) ** 2))(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    for _ in range(steps):
        params, state = step(params, state)
    masks = jp.get_masks(state)
    zeros_where_pruned = all(bool(jnp.all(jnp.where(m, True, w == 0))) for w, m in zip(
        jax.tree.leaves(params), jax.tree.structure(params).flatten_up_to(masks)) if m is not None)
    loaded = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
    print(json.dumps({"sparsity": jp.sparsity_summary(masks).sparsity, "zeros": zeros_where_pruned, "loaded": loaded}))
""")


def test_pruning_library_imports_and_trains_without_the_trainer_stack():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(BLOCKED)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["zeros"] is True
    assert result["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_the_blocker_does_block():
    """The same finder makes a trainer module fail to import (so the test above can fail)."""
    script = SCRIPT.split("import jax, jax.numpy")[0] + "import jaxsparse.train.resolve.train_config\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script, ",".join(BLOCKED)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode != 0 and "blocked by the light-install test" in proc.stderr


def _literal(tree, name):
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == name)
    return ast.literal_eval(node.value)


def test_requirements_are_lower_bounds_at_the_pins_of_constraints_txt():
    """setup.py asks for ranges (so `pip install .` keeps a client's newer jax; .ci/py312 checks that on
    the newest releases); their floors are the exact set of constraints.txt that CI installs."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    requirements = _literal(tree, "INSTALL_REQUIRES") + _literal(tree, "TRAIN")
    canonical = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731 - PEP 503's name
    pins = {canonical(k): v for k, v in (line.split("==") for line in (ROOT / "constraints.txt").read_text(
        encoding="utf-8").splitlines() if line and not line.startswith("#"))}
    assert {"jax", "jaxlib", "flax", "optax", "numpy"} <= {r.split(">=")[0] for r in requirements}
    for requirement in requirements:
        name, sep, floor = requirement.partition(">=")
        assert sep and "," not in floor and "==" not in requirement, requirement
        assert pins[canonical(name)] == floor, f"{requirement} against constraints.txt {pins.get(canonical(name))}"
