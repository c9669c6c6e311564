"""fan_in_axes_from: n:m fan-in axes read from NNX and Linen models, and what it refuses."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxsparse.pruning import Schedule, fan_in_axes_from, get_masks, magnitude_pruning
from jaxsparse.pruning.linen import MaskedDenseGeneral
from jaxsparse.pruning.model_fan_in import einsum_fan_in

HALF = Schedule("one_shot", 0.5, 0.0, 0.0, 1)  # a 2:4 event at init, from the initial weights


class Layers(nnx.Module):
    def __init__(self, rngs):
        self.q = nnx.Einsum("BTD,NDH->BTNH", (4, 8, 2), rngs=rngs)
        self.kv = nnx.Einsum("BSD,CKDH->CBSKH", (2, 2, 8, 2), rngs=rngs)
        self.out = nnx.Einsum("BTNH,NHD->BTD", (4, 2, 8), rngs=rngs)
        self.per_head = nnx.Einsum("BNT,NTH->BNH", (4, 8, 2), rngs=rngs)  # N is a batch axis: fan-in T only
        self.mlp = nnx.Linear(8, 12, rngs=rngs)
        self.general = nnx.LinearGeneral((4, 2), 8, axis=(-2, -1), rngs=rngs)
        self.tok = nnx.Embed(16, 8, rngs=rngs)


def test_nnx_layers_give_their_contraction_axes():
    model = Layers(nnx.Rngs(0))
    read = fan_in_axes_from(model)
    want = {"q/kernel": (1,), "kv/kernel": (2,), "out/kernel": (0, 1), "per_head/kernel": (1,),
            "mlp/kernel": (0,), "general/kernel": (0, 1)}
    state = nnx.state(model, nnx.Param)
    assert {path: read(path, state[path.split("/")[0]]["kernel"][...]) for path in want} == want
    assert read("mlp/bias", state["mlp"]["bias"][...]) is None       # not a kernel: the transform's own rule
    abstract = nnx.eval_shape(lambda: Layers(nnx.Rngs(0)))
    assert fan_in_axes_from(abstract) == read                         # read without any weight


@pytest.mark.parametrize("spec, axes", [("BTD,NDH->BTNH", (1,)), ("BD,DH->BH", (0,)), ("BNT,NTH->BNH", (1,)),
                                        ("...D,DH->...H", (0,)), ("BT NH, NHD -> BTD", (0, 1))])
def test_einsum_fan_in_is_the_kernel_axes_contracted_with_the_input(spec, axes):
    assert einsum_fan_in(spec) == (axes, None)


@pytest.mark.parametrize("spec, why", [("BD,HK->BHK", "contracts no kernel axis"), ("BD,D...->B...", "'...'"),
                                       ("BD,DD->B", "distinct"), ("BD,DH", "not 'input,kernel->output'")])
def test_einsum_fan_in_refuses_what_it_cannot_read(spec, why):
    axes, reason = einsum_fan_in(spec)
    assert axes is None and why in reason


def test_a_two_of_four_nnx_model_needs_no_hand_written_axes_and_groups_along_the_fan_in():
    model = Layers(nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    with pytest.raises(ValueError, match=r"general/kernel with shape \(4, 2, 8\) are ambiguous.*fan_in_axes_from"):
        magnitude_pruning(HALF, 4, structure="2:4").init(params)
    masks = get_masks(magnitude_pruning(HALF, 4, structure="2:4", fan_in_axes=fan_in_axes_from(model)).init(params))
    q = np.asarray(masks["q"]["kernel"][...])                          # [N, D, H], fan-in D
    assert (q.reshape(4, 2, 4, 2).sum(axis=2) == 2).all()
    groups = np.abs(np.asarray(params["q"]["kernel"][...])).reshape(4, 2, 4, 2)   # D cut into 2 groups of 4
    rank = np.argsort(np.argsort(-groups, axis=2), axis=2)
    np.testing.assert_array_equal(q.reshape(4, 2, 4, 2), rank < 2)


def test_refused_layers_are_named_when_pruned():
    model = Layers(nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    tx = magnitude_pruning(HALF, 4, structure="2:4", fan_in_axes=fan_in_axes_from(model), include="tok|kernel")
    with pytest.raises(ValueError, match=r"fan-in of tok/embedding \(nnx.Embed\) is unknown: an embedding table"):
        tx.init(params)


def test_a_kernel_stacked_by_nnx_vmap_is_refused_by_its_shape():
    @nnx.vmap(in_axes=0, out_axes=0)
    def stacked(rngs):
        return nnx.Linear(8, 4, rngs=rngs)

    model = stacked(nnx.Rngs(0).split(3))
    read = fan_in_axes_from(model)
    with pytest.raises(ValueError, match=r"kernel has shape \(3, 8, 4\), but its nnx.Linear made it \(8, 4\)"):
        read("kernel", nnx.state(model, nnx.Param)["kernel"][...])


class LinenModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        q = nn.DenseGeneral((4, 2), name="q")(x)                                  # [D, N, H]
        e = nn.Einsum((4, 8, 2), name="e")(x, "BTD,NDH->BTNH")                     # einsum given at call
        o = MaskedDenseGeneral(8, axis=(-2, -1), name="o")(q + e)                 # [N, H, D]
        head = nn.Dense(3, name="head")(o)
        return head + nn.Embed(5, 3, name="tok")(jnp.zeros(o.shape[:-1], jnp.int32))


def test_linen_layers_are_read_from_an_abstract_init():
    x = jnp.ones((2, 3, 8))
    read = fan_in_axes_from(LinenModel(), jax.random.key(0), x)
    params = LinenModel().init(jax.random.key(0), x)["params"]
    got = {f"{name}/kernel": read(f"{name}/kernel", params[name]["kernel"]) for name in ("q", "e", "o", "head")}
    assert got == {"q/kernel": (0,), "e/kernel": (1,), "o/kernel": (0, 1), "head/kernel": (0,)}
    with pytest.raises(ValueError, match=r"tok/embedding \(nn.Embed\) is unknown"):
        read("tok/embedding", params["tok"]["embedding"])


def test_a_linen_kernel_stacked_by_nn_scan_is_refused_by_its_shape():
    class Body(nn.Module):
        @nn.compact
        def __call__(self, carry, _):
            return nn.Dense(8, name="dense")(carry), None

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            layers = nn.scan(Body, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
            return layers(name="layers")(x, None)[0]

    x = jnp.ones((2, 8))
    params = Stack().init(jax.random.key(0), x)["params"]
    read = fan_in_axes_from(Stack(), jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"layers/dense/kernel has shape \(3, 8, 8\), but its nn.Dense made it"):
        read("layers/dense/kernel", params["layers"]["dense"]["kernel"])


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="give the arguments of model.init"):
        fan_in_axes_from(LinenModel())
    with pytest.raises(TypeError, match="takes no other argument"):
        fan_in_axes_from(Layers(nnx.Rngs(0)), jnp.ones((2, 8)))
    with pytest.raises(TypeError, match="neither an nnx.Module nor a flax.linen Module"):
        fan_in_axes_from({"kernel": jnp.ones((8, 4))})


def test_the_read_axes_drive_a_whole_nnx_training_step():
    model = Layers(nnx.Rngs(0))
    tx = optax.chain(optax.sgd(0.1), magnitude_pruning(Schedule("one_shot", 0.5, 0.5, 0.5, 1), 4, structure="2:4",
                                                       fan_in_axes=fan_in_axes_from(model)))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jnp.ones((2, 3, 8))

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(lambda m: jnp.mean(m.out(m.q(x)) ** 2) + jnp.mean(m.mlp(x) ** 2))(model)
        optimizer.update(model, grads)
    for _ in range(4):
        step(model, optimizer)
    out = np.asarray(model.out.kernel[...])                            # [N, H, D], fan-in N*H = 8
    assert (np.count_nonzero(out.reshape(2, 4, 8), axis=1) == 2).all()
