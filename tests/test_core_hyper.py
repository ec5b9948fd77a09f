"""Swept hyperparameters: marked once in each Config, read by `init` from `hyper` only."""

from __future__ import annotations

import ast
import dataclasses
import inspect

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl.algorithms import bc, cql, cql_discrete, dqn, drq, iql, ppo, sac, td3, td3_bc
from eqxrl.core import swept_fields

BOX = eqxrl.EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (1,),
                    action_low=(-1.0,), action_high=(1.0,))
DISCRETE = eqxrl.EnvSpec(jax.ShapeDtypeStruct((4,), np.dtype("float32")), (), discrete=True,
                         num_actions=2)
PIXELS = eqxrl.EnvSpec(
    (("pixels", jax.ShapeDtypeStruct((16, 16, 6), np.dtype("uint8"))),
     ("state", jax.ShapeDtypeStruct((4,), np.dtype("float32")))),
    (1,), action_low=(-1.0,), action_high=(1.0,), frame_stack=2)
CASES = [  # (algorithm, spec, small config overrides)
    (sac, BOX, {"hidden_dims": (8,)}), (td3, BOX, {"hidden_dims": (8,)}),
    (td3_bc, BOX, {"hidden_dims": (8,)}), (iql, BOX, {"hidden_dims": (8,)}),
    (cql, BOX, {"hidden_dims": (8,), "cql_lagrange": True}),  # its gap and rate are swept too
    (bc, BOX, {"hidden_dims": (8,)}),
    (dqn, DISCRETE, {"hidden_dims": (8,)}), (cql_discrete, DISCRETE, {"hidden_dims": (8,)}),
    (ppo, DISCRETE, {"hidden_dims": (8,)}),
    (drq, PIXELS, {"hidden_dims": (8,), "feature_dim": 4}),
]
IDS = [algorithm.__name__.rsplit(".", 1)[-1] for algorithm, _, _ in CASES]


def nudged(config):
    """`config` with every swept field moved to another valid value."""
    changes = {}
    for name in swept_fields(type(config)):
        value = getattr(config, name)
        changes[name] = value + 1 if isinstance(value, int) else value * 0.5
    return dataclasses.replace(config, **changes)


def test_marks_and_values():
    assert swept_fields(sac.Config)[:5] == ("actor_lr", "critic_lr", "temperature_lr",
                                            "discount", "tau")
    assert "num_critics" not in swept_fields(sac.Config)  # a count shapes the program
    assert set(swept_fields(sac.Config)) <= set(swept_fields(cql.Config))  # inherited marks
    hyper = eqxrl.hyper_of(sac.Config(), {"tau": 0.01})
    assert hyper.tau.dtype == jnp.float32 and float(hyper.tau) == pytest.approx(0.01)
    assert float(hyper.discount) == pytest.approx(0.99)
    assert eqxrl.hyper_of(dqn.Config()).epsilon_decay_steps.dtype == jnp.int32
    with pytest.raises(AttributeError, match="'num_critics' is not a swept hyperparameter"):
        _ = hyper.num_critics


@pytest.mark.parametrize("algorithm, spec, small", CASES, ids=IDS)
def test_init_reads_swept_values_from_hyper_only(algorithm, spec, small):
    """The same `hyper` gives the same state whatever the config says of the swept fields, and
    another `hyper` changes only array leaves: one program serves every grid point."""
    config = algorithm.Config(**small)
    key, hyper = jax.random.key(0), eqxrl.hyper_of(config)
    a = algorithm.init(key, spec, config, hyper)
    b = algorithm.init(key, spec, nudged(config), hyper)
    assert bool(eqx.tree_equal(a, b))
    c = algorithm.init(key, spec, config, eqxrl.hyper_of(nudged(config)))
    assert jax.tree.structure(eqx.filter(a, eqx.is_array)) == jax.tree.structure(
        eqx.filter(c, eqx.is_array))
    assert not bool(eqx.tree_equal(a, c))
    assert bool(eqx.tree_equal(a, algorithm.init(key, spec, config)))  # hyper defaults to config's


@pytest.mark.parametrize("algorithm", [case[0] for case in CASES], ids=IDS)
def test_no_function_reads_a_swept_field_from_the_config(algorithm):
    """Outside `init`'s `hyper` default, a swept value is read from the state, never from
    `config`: a grid point's value could not reach it there."""
    swept = set(swept_fields(algorithm.Config))
    tree = ast.parse(inspect.getsource(algorithm))
    found = [(node.lineno, node.attr) for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
             and node.value.id == "config" and node.attr in swept]
    assert not found, f"{algorithm.__name__} reads {found} from config"
