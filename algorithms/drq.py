"""DrQ (Kostrikov, Yarats & Fergus, 2021): SAC from pixels with random-shift augmentation.

Run:   python algorithms/drq.py --env-id pixels:Pendulum-v1
       python algorithms/drq.py --env-id pixels:HalfCheetah-v5      (MuJoCo, rendered headless)
Help:  python algorithms/drq.py --help

`pixels:<id>` is `eqxrl.vision.make_pixel_env(id, size=(84, 84), frame_stack=3)`: 84×84 RGB
frames, the last 3 stacked channels last (84×84×9 uint8; the replay stores each frame once).
SAC (`algorithms/sac.py`: twin critics, tanh-Gaussian actor, learned temperature) whose critics
share one image encoder followed by a trunk (linear → LayerNorm → tanh, `feature_dim`). The
encoder is trained by the critic loss only: the actor has its own trunk on the encoder's
features with their gradient stopped. Each update shifts every observation and next
observation at random by up to `--shift-padding` pixels (replicated edges), per image, inside
the compiled update. The target critic (its own encoder included) follows by polyak averaging,
the encoder at `--encoder-tau`, the heads at `--tau`.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Annotated

import equinox as eqx
import jax
import jax.numpy as jnp
import tyro
from jaxtyping import Array, Float, PRNGKeyArray

import eqxrl
from eqxrl.algorithms import sac
from eqxrl.core import at_least, positive, within
from eqxrl.vision import EncoderConfig, ObsEncoder, augment_batch, is_image, random_shift


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config(sac.Config):
    """DrQ on a pixel env with continuous actions: SAC's hyperparameters (with DrQ's defaults)
    and the encoder's."""

    run: Annotated[eqxrl.OnlineRun, tyro.conf.arg(name="")] = eqxrl.OnlineRun(
        env_id="pixels:Pendulum-v1", total_steps=100_000, start_steps=1_000, batch_size=128,
        buffer_size=100_000, eval_interval=5_000)
    net: tyro.conf.Suppress[eqxrl.Networks] = eqxrl.Networks()  # SAC's/TD3's network
    # options do not apply here (require_default refuses them)
    hidden_dims: tuple[int, ...] = (1024, 1024)
    """hidden layer sizes of the actor and critic heads (after the trunk)"""
    actor_lr: eqxrl.Swept[float] = 1e-3
    """actor learning rate"""
    critic_lr: eqxrl.Swept[float] = 1e-3
    """critic (encoder and heads) learning rate"""
    temperature_lr: eqxrl.Swept[float] = 1e-3
    """temperature learning rate"""
    tau: eqxrl.Swept[float] = 0.01
    """polyak rate of the target critic heads"""
    init_temperature: eqxrl.Swept[float] = 0.1
    """initial entropy temperature α"""
    vision: Annotated[EncoderConfig, tyro.conf.arg(name="")] = EncoderConfig()
    """the image encoder, shared by the critics"""
    feature_dim: int = 50
    """size of the trunk's output (linear → LayerNorm → tanh) in front of actor and critics"""
    encoder_tau: eqxrl.Swept[float] = 0.05
    """polyak rate of the target critic's encoder and trunk"""
    shift_padding: int = 4
    """random shift: pad by this many pixels (edges replicated), crop back at random"""

    def __post_init__(self):
        sac.Config.__post_init__(self)
        self.net.require_default("DrQ")
        at_least(self, 1, "feature_dim")
        at_least(self, 0, "shift_padding")
        within(self, "encoder_tau", 0, 1, open_low=True)
        positive(self, "init_temperature")
        if self.critic_dropout > 0:
            raise ValueError(f"--critic-dropout must be 0 for DrQ, got {self.critic_dropout}.")


# ---------------------------------------------------------------------------- networks
class Trunk(eqx.Module):
    """linear → LayerNorm → tanh: the small feature layer DrQ puts after the encoder."""

    linear: eqx.nn.Linear
    norm: eqx.nn.LayerNorm

    def __init__(self, in_size: int, out_size: int, *, key: PRNGKeyArray):
        self.linear = eqx.nn.Linear(in_size, out_size, key=key)
        self.norm = eqx.nn.LayerNorm(out_size)

    def __call__(self, x: Float[Array, " in_size"], *, key=None) -> Float[Array, " out_size"]:
        """`tanh(LayerNorm(linear(x)))` for one feature vector; `key` is taken and unused."""
        return jnp.tanh(self.norm(eqxrl.nn.dense(self.linear, x)))


class Critic(eqx.Module):
    """Q_j(trunk(encoder(o)), a) for every critic j: one encoder and trunk, several heads."""

    encoder: ObsEncoder
    head: eqxrl.WithEncoder  # Trunk then the Ensemble of QFunction, on encoder features

    def __call__(self, obs: eqxrl.Obs, action: Float[Array, " action_dim"], *, key=None
                 ) -> Float[Array, " critics"]:
        """Every critic's Q(o, a) for one observation and action; `key` goes to the heads."""
        return self.head(self.encoder(obs), action, key=key)


class State(eqx.Module):
    """Everything DrQ's update changes. Swept hyperparameters are array leaves."""

    actor: eqxrl.TrainState  # model: WithEncoder(Trunk, GaussianPolicy) on encoder features
    critic: eqxrl.TrainState  # model: Critic (the encoder lives here)
    target_critic: Critic
    temperature: eqxrl.TrainState  # model: LogScalar
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    encoder_tau: Float[Array, ""]
    target_entropy: Float[Array, ""]
    spec: eqxrl.EnvSpec = eqx.field(static=True)


# ---------------------------------------------------------------------------- augmentation
def augment(obs: eqxrl.Obs, key: PRNGKeyArray, padding: int) -> eqxrl.Obs:
    """Shift every image of a batch (every image leaf of dict observations) at random, each
    image with its own key; other leaves are unchanged."""
    if padding == 0:
        return obs
    leaves, tree = jax.tree.flatten(obs)
    keys = jax.random.split(key, len(leaves))
    shift = functools.partial(random_shift, padding=padding)
    out = [augment_batch(shift, k, x)
           if is_image(jax.ShapeDtypeStruct(x.shape[1:], x.dtype)) else x
           for x, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(tree, out)


def encode(critic: Critic, obs: eqxrl.Obs) -> Float[Array, "batch features"]:
    """The encoder's features of a batch, with their gradient stopped (for the actor)."""
    return jax.lax.stop_gradient(jax.vmap(critic.encoder)(obs))


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """Build the encoder, critics, targets, actor and temperature for `spec`."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    spec.require_unit_box_actions("DrQ")
    if not eqxrl.vision.has_images(spec):
        raise ValueError(
            f"DrQ learns from images, but the observations are {spec.observation}; use a pixel "
            "env (--env-id pixels:Pendulum-v1) or algorithms/sac.py for state observations.")
    k_encoder, k_trunk, k_heads, k_actor_trunk, k_actor = jax.random.split(key, 5)
    encoder = ObsEncoder(spec, key=k_encoder, **config.vision.options())
    heads = eqxrl.q_ensemble(
        dataclasses.replace(spec, observation=jax.ShapeDtypeStruct(
            (config.feature_dim,), jnp.float32), frame_stack=1),
        config.hidden_dims, config.num_critics, layer_norm=config.critic_layer_norm,
        key=k_heads)
    critic = Critic(encoder, eqxrl.WithEncoder(
        Trunk(encoder.features, config.feature_dim, key=k_trunk), heads))
    actor = eqxrl.WithEncoder(
        Trunk(encoder.features, config.feature_dim, key=k_actor_trunk),
        eqxrl.GaussianPolicy(config.feature_dim, spec.action_dim, config.hidden_dims,
                             log_std_min=config.log_std_min, log_std_max=config.log_std_max,
                             key=k_actor))
    return State(
        actor=eqxrl.TrainState.create(actor, eqxrl.ADAM, learning_rate=hyper.actor_lr),
        critic=eqxrl.TrainState.create(critic, eqxrl.ADAM, learning_rate=hyper.critic_lr),
        target_critic=critic,
        temperature=eqxrl.TrainState.create(eqxrl.LogScalar.create(hyper.init_temperature),
                                            eqxrl.ADAM, learning_rate=hyper.temperature_lr),
        discount=hyper.discount,
        tau=hyper.tau,
        encoder_tau=hyper.encoder_tau,
        target_entropy=jnp.float32(hyper.target_entropy_per_dim * spec.action_dim),
        spec=spec,
    )


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One DrQ step on shifted images: critics (and encoder), then the actor on the new
    encoder's stopped features, then the temperature, then the targets."""
    eqxrl.check_one_agent(state, "drq.update")
    state.spec.check_batch(batch)
    k_obs, k_next_obs, k_next, k_actor = jax.random.split(key, 4)
    obs = augment(batch.obs, k_obs, config.shift_padding)
    next_obs = augment(batch.next_obs, k_next_obs, config.shift_padding)
    alpha = state.temperature.model()

    next_action, next_log_prob = eqxrl.sample_actions(
        state.actor.model, encode(state.critic.model, next_obs), k_next)
    next_value = jnp.min(eqxrl.ensemble_q(state.target_critic, next_obs, next_action), axis=0)
    if config.backup_entropy:
        next_value = next_value - alpha * next_log_prob
    target_q = eqxrl.td_target(batch.reward, batch.terminated, next_value, state.discount)
    critic, critic_info = state.critic.apply_loss_fn(
        eqxrl.critic_td_loss, obs, batch.action, target_q)

    # The actor's critic is the heads on the same stopped features (the encoder gets no
    # gradient from the actor loss).
    actor, actor_info = state.actor.apply_loss_fn(
        sac.actor_loss, critic.model.head, encode(critic.model, obs), alpha, k_actor,
        config.actor_q_reduction)
    temperature, temperature_info = state.temperature.apply_loss_fn(
        eqxrl.temperature_loss, jax.lax.stop_gradient(actor_info["entropy"]),
        state.target_entropy)
    target = state.target_critic
    target = Critic(
        encoder=eqxrl.polyak(critic.model.encoder, target.encoder, state.encoder_tau),
        head=eqxrl.WithEncoder(
            eqxrl.polyak(critic.model.head.encoder, target.head.encoder, state.encoder_tau),
            eqxrl.polyak(critic.model.head.head, target.head.head, state.tau)))
    temperature_info.pop("grad_norm")
    new_state = dataclasses.replace(state, actor=actor, critic=critic, target_critic=target,
                                    temperature=temperature)
    return new_state, eqxrl.prefixed(critic=critic_info, actor=actor_info,
                                     temperature=temperature_info)


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """Actions in [-1, 1] for a batch of (unshifted) observations; `deterministic` takes the
    mode."""
    eqxrl.check_one_agent(state, "drq.act")
    state.spec.batch_size(obs, "obs")
    features = encode(state.critic.model, obs)
    return eqxrl.policy_actions(state.actor.model, features, key, deterministic)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train DrQ online and return the run's summary."""
    return eqxrl.train_online(config, sys.modules[__name__])


if __name__ == "__main__":
    eqxrl.cli(main, Config)
