"""DrQ's update written the obvious way in Flax linen + optax + distrax: the baseline that
`benchmarks/vision.py` times `algorithms/drq.py` against (same maths, same sizes).

One IMPALA encoder (uint8 / 255, 16-32-32, flatten) and a trunk (dense → LayerNorm → tanh)
shared by twin Q-heads; the actor has its own trunk on the encoder's stopped features and a
tanh-Gaussian head (state-dependent std, log-std clipped to [-10, 2]); obs and next_obs are
shifted by ±4 pixels (edge padding, jaxrl's batched crop); SAC's critic, actor and
temperature losses with Adam; target encoder and trunk at τ_enc, heads at τ. Benchmark only:
its numbers are not checked against eqxrl's, only its cost.
"""

from __future__ import annotations

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class Impala(nn.Module):
    """IMPALA CNN as jaxrl_m writes it (16-32-32, 2 residual blocks per stack), flattened."""

    @nn.compact
    def __call__(self, x):
        for channels in (16, 32, 32):
            x = nn.Conv(channels, (3, 3), padding="SAME")(x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
            for _ in range(2):
                y = nn.Conv(channels, (3, 3), padding="SAME")(nn.relu(x))
                x = x + nn.Conv(channels, (3, 3), padding="SAME")(nn.relu(y))
        return jnp.reshape(nn.relu(x), (x.shape[0], -1))


class Trunk(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return jnp.tanh(nn.LayerNorm()(nn.Dense(self.features)(x)))


class MLP(nn.Module):
    hidden: tuple[int, ...]
    out: int

    @nn.compact
    def __call__(self, x):
        for h in self.hidden:
            x = nn.relu(nn.Dense(h)(x))
        return nn.Dense(self.out)(x)


class Critic(nn.Module):
    feature_dim: int
    hidden: tuple[int, ...]

    def setup(self):
        self.encoder = Impala()
        self.trunk = Trunk(self.feature_dim)
        heads = nn.vmap(MLP, variable_axes={"params": 0}, split_rngs={"params": True},
                        in_axes=None, out_axes=0, axis_size=2)
        self.heads = heads(self.hidden, 1)

    def encode(self, obs):
        return self.encoder(obs.astype(jnp.float32) / 255.0)

    def on_features(self, features, action):
        z = jnp.concatenate([self.trunk(features), action], axis=-1)
        return self.heads(z)[..., 0]  # (2, batch)

    def __call__(self, obs, action):
        return self.on_features(self.encode(obs), action)


class Actor(nn.Module):
    feature_dim: int
    hidden: tuple[int, ...]
    action_dim: int

    @nn.compact
    def __call__(self, features):
        out = MLP(self.hidden, 2 * self.action_dim)(Trunk(self.feature_dim)(features))
        mean, log_std = jnp.split(out, 2, axis=-1)
        std = jnp.exp(jnp.clip(log_std, -10.0, 2.0))
        base = distrax.MultivariateNormalDiag(mean, std)
        return distrax.Transformed(base, distrax.Block(distrax.Tanh(), 1))


def shift(key, images, padding=4):
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
                     mode="edge")
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))  # noqa: E731
    return jax.vmap(crop)(padded, offsets)


def make(obs, action_dim, *, feature_dim=50, hidden=(1024, 1024), lr=1e-3, discount=0.99,
         tau=0.01, encoder_tau=0.05, init_temperature=0.1):
    """(update, state): a jitted `update(state, batch, key) -> (state, metrics)`."""
    critic, actor = Critic(feature_dim, hidden), Actor(feature_dim, hidden, action_dim)
    k1, k2 = jax.random.split(jax.random.key(0))
    dummy_action = jnp.zeros((1, action_dim))
    critic_params = critic.init(k1, obs[:1], dummy_action)
    features = critic.apply(critic_params, obs[:1], method=Critic.encode)
    actor_params = actor.init(k2, features)
    tx = optax.adam(lr)
    log_alpha = jnp.log(jnp.float32(init_temperature))
    state = dict(critic=critic_params, target=critic_params, actor=actor_params,
                 log_alpha=log_alpha, critic_opt=tx.init(critic_params),
                 actor_opt=tx.init(actor_params), alpha_opt=tx.init(log_alpha))
    target_entropy = -float(action_dim)

    def polyak(online, target):
        def mix(path, o, t):
            rate = encoder_tau if path[1].key in ("encoder", "trunk") else tau
            return rate * o + (1 - rate) * t
        return jax.tree_util.tree_map_with_path(mix, online, target)

    @jax.jit
    def update(state, batch, key):
        k_obs, k_next_obs, k_next, k_actor = jax.random.split(key, 4)
        obs, next_obs = shift(k_obs, batch["obs"]), shift(k_next_obs, batch["next_obs"])
        alpha = jnp.exp(state["log_alpha"])

        next_features = jax.lax.stop_gradient(
            critic.apply(state["critic"], next_obs, method=Critic.encode))
        next_action, next_log_prob = actor.apply(state["actor"], next_features
                                                 ).sample_and_log_prob(seed=k_next)
        next_q = jnp.min(critic.apply(state["target"], next_obs, next_action), axis=0)
        target_q = batch["reward"] + discount * (1 - batch["terminated"]) * (
            next_q - alpha * next_log_prob)

        def critic_loss(params):
            q = critic.apply(params, obs, batch["action"])
            return jnp.sum(jnp.mean((q - target_q[None]) ** 2, axis=1))

        c_loss, grads = jax.value_and_grad(critic_loss)(state["critic"])
        updates, critic_opt = tx.update(grads, state["critic_opt"])
        critic_params = optax.apply_updates(state["critic"], updates)

        features = jax.lax.stop_gradient(
            critic.apply(critic_params, obs, method=Critic.encode))

        def actor_loss(params):
            action, log_prob = actor.apply(params, features).sample_and_log_prob(seed=k_actor)
            q = critic.apply(critic_params, features, action, method=Critic.on_features)
            return jnp.mean(alpha * log_prob - jnp.min(q, axis=0)), -jnp.mean(log_prob)

        (a_loss, entropy), grads = jax.value_and_grad(actor_loss, has_aux=True)(state["actor"])
        updates, actor_opt = tx.update(grads, state["actor_opt"])
        actor_params = optax.apply_updates(state["actor"], updates)

        alpha_loss_fn = lambda la: jnp.exp(la) * (jax.lax.stop_gradient(entropy)  # noqa: E731
                                                 - target_entropy)
        grad = jax.grad(alpha_loss_fn)(state["log_alpha"])
        updates, alpha_opt = tx.update(grad, state["alpha_opt"])
        new = dict(critic=critic_params, target=polyak(critic_params, state["target"]),
                   actor=actor_params, log_alpha=optax.apply_updates(state["log_alpha"], updates),
                   critic_opt=critic_opt, actor_opt=actor_opt, alpha_opt=alpha_opt)
        return new, {"critic_loss": c_loss, "actor_loss": a_loss}

    return update, state

