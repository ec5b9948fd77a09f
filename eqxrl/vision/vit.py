"""Vision Transformer (Dosovitskiy et al. 2021): Ti/S/B sizes, class-token or mean pooling."""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from eqxrl.vision._layers import check_float_image, conv, conv2d, linear, normal

__all__ = ["VIT_SIZES", "ViT", "ViTSize", "run_blocks"]

VIT_SIZES = {
    # name: (width, depth, heads, mlp width)
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
}
"""Standard ViT sizes as (width, depth, heads, mlp width)."""

ViTSize = Literal["Ti", "S", "B", "L"] | tuple[int, int, int, int]
"""A name of `VIT_SIZES` or a custom (width, depth, heads, mlp width)."""


class _Block(eqx.Module):
    norm1: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    mlp1: eqx.nn.Linear
    mlp2: eqx.nn.Linear
    dropout: eqx.nn.Dropout

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.norm1 = eqx.nn.LayerNorm(dim, eps=1e-6)
        # Built abstractly, then filled with cheaply drawn projections (see _layers.uniform).
        attention = eqx.filter_eval_shape(
            lambda: eqx.nn.MultiheadAttention(
                heads,
                dim,
                use_query_bias=True,
                use_key_bias=True,
                use_value_bias=True,
                use_output_bias=True,
                key=jax.random.key(0),
            )
        )
        projections = tuple(linear(dim, dim, key=k) for k in jax.random.split(k1, 4))
        self.attention = eqx.tree_at(
            lambda a: (a.query_proj, a.key_proj, a.value_proj, a.output_proj),
            attention,
            projections,
        )
        self.norm2 = eqx.nn.LayerNorm(dim, eps=1e-6)
        self.mlp1 = linear(dim, mlp_dim, key=k2)
        self.mlp2 = linear(mlp_dim, dim, key=k3)
        self.dropout = eqx.nn.Dropout(dropout)

    def __call__(self, x: Float[Array, "tokens dim"], key) -> Float[Array, "tokens dim"]:
        k1, k2 = (None, None) if key is None else jax.random.split(key)
        y = jax.vmap(self.norm1)(x)
        x = x + self.dropout(self.attention(y, y, y), key=k1)
        y = jax.vmap(self.mlp2)(jax.nn.gelu(jax.vmap(self.mlp1)(jax.vmap(self.norm2)(x))))
        return x + self.dropout(y, key=k2)


def stacked_blocks(dim: int, depth: int, heads: int, mlp_dim: int, dropout: float, *,
                   key: PRNGKeyArray) -> _Block:
    """`depth` identical pre-norm blocks, their arrays stacked along a leading axis (for
    `run_blocks`: one block is compiled, not `depth`)."""
    make_block = lambda k: _Block(dim, heads, mlp_dim, dropout, key=k)  # noqa: E731
    return eqx.filter_vmap(make_block)(jax.random.split(key, depth))


def run_blocks(blocks: _Block, tokens: Float[Array, "tokens dim"],
               key: PRNGKeyArray | None) -> Float[Array, "tokens dim"]:
    """Apply stacked blocks (`stacked_blocks`) in order with `lax.scan`."""
    params, static = eqx.partition(blocks, eqx.is_array)
    depth = jax.tree.leaves(params)[0].shape[0]

    def run_block(tokens, xs):
        block_params, block_key = xs
        return eqx.combine(block_params, static)(tokens, block_key), None

    keys = None if key is None else jax.random.split(key, depth)
    tokens, _ = jax.lax.scan(run_block, tokens, (params, keys))
    return tokens


class ViT(eqx.Module):
    """Pre-norm ViT encoder without classifier head; `(h, w, c) -> (width,)` features.

    `pooling="cls"` reads a learned class token; `"mean"` averages the patch tokens (and then
    has no class token). Sizes: a name of `VIT_SIZES` or a `(width, depth, heads, mlp width)`
    tuple. `dropout > 0` needs a `key` in training mode. `patch_tokens` and `transform` are
    the two halves of the call, for models that drop tokens in between (`eqxrl.vision.MAE`).
    """

    patch_embed: eqx.nn.Conv2d
    cls_token: Float[Array, "1 dim"] | None
    pos_embed: Float[Array, "tokens dim"]
    blocks: _Block  # one block whose arrays are stacked along a leading depth axis
    norm: eqx.nn.LayerNorm
    depth: int = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    image_size: tuple[int, int] = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int = 3,
        *,
        size: ViTSize = "Ti",
        patch_size: int = 16,
        image_size: tuple[int, int] = (224, 224),
        pooling: Literal["cls", "mean"] = "cls",
        dropout: float = 0.0,
        key: PRNGKeyArray,
    ):
        if isinstance(size, str) and size not in VIT_SIZES:
            raise ValueError(f"ViT: size must be one of {sorted(VIT_SIZES)} or a (width, depth, "
                             f"heads, mlp width) tuple; got {size!r}.")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"ViT: pooling must be 'cls' or 'mean'; got {pooling!r}.")
        height, width = image_size
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"ViT: image_size {image_size} is not a multiple of patch_size {patch_size}; "
                "resize the images (eqxrl.vision.PixelEncoder(resize=...)) or change patch_size."
            )
        dim, depth, heads, mlp_dim = VIT_SIZES[size] if isinstance(size, str) else size
        if dim % heads:
            raise ValueError(f"ViT: width {dim} is not a multiple of heads {heads}.")
        k_patch, k_cls, k_pos, k_blocks = jax.random.split(key, 4)
        self.patch_size, self.image_size = patch_size, image_size
        self.patch_embed = conv2d(in_channels, dim, patch_size, stride=patch_size, key=k_patch)
        num_tokens = (height // patch_size) * (width // patch_size)
        if pooling == "cls":
            self.cls_token = normal(k_cls, (1, dim), 0.02)
            num_tokens += 1
        else:
            self.cls_token = None
        self.pos_embed = normal(k_pos, (num_tokens, dim), 0.02)
        self.blocks = stacked_blocks(dim, depth, heads, mlp_dim, dropout, key=k_blocks)
        self.depth = depth
        self.norm = eqx.nn.LayerNorm(dim, eps=1e-6)

    @property
    def in_channels(self) -> int:
        """Channels of the images this encoder takes."""
        return self.patch_embed.weight.shape[1]

    @property
    def num_patches(self) -> int:
        """Patch tokens per image (class token not counted)."""
        return (self.image_size[0] // self.patch_size) * (self.image_size[1] // self.patch_size)

    def patch_tokens(self, x: Float[Array, "height width channels"]) -> Float[Array, "n dim"]:
        """The image's patch embeddings with their position embeddings, in row-major patch
        order (the order of `eqxrl.vision.patchify`); no class token."""
        check_float_image(x, "ViT", self.in_channels)
        if x.shape[:2] != self.image_size:
            raise ValueError(
                f"ViT was built for image_size={self.image_size}; got an image of "
                f"{x.shape[:2]}. Rebuild it with image_size={x.shape[:2]} or resize."
            )
        patches = conv(self.patch_embed, x)  # (h / p, w / p, dim)
        tokens = jnp.reshape(patches, (-1, patches.shape[-1]))  # (h * w / p^2, dim)
        return tokens + self.pos_embed[-tokens.shape[0]:]

    def transform(self, tokens: Float[Array, "n dim"], *,
                  key: PRNGKeyArray | None = None) -> Float[Array, "n_out dim"]:
        """Prepend the class token (if any), run the blocks and the final norm."""
        if self.cls_token is not None:
            tokens = jnp.concatenate([self.cls_token + self.pos_embed[:1], tokens])
        return jax.vmap(self.norm)(run_blocks(self.blocks, tokens, key))

    def __call__(
        self, x: Float[Array, "height width channels"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " dim"]:
        """Encode one float image of exactly `image_size`."""
        tokens = self.transform(self.patch_tokens(x), key=key)
        return tokens[0] if self.cls_token is not None else jnp.mean(tokens, axis=0)
