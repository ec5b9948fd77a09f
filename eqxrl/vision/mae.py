"""Masked autoencoder (He et al. 2022): a ViT that learns by reconstructing masked patches.

Pre-training hides a random `mask_ratio` of the patches, encodes only the visible ones (with
the class token), and a light decoder predicts the pixels of every patch from the encoded
tokens and a shared mask token; the loss is the mean squared error on the hidden patches,
each target normalised by its own mean and variance (`norm_pix=True`, the paper's default).
Called as an encoder, `mae(image)` is its ViT on the whole image (class-token features), so
`MAE` sits in `ENCODERS` (`mae-ti16`, `mae-s16`, `mae-b16`) and in front of any head
(`ObsEncoder` keeps only its ViT). Pre-train, save the ViT, then train an agent on it:

    mae = MAE(3, size="Ti", patch_size=16, image_size=(64, 64), key=key)
    loss = jnp.mean(jax.vmap(mae.loss)(images, jax.random.split(key, len(images))))
    eqxrl.vision.save_encoder("mae_vit.eqx", mae.encoder)
    python algorithms/bc.py ... --encoder vit-ti16 --encoder-weights mae_vit.eqx
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from eqxrl.vision._layers import linear, normal
from eqxrl.vision.vit import VIT_SIZES, ViT, ViTSize, run_blocks, stacked_blocks

__all__ = ["MAE", "patchify", "unpatchify"]


def patchify(image: Float[Array, "h w c"], patch_size: int) -> Float[Array, "n patch"]:
    """Row-major patches of an image, each flattened as (row, column, channel)."""
    h, w, c = image.shape
    p = patch_size
    x = jnp.reshape(image, (h // p, p, w // p, p, c))
    return jnp.reshape(jnp.transpose(x, (0, 2, 1, 3, 4)), ((h // p) * (w // p), p * p * c))


def unpatchify(patches: Float[Array, "n patch"], image_size: tuple[int, int],
               patch_size: int) -> Float[Array, "h w c"]:
    """The image whose `patchify` is `patches`."""
    (h, w), p = image_size, patch_size
    c = patches.shape[1] // (p * p)
    x = jnp.reshape(patches, (h // p, w // p, p, p, c))
    return jnp.reshape(jnp.transpose(x, (0, 2, 1, 3, 4)), (h, w, c))


class MAE(eqx.Module):
    """ViT masked autoencoder; `__call__` encodes a whole image, `loss` pre-trains."""

    encoder: ViT
    decoder_embed: eqx.nn.Linear
    mask_token: Float[Array, " decoder_dim"]
    decoder_pos_embed: Float[Array, "tokens decoder_dim"]
    decoder_blocks: eqx.Module  # stacked pre-norm blocks (vit.stacked_blocks)
    decoder_norm: eqx.nn.LayerNorm
    decoder_pred: eqx.nn.Linear
    mask_ratio: float = eqx.field(static=True)
    norm_pix: bool = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int = 3,
        *,
        size: ViTSize = "Ti",
        patch_size: int = 16,
        image_size: tuple[int, int] = (224, 224),
        mask_ratio: float = 0.75,
        decoder_size: tuple[int, int, int, int] = (512, 8, 16, 2048),
        norm_pix: bool = True,
        key: PRNGKeyArray,
    ):
        """`size` is the encoder's (see `ViT`); `decoder_size` the decoder's as (width, depth,
        heads, mlp width), by default the paper's; a smaller one suits small images."""
        if not 0 < mask_ratio < 1:
            raise ValueError(f"MAE: mask_ratio must be in (0, 1); got {mask_ratio}.")
        k_enc, k_embed, k_mask, k_pos, k_blocks, k_pred = jax.random.split(key, 6)
        self.encoder = ViT(in_channels, size=size, patch_size=patch_size, image_size=image_size,
                           pooling="cls", key=k_enc)
        width = VIT_SIZES[size][0] if isinstance(size, str) else size[0]
        dec_dim, dec_depth, dec_heads, dec_mlp = decoder_size
        if dec_dim % dec_heads:
            raise ValueError(f"MAE: decoder width {dec_dim} is not a multiple of its heads "
                             f"{dec_heads}.")
        self.decoder_embed = linear(width, dec_dim, key=k_embed)
        self.mask_token = normal(k_mask, (dec_dim,), 0.02)
        self.decoder_pos_embed = normal(k_pos, (self.encoder.num_patches + 1, dec_dim), 0.02)
        self.decoder_blocks = stacked_blocks(dec_dim, dec_depth, dec_heads, dec_mlp, 0.0,
                                             key=k_blocks)
        self.decoder_norm = eqx.nn.LayerNorm(dec_dim, eps=1e-6)
        self.decoder_pred = linear(dec_dim, patch_size * patch_size * in_channels, key=k_pred)
        self.mask_ratio = mask_ratio
        self.norm_pix = norm_pix

    @property
    def in_channels(self) -> int:
        """Channels of the images this encoder takes."""
        return self.encoder.in_channels

    @property
    def num_visible(self) -> int:
        """Patches the encoder sees during pre-training (at least one)."""
        return max(1, round(self.encoder.num_patches * (1 - self.mask_ratio)))

    def __call__(
        self, x: Float[Array, "height width channels"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " dim"]:
        """Features of one whole float image (its ViT's class token; nothing masked)."""
        return self.encoder(x, key=key)

    def reconstruct(
        self, x: Float[Array, "height width channels"], key: PRNGKeyArray
    ) -> tuple[Float[Array, "n patch"], Bool[Array, " n"]]:
        """Predicted pixels of every patch (`patchify` order) from a random visible subset,
        and the mask (True where a patch was hidden)."""
        n = self.encoder.num_patches
        order = jnp.argsort(jax.random.uniform(key, (n,)))
        visible = order[: self.num_visible]
        tokens = self.encoder.patch_tokens(x)[visible]
        encoded = jax.vmap(self.decoder_embed)(self.encoder.transform(tokens))
        # The decoder sees every position: encoded tokens where visible, the mask token
        # elsewhere, each with its position embedding; the class token stays in front.
        full = jnp.broadcast_to(self.mask_token, (n, self.mask_token.shape[0]))
        full = full.at[visible].set(encoded[1:])
        sequence = jnp.concatenate([encoded[:1], full]) + self.decoder_pos_embed
        decoded = jax.vmap(self.decoder_norm)(run_blocks(self.decoder_blocks, sequence, None))
        prediction = jax.vmap(self.decoder_pred)(decoded[1:])
        mask = jnp.ones((n,), bool).at[visible].set(False)
        return prediction, mask

    def loss(self, x: Float[Array, "height width channels"], key: PRNGKeyArray) -> Float[Array, ""]:
        """Mean squared error on the hidden patches of one image (targets normalised per
        patch when `norm_pix`); `jax.vmap` it over a batch with one key per image."""
        prediction, mask = self.reconstruct(x, key)
        target = patchify(x, self.encoder.patch_size)
        if self.norm_pix:
            mean = jnp.mean(target, axis=-1, keepdims=True)
            var = jnp.var(target, axis=-1, keepdims=True)
            target = (target - mean) / jnp.sqrt(var + 1e-6)
        per_patch = jnp.mean((prediction - target) ** 2, axis=-1)
        return jnp.sum(per_patch * mask) / jnp.sum(mask)
