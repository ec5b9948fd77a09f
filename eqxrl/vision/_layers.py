"""Small building blocks shared by the encoders (not public API)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def check_float_image(x: Array, owner: str, channels: int) -> None:
    """Raise an actionable error unless `x` is one float `(height, width, channels)` image.

    Every check reads static shapes and dtypes, so it runs once per trace and costs nothing
    in the compiled program.
    """
    if x.ndim != 3:
        raise ValueError(
            f"{owner} takes ONE image of shape (height, width, channels); got shape {x.shape}. "
            "For a batch use jax.vmap (and axis_name='batch' for BatchNorm encoders); for "
            "(frames, height, width, channels) stacks call eqxrl.vision.stack_frames first."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{owner} takes a float image in [0, 1]; got dtype {x.dtype}. Convert with "
            "eqxrl.vision.to_float, or wrap the encoder in eqxrl.vision.PixelEncoder, which "
            "takes uint8 images and converts them inside."
        )
    check_channels_last(x.shape, owner, channels)


def check_channels_last(shape: tuple[int, ...], owner: str, channels: int) -> None:
    """Raise unless `shape` is `(height, width, channels)`; name a channels-first mix-up."""
    if shape[-1] == channels:
        return
    want = f"expected (height, width, {channels}) with channels last"
    if shape[0] == channels:
        raise ValueError(
            f"{owner}: image has shape {shape}: {want}; it looks channels-first, transpose it "
            "with jnp.moveaxis(x, 0, -1)."
        )
    n = shape[-1]
    raise ValueError(
        f"{owner}: image has shape {shape}: {want}, got {n} channel{'s' * (n != 1)}. Build the "
        f"encoder for them (make_encoder(..., in_channels={n})) or convert the images; "
        "stacked frames count as frames * channels."
    )


def max_pool(
    x: Float[Array, "height width channels"],
    window: int,
    stride: int,
    padding: str | tuple[tuple[int, int], tuple[int, int]],
) -> Float[Array, "out_height out_width channels"]:
    """Max-pool a channels-last feature map; explicit padding pads with -inf so it never wins."""
    if not isinstance(padding, str):
        padding = (*padding, (0, 0))
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (window, window, 1), (stride, stride, 1), padding
    )


def conv(
    layer: eqx.nn.Conv2d, x: Float[Array, "height width in_channels"]
) -> Float[Array, "out_height out_width out_channels"]:
    """Apply `layer` to a channels-last feature map.

    The layer keeps Equinox's parameters (weight `(out, in, kh, kw)`, bias `(out, 1, 1)`), so
    `.eqx` files and torchvision state dicts load unchanged, but the convolution runs in the
    (height, width, channels) layout that XLA:CPU's convolution kernels use. Calling the
    layer itself (channels-first) made XLA transpose every activation around every
    convolution: DrQ's update at batch 256 ran ~9% slower (`benchmarks/vision.py`).
    """
    if layer.padding_mode != "ZEROS":
        raise ValueError(
            f"conv: padding_mode={layer.padding_mode!r} is not supported; build the layer with "
            "padding_mode='ZEROS'.")
    y = jax.lax.conv_general_dilated(
        x[None],
        layer.weight,
        window_strides=layer.stride,
        padding=layer.padding,
        rhs_dilation=layer.dilation,
        feature_group_count=layer.groups,
        dimension_numbers=("NHWC", "OIHW", "NHWC"),
    )[0]
    return y if layer.bias is None else y + jnp.reshape(layer.bias, (1, 1, -1))


def normal(key: PRNGKeyArray, shape: tuple[int, ...], std: float) -> Float[Array, "..."]:
    """`std * N(0, 1)` of `shape`, drawn so that few distinct XLA programs are compiled.

    Every new shape given to `jax.random` compiles a program (about 0.5 s on a small CPU,
    which made building a ResNet take 20 s). Drawing a power-of-two-long vector and
    slicing it bounds the random-number programs to one per power of two.
    """
    n = math.prod(shape)
    padded = 1 << max(n - 1, 0).bit_length()
    return std * jnp.reshape(jax.random.normal(key, (padded,))[:n], shape)


def uniform(key: PRNGKeyArray, shape: tuple[int, ...], bound: float) -> Float[Array, "..."]:
    """`U[-bound, bound]` of `shape`, with the same compilation sharing as `normal`."""
    n = math.prod(shape)
    padded = 1 << max(n - 1, 0).bit_length()
    draw = jax.random.uniform(key, (padded,), minval=-bound, maxval=bound)
    return jnp.reshape(draw[:n], shape)


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int | str = 0,
    use_bias: bool = True,
    init: str = "lecun_uniform",
    key: PRNGKeyArray,
) -> eqx.nn.Conv2d:
    """Conv2d initialised by `init`: "lecun_uniform" (Equinox's and PyTorch's default:
    weights and bias ~ U[+-1/sqrt(fan_in)]) or "he_normal" (torchvision's ResNet init:
    N(0, 2 / fan_out), zero bias)."""
    conv = eqx.filter_eval_shape(
        lambda: eqx.nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            use_bias=use_bias,
            key=jax.random.key(0),
        )
    )
    k_w, k_b = jax.random.split(key)
    shape = (out_channels, in_channels, kernel_size, kernel_size)
    if init == "he_normal":
        weight = normal(k_w, shape, math.sqrt(2.0 / (out_channels * kernel_size**2)))
        bias = jnp.zeros((out_channels, 1, 1)) if use_bias else None
    elif init == "lecun_uniform":
        bound = 1.0 / math.sqrt(in_channels * kernel_size**2)
        weight = uniform(k_w, shape, bound)
        bias = uniform(k_b, (out_channels, 1, 1), bound) if use_bias else None
    else:
        raise ValueError(f"conv2d: init must be 'he_normal' or 'lecun_uniform'; got {init!r}.")
    return eqx.tree_at(lambda c: (c.weight, c.bias), conv, (weight, bias), is_leaf=_is_none)


def linear(in_features: int, out_features: int, *, key: PRNGKeyArray) -> eqx.nn.Linear:
    """Linear layer with Equinox's default init (U[+-1/sqrt(in_features)]), drawn cheaply."""
    layer = eqx.filter_eval_shape(
        lambda: eqx.nn.Linear(in_features, out_features, key=jax.random.key(0))
    )
    k_w, k_b = jax.random.split(key)
    bound = 1.0 / math.sqrt(in_features)
    weight = uniform(k_w, (out_features, in_features), bound)
    bias = uniform(k_b, (out_features,), bound)
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, (weight, bias))


def _is_none(x) -> bool:
    return x is None


def feature_map_size(
    pooling: str, image_size: tuple[int, int] | None, owner: str, halvings: int
) -> tuple[int, int]:
    """Feature-map size after `halvings` stride-2 steps of `ceil(n / 2)`; spatial heads need it."""
    if pooling in ("avg", "flatten"):
        return 0, 0
    if image_size is None:
        raise ValueError(
            f"{owner}(pooling={pooling!r}) needs the input size to build its head: pass "
            "image_size=(height, width)."
        )
    h, w = image_size
    for _ in range(halvings):
        h, w = -(-h // 2), -(-w // 2)
    return h, w
