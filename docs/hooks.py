"""MkDocs hook: the pages' parts that are made from the code, so they cannot drift from it.

- `<!-- readme -->`: the README, the site's front page (its links made relative to docs/).
- `<!-- about: sac -->`: the algorithm file's opening docstring (paper, maths, commands).
- `<!-- flags: sac -->`: the tables of `python algorithms/sac.py --help`, read from tyro's
  parser of `sac.Config` (flags, defaults and help texts).
- `<!-- metrics: sac -->`: the metric names `sac.update` returns, traced with `jax.eval_shape`
  on a tiny batch (nothing is computed).
- `<!-- exports: eqxrl -->`: the top-level names, each linked to its subpackage's entry.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pathlib
import re
import typing
import warnings

import jax
import jax.numpy as jnp

MARKER = re.compile(r"<!-- (about|flags|metrics|exports): (\w+) -->")
DEFAULT = re.compile(r"\s*\(default: (.*)\)\s*$", flags=re.DOTALL)
SECTIONS = {  # nested config class -> its section heading and the reference page naming it
    "OnlineRun": "Run settings (`eqxrl.OnlineRun`)",
    "OfflineRun": "Run settings (`eqxrl.OfflineRun`)",
    "OnPolicyRun": "Run settings (`eqxrl.OnPolicyRun`)",
    "Networks": "Network family, weight decay and resets (`eqxrl.Networks`)",
    "Finetune": "Offline → online fine-tuning (`eqxrl.Finetune`)",
    "EncoderConfig": "Image encoder (`eqxrl.vision.EncoderConfig`)",
}


def on_page_markdown(markdown, page, config, files):
    """Replace each marker of the page by what the code says, and `<!-- readme -->` by the
    README, its links made relative to `docs/` (the README is the site's front page)."""
    if "<!-- readme -->" in markdown:
        root = pathlib.Path(config["docs_dir"]).parent
        readme = (root / "README.md").read_text(encoding="utf-8")
        readme = readme.replace("](docs/", "](")
        readme = readme.replace("](benchmarks/README.md", "](benchmarks.md")
        markdown = markdown.replace("<!-- readme -->", readme)
    return MARKER.sub(lambda m: FILL[m.group(1)](m.group(2)), markdown)


def _module(algo: str):
    return importlib.import_module(f"eqxrl.algorithms.{algo}")


def _sections(config_cls) -> dict[str, str]:
    """Flag name -> section of the flags the nested configs (run, networks, encoder) add."""
    hints = typing.get_type_hints(config_cls, include_extras=True)
    owner = {}
    for field in dataclasses.fields(config_cls):
        cls = typing.get_args(hints[field.name])[0] if typing.get_args(hints[field.name]) \
            else hints[field.name]
        if dataclasses.is_dataclass(cls) and cls.__name__ in SECTIONS:
            for inner in dataclasses.fields(cls):
                owner["--" + inner.name.replace("_", "-")] = SECTIONS[cls.__name__]
    return owner


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def about(algo: str) -> str:
    """The algorithm file's opening docstring: its paper, its maths and its commands (the
    paragraphs of `Run:`/`Help:` lines as a code block)."""
    import inspect

    text = inspect.getdoc(_module(algo)) or ""
    out = []
    for paragraph in text.split("\n\n"):
        if "python algorithms/" in paragraph:  # the Run:/Help: lines
            out.append("```text\n" + paragraph + "\n```")
        else:  # maths such as `a*` is not emphasis: escape `*` outside code spans
            parts = paragraph.split("`")
            out.append("`".join(p if i % 2 else p.replace("*", "\\*")
                                for i, p in enumerate(parts)))
    return "\n\n".join(out)


def flags(algo: str) -> str:
    """Markdown tables of an algorithm's flags: its own first, then each shared section."""
    import tyro

    config_cls = _module(algo).Config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parser = tyro.extras.get_parser(config_cls)
    owner = _sections(config_cls)
    tables: dict[str, list[str]] = {}
    for action in parser._actions:
        names = [o for o in action.option_strings if o.startswith("--")]
        if not names or names[0] == "--help":
            continue
        text = action.help or ""
        match = DEFAULT.search(text)
        default = match.group(1) if match else ""
        text = DEFAULT.sub("", text)
        row = f"| `{' / '.join(names)}` | `{_cell(default)}` | {_cell(text)} |"
        heading = owner.get(names[0], f"`{algo}.Config`: the algorithm's own")
        tables.setdefault(heading, []).append(row)
    out = []
    for heading, rows in tables.items():
        out += [f"**{heading}**", "", "| flag | default | what it sets |", "|---|---|---|"]
        out += rows + [""]
    return "\n".join(out)


def _example(algo: str):
    """A tiny spec, config and batch on which the algorithm's update can be traced."""
    from eqxrl.core import EnvSpec, NStepTransition, Rollout, SarsaTransition

    module = _module(algo)
    discrete = algo in ("dqn", "cql_discrete")
    spec = EnvSpec(jax.ShapeDtypeStruct((3,), jnp.float32), (), True, 2) if discrete else \
        EnvSpec(jax.ShapeDtypeStruct((3,), jnp.float32), (1,), action_low=(-1.0,),
                action_high=(1.0,))
    if algo == "drq":
        spec = EnvSpec(jax.ShapeDtypeStruct((84, 84, 9), jnp.uint8), (1,), action_low=(-1.0,),
                       action_high=(1.0,), frame_stack=3)
    config = module.Config()
    row = spec.example_transition()
    if algo == "dqn":
        row = NStepTransition(row.obs, row.action, jnp.zeros((3,)), row.next_obs,
                              row.terminated, jnp.ones((), jnp.int32))
    if algo == "rebrac":  # its rows carry the data's next action
        row = SarsaTransition(*(getattr(row, f) for f in ("obs", "action", "reward", "next_obs",
                                                           "terminated", "truncated")),
                              row.action, jnp.ones((), bool))
    if algo == "ppo":
        row = Rollout(row.obs, row.action, row.reward, row.next_obs, row.terminated,
                      row.truncated, {"log_prob": jnp.zeros(()), "value": jnp.zeros(())})
        batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (4, 2) + jnp.shape(x)), row)
    else:
        batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (4,) + jnp.shape(x)), row)
    return module, spec, config, batch


# What each metric name means, by its last part (and, where that is ambiguous, its full name).
MEANING = {
    "loss": "the loss this group's optimiser step minimised (mean over the batch)",
    "grad_norm": "global L2 norm of that step's gradients",
    "critic/q_mean": "mean Q(s, a) of the batch's actions (over critics and batch)",
    "actor/q_mean": "mean Q(s, μ(s)) of the actor's actions",
    "q/q_mean": "mean Q(s, a) of the batch's actions",
    "target_q_mean": "mean TD target",
    "target_mean": "mean TD target of the n-step windows",
    "td_abs": "mean absolute TD error",
    "actor/entropy": "entropy estimate −mean log π(a|s) of the actions sampled for the loss",
    "entropy": "mean entropy of the policy's distribution",
    "temperature/value": "the entropy temperature α",
    "advantage_mean": "mean advantage min Q̄(s, a) − V(s) over the batch",
    "log_prob": "mean log π(a|s) of the dataset's actions",
    "weight_mean": "mean advantage weight min(exp(β·(Q − V)), max weight)",
    "weight_max": "largest advantage weight in the batch",
    "v_mean": "mean V(s)", "v_min": "smallest V(s)", "v_max": "largest V(s)",
    "cql_gap": "the conservative gap: soft maximum of Q over actions minus Q of the data's",
    "td_loss": "the TD part of the critic loss, without the conservative term",
    "logsumexp": "mean logsumexp over actions of Q(s, ·)",
    "accuracy": "fraction of states whose most likely (greedy) action is the dataset's",
    "bc_mse": "mean squared distance of μ(s) to the dataset's action",
    "lambda": "the weight λ of the actor's Q term: α / mean |Q(s, μ(s))| (TD3+BC), "
              "1 / mean |min Q(s, μ(s))| (ReBRAC with --normalize-q)",
    "bc_penalty": "mean of ‖μ(s) − a‖² (summed over action dimensions) to the dataset's action",
    "next_bc_penalty": "mean of ‖ã' − a'‖² between the smoothed target action and the data's "
                       "next action (0 on rows without one, and online)",
    "bc_weight": "the actor's penalty weight β₁ of this update (online: decaying to "
                 "--finetune-bc-floor · β₁)",
    "mse": "mean squared distance of the policy's mode to the dataset's action",
    "policy_loss": "the clipped surrogate loss", "value_loss": "the value loss",
    "approx_kl": "approximate KL divergence of the new policy from the old, mean((ρ − 1) − log ρ)",
    "clip_fraction": "fraction of probability ratios ρ outside [1 − ε, 1 + ε]",
    "explained_variance": "1 − Var(G − V) / Var(G) over the rollout, G its value targets (GAE)",
    "reward_scale": "what rewards are divided by: max(√(Var G + ε), max |G| / g_max) over the "
                    "discounted returns G of the env steps so far (SimbaV2)",
    "learning_rate": "the learning rate of this update (linear to 0 with --anneal-lr, the default)",
}


def _meaning(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    text = MEANING.get(name) or MEANING.get(last)
    if text is None:
        raise ValueError(f"docs/hooks.py: no meaning for the metric {name!r}; add it to MEANING")
    return text


def metrics(algo: str) -> str:
    """The metric names an algorithm's `update` returns, each with its meaning."""
    module, spec, config, batch = _example(algo)
    key = jax.random.key(0)

    def names():
        state = module.init(key, spec, config)
        return module.update(state, batch, key, config)[1]

    shapes = jax.eval_shape(names)
    return "\n".join(f"- `{name}`: {_meaning(name)}" for name in sorted(shapes))


def _is_submodule(path: str) -> bool:
    try:
        return importlib.util.find_spec(path) is not None
    except ModuleNotFoundError:
        return False


def exports(package: str) -> str:
    """A table of the names `package` (eqxrl) re-exports, each linked to its subpackage's
    reference entry."""
    top = importlib.import_module(package)
    subs = ["core", "nn", "data", "rl", "envs", "vision", "datasets", "run", "loops"]
    rows = ["| name | documented as |", "|---|---|"]
    for name in top.__all__:
        home = next((s for s in subs
                     if name in getattr(importlib.import_module(f"{package}.{s}"), "__all__", ())),
                    None)
        if home is None:
            raise ValueError(f"{package}.{name} is in no subpackage's __all__")
        target = f"{package}.{home}.{name}"
        if _is_submodule(target):
            target += "." + name  # a function named as its module (`eqxrl.core.jit.jit`)
        rows.append(f"| `{package}.{name}` | [`{package}.{home}.{name}`][{target}] |")
    return "\n".join(rows)


FILL = {"about": about, "flags": flags, "metrics": metrics, "exports": exports}
