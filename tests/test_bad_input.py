"""Bad input, by surface: each case checks the message (it names the flag or file, the value and
the fix), and on the command line that it is one `error:` line with exit code 2.

A new flag or file format adds its cases beside the others of its surface. Older surfaces keep
their cases in their own modules' tests (seeds, grids over unmarked fields, replay buffers,
shapes, encoders by name).
"""

import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
import eqxrl.tools.plot
from eqxrl.algorithms import cql, crossq, iql, sac, td3, tqc
from eqxrl.core.checks import ConfigError
from eqxrl.core.types import Transition

FIXTURE = Path(__file__).parent / "data" / "sac_run_v0_1"  # SAC on Pendulum, checkpoints 200, 300


def refused(capsys, args, config_class=sac.Config, main=sac.main) -> str:
    """Run the command line on `args`; it must exit 2 with one `error:` line; return it."""
    with pytest.raises(SystemExit) as exit_info:
        eqxrl.cli(main, config_class, args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


@pytest.fixture
def run_dir(tmp_path):
    """A copy of a finished SAC run folder (300 steps)."""
    return str(shutil.copytree(FIXTURE, tmp_path / "run"))


# --- several processes -------------------------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--coordinator", "localhost:1234"], "--coordinator localhost:1234 has no effect in a "
                                          "one-process run"),
    (["--process-id", "0"], "--process-id 0 has no effect in a one-process run"),
    (["--num-processes", "2", "--coordinator", "localhost", "--process-id", "0"],
     "--coordinator must be HOST:PORT"),
    (["--num-processes", "2", "--coordinator", "localhost:99999", "--process-id", "0"],
     "a port in 1..65535"),
    (["--num-processes", "2", "--coordinator", "localhost:1234"],
     "--coordinator without --process-id"),
    (["--num-processes", "2", "--process-id", "3", "--coordinator", "h:1"],
     "--process-id must be in [0, 1], got 3"),
    (["--process-timeout", "0"], "--process-timeout must be >= 1, got 0"),
    (["--num-processes", "2", "--coordinator", "h:1", "--process-id", "0"],
     "--num-processes 2 with one agent: the online loops split agents over processes"),
])
def test_process_settings_are_checked_before_anything_starts(capsys, args, says):
    assert says in refused(capsys, args)


def test_lazy_images_over_several_processes_are_refused_before_they_start():
    with pytest.raises(ConfigError, match=r"--lazy-images reads batches on this host; it does "
                                          r"not combine with --num-processes 2"):
        eqxrl.OfflineRun(lazy_images=True, num_processes=2, coordinator="h:1", process_id=0)


def test_a_peer_whose_coordinator_never_answers_ends_by_its_deadline():
    with socket.socket() as s:  # a free port that nobody listens on
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    run = eqxrl.OnlineRun(num_processes=2, process_id=1, coordinator=f"localhost:{port}",
                          process_timeout=1, num_seeds=2)
    with pytest.raises(ConfigError, match=rf"--coordinator localhost:{port}: process 0 did not "
                                          r"answer within --process-timeout 1 s"):
        eqxrl.run.processes.connect(run)


def test_no_cluster_and_no_coordinator_says_which_flags_to_pass(monkeypatch):
    # What jax.distributed says when no cluster is detected (here JAX runs already, so the real
    # call would refuse for that reason; tests/test_run_multihost.py starts real processes).
    def undetected(*args, **kwargs):
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", undetected)
    run = eqxrl.OnlineRun(num_processes=2, num_seeds=2)
    with pytest.raises(ConfigError, match=r"--num-processes 2: .*start every process with "
                                          r"--coordinator HOST:PORT"):
        eqxrl.run.processes.connect(run)


# --- grids ---------------------------------------------------------------------------------------

def test_a_grid_with_a_repeated_value_is_refused(capsys):
    line = refused(capsys, ["--tau", "0.005", "0.005"])
    assert "--tau must be distinct values in a grid, got (0.005, 0.005)" in line
    assert "--num-seeds" in line


# --- network options (SAC, TD3, CrossQ, TQC) ----------------------------------------------------

@pytest.mark.parametrize("algorithm", [iql, cql])
def test_network_options_on_an_algorithm_without_them_are_one_error_line(capsys, algorithm):
    line = refused(capsys, ["--network", "simba"], algorithm.Config, algorithm.main)
    assert "--network is not an option of this algorithm" in line
    assert "sac, td3, crossq, tqc" in line
    line = refused(capsys, ["--reset-interval=5"], algorithm.Config, algorithm.main)
    assert "--reset-interval is not an option" in line


@pytest.mark.parametrize("options, says", [
    ({"reset_interval": 0}, r"--reset-interval must be >= 1 update, got 0"),
    ({"network": "simba", "weight_decay": float("nan")}, r"--weight-decay must be a finite"),
    ({"reset_networks": ("actor",)}, r"--reset-networks take\(s\) effect only with "
                                     r"--reset-interval N, which this run does not have"),
    ({"reset_optimizer": False}, r"--reset-optimizer take\(s\) effect only with"),
])
def test_network_settings_name_the_flag(options, says):
    with pytest.raises(ConfigError, match=says):
        sac.Config(net=eqxrl.Networks(**options))


def test_mlp_options_with_simba_are_refused():
    with pytest.raises(ConfigError, match=r"--critic-dropout is an option of the plain MLP"):
        sac.Config(net=eqxrl.Networks(network="simba"), critic_dropout=0.01)
    for module, field in [(sac, "hidden_dims"), (td3, "hidden_dims"),
                          (tqc, "critic_hidden_dims"), (crossq, "critic_hidden_dims")]:
        with pytest.raises(ConfigError, match=rf"--{field.replace('_', '-')} size\(s\) the plain "
                                              r"MLP, which --network simba replaces"):
            module.Config(net=eqxrl.Networks(network="simba"), **{field: (64, 64)})


# --- env ids -------------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id, says", [
    ("gymax:Pendulum-v1", "Did you mean gymnax:Pendulum-v1?"),
    ("nosuchpkg:Foo-v0", "'nosuchpkg' is neither one of eqxrl's prefixes"),
    ("Pendulm-v1", "could not be made by gymnasium"),
    ("pixels:NoSuch-v0", "gymnasium could not make 'NoSuch-v0' to render"),
])
def test_an_env_id_typo_is_one_error_line(capsys, env_id, says):
    line = refused(capsys, ["--env-id", env_id, "--total-steps", "300", "--start-steps", "100"])
    assert says in line and "Did you mean: `Pendulum`?." not in line


@pytest.mark.parametrize("env_id", ["", "  "])
def test_make_env_refuses_what_is_not_an_env_id(env_id):
    with pytest.raises(ConfigError, match=r"env_id must be an env id such as 'Pendulum-v1'"):
        eqxrl.make_env(env_id)


def test_make_env_of_none_names_the_argument():
    # the annotation's runtime check (jaxtyping + beartype) speaks before the body does
    with pytest.raises((ConfigError, TypeError), match=r"env_id[\s\S]*None"):
        eqxrl.make_env(None)


def _plant_env_id(run_dir: str, env_id: str) -> None:
    path = Path(run_dir) / "config.json"
    record = json.loads(path.read_text())
    record["config"]["run"]["env_id"] = env_id
    path.write_text(json.dumps(record))


def test_an_env_id_from_a_run_folder_imports_no_module(capsys, run_dir, tmp_path, monkeypatch):
    # `plantedenv:Env-v0` would make gymnasium import plantedenv; the module writes a file.
    (tmp_path / "plantedenv.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _plant_env_id(run_dir, "plantedenv:Env-v0")
    line = refused(capsys, ["--resume", run_dir, "--total-steps", "400"])
    assert "would make gymnasium import the module 'plantedenv'" in line
    assert "--env-id plantedenv:Env-v0" in line
    with pytest.raises(ConfigError, match="import plantedenv` in Python before loading"):
        eqxrl.load_policy(run_dir)
    assert not (tmp_path / "imported").exists() and "plantedenv" not in sys.modules


def test_an_env_id_from_a_dataset_imports_no_module(tmp_path):
    obs = jnp.zeros((4, 3))
    dataset = eqxrl.Dataset(Transition(obs, jnp.zeros((4, 1)), jnp.zeros(4), obs,
                                       jnp.zeros(4, bool), jnp.array([False] * 3 + [True])))
    path = str(tmp_path / "planted.hdf5")
    eqxrl.datasets.save_hdf5(path, dataset, eqxrl.datasets.DatasetInfo(env_id="plantedenv:E-v0"))
    config = iql.Config(run=eqxrl.OfflineRun(dataset=path))
    with pytest.raises(ConfigError, match=r"the metadata of --dataset .*planted\.hdf5"):
        eqxrl.loops.offline.prepare_dataset(config)


# --- run folders ---------------------------------------------------------------------------------

def test_resuming_another_algorithms_run_names_its_algorithm(capsys, run_dir):
    line = refused(capsys, ["--resume", run_dir], td3.Config, td3.main)
    assert "that run was trained by sac (eqxrl.algorithms.sac), not by td3" in line
    assert f"python algorithms/sac.py --resume {run_dir}" in line


def test_a_budget_below_the_newest_checkpoint_is_blamed_on_the_budget(capsys, run_dir):
    line = refused(capsys, ["--resume", run_dir, "--total-steps", "250"])
    assert "--total-steps 250 is below the step of its newest checkpoint (300)" in line
    assert "--start-steps" not in line


@pytest.mark.parametrize("text, says", [
    ("{bad", "is not valid JSON"),
    ('{"algorithm": "sac", "config": {}}', "lacks ['module']"),
])
def test_a_damaged_config_json_is_one_error_line(capsys, run_dir, text, says):
    (Path(run_dir) / "config.json").write_text(text)
    line = refused(capsys, ["--resume", run_dir])
    assert says in line and "config.json" in line


def test_a_missing_run_folder_is_one_error_line(capsys, tmp_path):
    line = refused(capsys, ["--resume", str(tmp_path / "nowhere")])
    assert "is not a run folder: it has no config.json" in line


# --- JAX-native envs ----------------------------------------------------------------------------

def test_a_jax_env_step_with_a_wrong_action_shape_names_both_shapes():
    pytest.importorskip("gymnax")
    env = eqxrl.make_jax_env("gymnax:Pendulum-v1")
    obs, state = env.reset(jax.random.key(0))
    with pytest.raises(ValueError, match=r"action has shape \(3,\), expected \(1,\).*jax\.vmap"):
        env.step(jax.random.key(1), state, jnp.zeros(3))


# --- encoder weights ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, content, says", [
    ("missing.safetensors", None, "no file at"),
    ("weights.txt", b"hello", "has suffix '.txt'; expected .eqx"),
    ("garbage.safetensors", b"\x00garbage", "is not a readable .safetensors file"),
    ("garbage.npz", b"\x00garbage", "is not a readable .npz file"),
])
def test_bad_encoder_weight_files_say_what_is_wrong_with_them(tmp_path, name, content, says):
    if name.endswith(".safetensors"):
        pytest.importorskip("safetensors")
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(says)):
        eqxrl.vision.load_encoder("resnetv1-18", path)


def test_freezing_an_encoder_without_weights_is_warned_about():
    with pytest.warns(UserWarning, match="--freeze-encoder without --encoder-weights"):
        eqxrl.vision.EncoderConfig(freeze_encoder=True)


# --- dataset files ------------------------------------------------------------------------------

def _tiny_dataset(rows: int = 6):
    obs = jnp.zeros((rows, 3))
    return eqxrl.Dataset(Transition(obs, jnp.zeros((rows, 1)), jnp.zeros(rows), obs,
                                    jnp.zeros(rows, bool), jnp.arange(rows) % 3 == 2))


@pytest.fixture(scope="module")
def minari_folder(tmp_path_factory):
    pytest.importorskip("minari")
    folder = tmp_path_factory.mktemp("minari") / "tiny"
    eqxrl.datasets.save_minari(folder, _tiny_dataset(),
                               eqxrl.datasets.DatasetInfo(env_id="Pendulum-v1"))
    return folder


def _data_file(folder: Path) -> Path:
    return next(folder.rglob("*.hdf5"))


@pytest.mark.parametrize("damage", ["no data file", "bad metadata.json", "truncated data"])
def test_a_damaged_minari_folder_names_the_folder_and_the_fix(minari_folder, tmp_path, damage):
    folder = shutil.copytree(minari_folder, tmp_path / "copy")
    data = _data_file(folder)
    if damage == "no data file":
        data.unlink()
    elif damage == "bad metadata.json":
        next(folder.rglob("metadata.json")).write_text("{not json")
    else:
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    with pytest.raises(eqxrl.datasets.DatasetError,
                       match=r"the Minari dataset cannot be read .*main_data\.hdf5"):
        eqxrl.datasets.load_dataset(str(folder))


# --- plots ----------------------------------------------------------------------------------------

def _eval_run(path: Path, seed: int, steps: tuple[int, ...]) -> str:
    shutil.copytree(FIXTURE, path, ignore=shutil.ignore_patterns("eval.csv", "checkpoints"))
    record = json.loads((path / "config.json").read_text())
    record["config"]["run"]["seed"] = seed
    (path / "config.json").write_text(json.dumps(record))
    logger = eqxrl.run.Logger(str(path), tensorboard=False)
    for step in steps:
        logger.log({"return_mean": -float(step)}, step, group="eval")
    logger.close()
    return str(path)


def test_a_curve_of_one_evaluation_is_drawn_as_a_point(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda ax, *a, **k: drawn.append(k) or original(ax, *a, **k))
    run = _eval_run(tmp_path / "one", 0, (300,))
    eqxrl.tools.plot.plot(eqxrl.tools.plot.PlotArgs(runs=(run,), out=str(tmp_path / "a.png")))
    assert [k["marker"] for k in drawn] == ["o"]


def test_seeds_without_a_common_evaluation_are_refused(tmp_path):
    pytest.importorskip("matplotlib")
    runs = (_eval_run(tmp_path / "a", 0, (100, 200)), _eval_run(tmp_path / "b", 1, (150, 250)))
    with pytest.raises(ValueError, match="its runs share no evaluated step"):
        eqxrl.tools.plot.plot(eqxrl.tools.plot.PlotArgs(runs=runs, out=str(tmp_path / "b.png")))


def test_the_plot_command_line_gives_one_error_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    run = _eval_run(tmp_path / "a", 0, (100, 200))
    monkeypatch.setattr(sys, "argv", ["eqxrl-plot", run, "--metric", "nope"])
    with pytest.raises(SystemExit) as exit_info:
        eqxrl.tools.plot.cli()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "has no column 'nope'" in err and "\n" not in err


@pytest.mark.parametrize("damage, says", [
    ("out", r"--out .*missing/x\.png: its folder .*missing does not exist"),
    ("header only", r"eval\.csv holds no evaluation yet \(no rows\)"),
    ("garbage", r"eval\.csv: row 2 holds 'garbage' in column 'step', not a number"),
])
def test_the_plot_names_a_missing_folder_or_a_damaged_eval_csv(tmp_path, monkeypatch, capsys,
                                                               damage, says):
    pytest.importorskip("matplotlib")
    run = _eval_run(tmp_path / "a", 0, (100, 200))
    csv = Path(run) / "eval.csv"
    lines = csv.read_text().splitlines()
    if damage == "header only":
        csv.write_text(lines[0] + "\n")
    if damage == "garbage":
        csv.write_text("\n".join([lines[0], lines[1], "garbage" + lines[2][3:]]) + "\n")
    out = tmp_path / ("missing" if damage == "out" else "") / "x.png"
    monkeypatch.setattr(sys, "argv", ["eqxrl-plot", run, "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        eqxrl.tools.plot.cli()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and re.search(says, err), err


# --- the Python API -----------------------------------------------------------------------------

def test_dataset_sample_of_no_rows_is_refused():
    with pytest.raises(ValueError, match=r"Dataset.sample: batch_size must be >= 1, got 0"):
        _tiny_dataset().sample(jax.random.key(0), 0)
    buffer = eqxrl.ReplayBuffer.from_dataset(_tiny_dataset())
    with pytest.raises(ValueError, match=r"ReplayBuffer.sample: batch_size must be >= 1, got 0"):
        buffer.sample(jax.random.key(0), 0)


def test_a_pixel_option_of_a_bad_value_names_the_value_not_the_option():
    with pytest.raises(ValueError, match=r"frame_stack must be a whole number >= 1, got '0'"):
        eqxrl.make_env("pixels:Pendulum-v1,frame_stack=0")


def test_a_normalizer_names_both_shapes():
    normalizer = eqxrl.Normalizer.identity(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(5, 4\) do not end in the shape \(3,\)"):
        normalizer(jnp.zeros((5, 4)))
    assert normalizer(jnp.ones((5, 3))).shape == (5, 3)


@pytest.mark.parametrize("name, options, says", [
    ("impala", {"in_channels": 0}, "in_channels must be a positive size, got 0"),
    ("vit-ti16", {"in_channels": 3, "image_size": 0}, "image_size must be a positive size"),
    ("vit-ti16", {"in_channels": 3, "image_size": (0, 0)}, "got (0, 0)"),
])
def test_make_encoder_refuses_empty_images(name, options, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        eqxrl.vision.make_encoder(name, key=jax.random.key(0), **options)


@pytest.mark.parametrize("preset", ["none", "locomotion", "antmaze"])
def test_actions_outside_the_unit_box_are_refused_whatever_the_preset(tmp_path, preset):
    dataset = _tiny_dataset()
    data = dataset.data
    dataset = eqxrl.Dataset(Transition(data.obs, jnp.full((6, 1), 2.0), jnp.arange(6.0),
                                       data.next_obs, data.terminated, data.truncated))
    path = str(tmp_path / "env_units.hdf5")
    eqxrl.datasets.save_hdf5(path, dataset, eqxrl.datasets.DatasetInfo(env_id="Pendulum-v1"))
    config = iql.Config(run=eqxrl.OfflineRun(dataset=path, preset=preset))
    with pytest.raises(eqxrl.datasets.DatasetError,
                       match=r"actions range from 2.0 to 2.0 .*--rescale-actions"):
        eqxrl.loops.offline.prepare_dataset(config)


def test_a_dataset_with_nan_rewards_names_the_field_and_the_row(tmp_path):
    dataset = _tiny_dataset()
    data = dataset.data
    reward = jnp.arange(6.0).at[4].set(jnp.nan)
    dataset = eqxrl.Dataset(Transition(data.obs, data.action, reward, data.next_obs,
                                       data.terminated, data.truncated))
    path = str(tmp_path / "nan.hdf5")
    eqxrl.datasets.save_hdf5(path, dataset, eqxrl.datasets.DatasetInfo(env_id="Pendulum-v1"))
    config = iql.Config(run=eqxrl.OfflineRun(dataset=path))
    with pytest.raises(eqxrl.datasets.DatasetError,
                       match=r"nan\.hdf5': Key 'rewards' holds NaN or infinite values in 1 "
                             r"rows, first at row 4"):
        eqxrl.loops.offline.prepare_dataset(config)


class NanAt(gymnasium.Wrapper):
    """An env whose observation becomes NaN at its `at`-th step."""

    def __init__(self, env, at):
        super().__init__(env)
        self.at, self.steps = at, 0

    def step(self, action):
        obs, *rest = self.env.step(action)
        self.steps += 1
        return (obs * np.nan if self.steps == self.at else obs), *rest


def test_nan_check_names_an_env_that_returns_nan(tmp_path):
    config = sac.Config(hidden_dims=(8,), run=eqxrl.OnlineRun(
        env_id="Pendulum-v1", total_steps=40, start_steps=10, batch_size=8, eval_episodes=1,
        nan_check=True, progress=False, run_dir=str(tmp_path / "run"), tensorboard=False))
    with pytest.raises(FloatingPointError, match=r"--env-id Pendulum-v1 returned a NaN or inf "
                                                 r"observation or reward to agent 0 at env step 7"):
        eqxrl.train_online(config, sac, make_env=lambda env_id: NanAt(eqxrl.make_env(env_id), 7))


# ---------------------------------------------------------------------------- stacked agents
def _vector_spec(discrete=False):
    obs = jax.ShapeDtypeStruct((3,), jnp.float32)
    if discrete:
        return eqxrl.EnvSpec(obs, (), discrete=True, num_actions=2)
    return eqxrl.EnvSpec(obs, (1,), action_low=(-1.0,), action_high=(1.0,))


def _stacked_case(name):
    """An algorithm, a small config, and its spec (vector observations)."""
    from eqxrl import algorithms

    module = getattr(__import__("eqxrl.algorithms", fromlist=[name]), name)
    assert module is getattr(algorithms, name)
    offline = {"dataset": "unused.hdf5"}
    run = {"iql": eqxrl.OfflineRun(**offline), "cql": eqxrl.OfflineRun(**offline),
           "bc": eqxrl.OfflineRun(**offline), "td3_bc": eqxrl.OfflineRun(**offline),
           "cql_discrete": eqxrl.OfflineRun(**offline)}.get(name)
    config = module.Config(run=run) if run is not None else module.Config()
    return module, config, _vector_spec(discrete=name in ("dqn", "cql_discrete"))


@pytest.mark.parametrize("name", ["sac", "td3", "crossq", "tqc", "simbav2", "dqn", "ppo", "iql",
                                  "cql", "bc", "td3_bc", "cql_discrete"])
def test_a_stacked_state_without_vmap_names_the_agents_and_the_fix(name):
    module, config, spec = _stacked_case(name)
    keys = jax.random.split(jax.random.key(0), 3)
    states = jax.eval_shape(jax.vmap(lambda k: module.init(k, spec, config)), keys)
    obs = jnp.zeros((5, 3))
    says = (rf"{name}\.act got the state of 3 stacked agents \(its TrainState\.step has shape "
            r"\(3,\), expected \(\) for one agent\)\. Map it over the agents with jax\.vmap")
    with pytest.raises(ValueError, match=says):
        jax.eval_shape(lambda s: module.act(s, obs, jax.random.key(1), True), states)
    if name == "ppo":
        return  # its update takes a rollout; the same check is its first line
    batch = jax.tree.map(lambda x: jnp.zeros((5, *x.shape), x.dtype), spec.example_transition())
    if name == "dqn":  # n-step windows of 3
        batch = eqxrl.NStepTransition(batch.obs, batch.action, jnp.zeros((5, 3)), batch.next_obs,
                                      batch.terminated, jnp.ones(5, jnp.int32))
    with pytest.raises(ValueError, match=says.replace("act", "update")):
        jax.eval_shape(lambda s: module.update(s, batch, jax.random.key(1), config), states)


def test_one_agent_of_a_stacked_state_passes_the_check():
    config, spec = sac.Config(hidden_dims=(8,)), _vector_spec()
    keys = jax.random.split(jax.random.key(0), 2)
    states = jax.eval_shape(jax.vmap(lambda k: sac.init(k, spec, config)), keys)
    one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), states)
    act = jax.eval_shape(lambda s: sac.act(s, jnp.zeros((4, 3)), jax.random.key(1), True), one)
    assert act.shape == (4, 1)
    acts = jax.eval_shape(jax.vmap(lambda s: sac.act(s, jnp.zeros((4, 3)), jax.random.key(1))),
                          states)
    assert acts.shape == (2, 4, 1)


def _nan_after(step):
    """An explore hook whose actions become NaN from env step `step` on."""
    def explore(state, obs, key, env_step):
        action = sac.act(state, obs, key)
        return jnp.where(env_step >= step, jnp.nan, action)

    return eqxrl.OffPolicyHooks(explore=explore)


# The host loop, and the compiled one (in the slow step: ~10 to 15 s of compiling each).
HOST_AND_COMPILED = pytest.mark.parametrize("env_id", [
    "Pendulum-v1", pytest.param("gymnax:Pendulum-v1", marks=pytest.mark.slow)],
    ids=["host", "compiled"])


@HOST_AND_COMPILED
def test_nan_check_names_the_learner_for_a_nan_action(tmp_path, env_id):
    if env_id.startswith("gymnax:"):
        pytest.importorskip("gymnax")
    config = sac.Config(hidden_dims=(8,), run=eqxrl.OnlineRun(
        env_id=env_id, total_steps=40, start_steps=10, batch_size=8, eval_episodes=1,
        nan_check=True, progress=False, run_dir=str(tmp_path / "run"), tensorboard=False))
    train = eqxrl.train_compiled if env_id.startswith("gymnax:") else eqxrl.train_online
    says = (rf"agent 0 chose a NaN or inf action for --env-id {env_id} at env step 21 "
            r"\(nan_check is on\): the learner made it, not the env")
    with pytest.raises(FloatingPointError, match=says):
        train(config, sac, _nan_after(20))


def test_a_compiled_chunk_reports_its_earliest_bad_step_and_whom_it_blames():
    from eqxrl.loops.nan_check import BAD_ACTION, BAD_ENV, FINE, raise_first_bad, step_code

    assert int(step_code(jnp.array([jnp.nan]), jnp.zeros(3), 0.0)) == BAD_ACTION
    assert int(step_code(jnp.zeros(1), jnp.array([0.0, jnp.inf, 0.0]), 0.0)) == BAD_ENV
    assert int(step_code(jnp.zeros(1), jnp.zeros(3), jnp.nan)) == BAD_ENV
    assert int(step_code(jnp.array(1, jnp.int32), jnp.zeros(3), 0.0)) == FINE  # discrete
    codes = np.zeros((2, 6), np.int8)
    codes[0, 5], codes[1, 3] = BAD_ACTION, BAD_ENV
    raise_first_bad(np.zeros((2, 6), np.int8), "gymnax:Pendulum-v1", (0, 1), 101)
    says = (r"--env-id brax:ant returned a NaN or inf observation or reward to agent 7 at env "
            r"step 131 ")
    with pytest.raises(FloatingPointError, match=says):
        raise_first_bad(codes, "brax:ant", (4, 7), 101, steps_per_index=10)


@HOST_AND_COMPILED
def test_ppo_nan_check_names_the_learner_for_a_nan_action(tmp_path, env_id):
    import types

    if env_id.startswith("gymnax:"):
        pytest.importorskip("gymnax")
    from eqxrl.algorithms import ppo

    def explore(state, obs, key):
        action, aux = ppo.explore(state, obs, key)
        return action * jnp.nan, aux

    broken = types.ModuleType("broken_ppo")
    broken.__dict__.update({k: getattr(ppo, k) for k in ("Config", "State", "init", "update",
                                                         "act")}, explore=explore)
    config = ppo.Config(run=eqxrl.OnPolicyRun(
        env_id=env_id, num_envs=2, num_steps=8, total_steps=64, eval_episodes=1,
        nan_check=True, progress=False, run_dir=str(tmp_path / "run"), tensorboard=False),
        num_minibatches=2)
    with pytest.raises(FloatingPointError, match=rf"agent 0 chose a NaN or inf action for --env-id "
                                                 rf"{env_id} at env step 1 "):
        eqxrl.train_on_policy(config, broken)


# --- errors raised after parsing: one line too ----------------------------------------------------

@pytest.mark.parametrize("name, args, says", [
    ("sac", ["--env-id", "CartPole-v1"], r"SAC needs a continuous \(Box\) action space"),
    ("sac", ["--env-id", "pixels:Pendulum-v1"],
     r"SAC feeds observations to an MLP and has no image encoder, but this env's observations "
     r"hold images of shape \(84, 84, 9\).* For pixels use algorithms/drq.py or dqn.py"),
    ("sac", ["--seed", "-1"], r"--seed must be >= 0, got -1"),
    ("dqn", ["--env-id", "CartPole-v1", "--encoder", "impala"],
     r"--encoder impala has no effect: the observations hold no image"),
    ("ppo", ["--env-id", "CartPole-v1", "--init-log-std", "5"],
     r"--init-log-std 5.0 has no effect with discrete actions"),
])
def test_an_input_refused_after_parsing_is_one_error_line(capsys, tmp_path, name, args, says):
    module = getattr(__import__("eqxrl.algorithms", fromlist=[name]), name)
    line = refused(capsys, [*args, "--run-dir", str(tmp_path / "r"), "--no-progress"],
                   module.Config, module.main)
    assert re.search(says, line), line


def test_an_error_raised_outside_eqxrl_keeps_its_traceback(capsys, monkeypatch):
    from eqxrl.run.cli import command_line_errors

    with pytest.raises(ValueError, match="a bug in user code"), command_line_errors():
        raise ValueError("a bug in user code")  # raised here, in a test file: not eqxrl's
    with pytest.raises(SystemExit), command_line_errors():
        eqxrl.make_env("")  # eqxrl's own check
    assert capsys.readouterr().err.startswith("error: env_id must be an env id")
    monkeypatch.setenv("EQXRL_TRACEBACK", "1")  # every traceback kept, eqxrl's own too
    with pytest.raises(ConfigError, match="env_id must be an env id"), command_line_errors():
        eqxrl.make_env("")


@pytest.mark.parametrize("options, says", [
    ({"epsilon_start": 0.1, "epsilon_end": 0.5},
     r"--epsilon-end \(0.5\) must be finite and <= --epsilon-start \(0.1\)"),
    ({"loss": "mse", "huber_delta": 5.0},
     r"--huber-delta take\(s\) effect only with --loss huber, which this run does not have"),
])
def test_dqn_settings_without_effect_or_order_are_refused(options, says):
    from eqxrl.algorithms import dqn

    with pytest.raises(ConfigError, match=says):
        dqn.Config(**options)


def test_cql_lagrange_settings_without_the_lagrange_are_refused():
    with pytest.raises(ConfigError, match=r"--cql-target-gap take\(s\) effect only with "
                                          r"--cql-lagrange"):
        cql.Config(run=eqxrl.OfflineRun(dataset="unused.hdf5"), cql_target_gap=10.0)


def test_a_dataset_of_another_env_names_both_flags(capsys, tmp_path):
    from .conftest import pendulum_dataset_file

    path = pendulum_dataset_file(tmp_path / "pendulum.hdf5")
    line = refused(capsys, ["--dataset", str(path), "--env-id", "MountainCarContinuous-v0",
                            "--run-dir", str(tmp_path / "r"), "--no-progress"],
                   iql.Config, iql.main)
    assert re.search(r"--dataset .*pendulum\.hdf5 does not fit --env-id "
                     r"MountainCarContinuous-v0: dataset\.obs has shape \(256, 3\).*Give the env "
                     r"the data was collected in", line), line


def test_a_damaged_newest_checkpoint_says_how_to_resume_from_the_one_before(capsys, run_dir):
    newest = Path(run_dir) / "checkpoints" / "step_0000000300.ckpt"
    newest.write_bytes(newest.read_bytes()[:1000])
    line = refused(capsys, ["--resume", run_dir, "--total-steps", "400"])
    assert re.search(r"--resume .*: .*step_0000000300\.ckpt' is corrupt.* Move it "
                     r"aside \(mv .*step_0000000300\.ckpt .*\.broken\) and resume again to "
                     r"continue from step 200", line), line
    newest.rename(f"{newest}.broken")  # as the message says: the run resumes from step 200
    assert eqxrl.load_run(run_dir).step == 200


def test_default_run_folder_names_hold_no_slash_or_colon():
    from eqxrl.run.summary import default_run_dir

    for env_id, part in [("ALE/Pong-v5", "dqn__ALE-Pong-v5__s0__"),
                         ("gymnax:CartPole-v1", "dqn__gymnax-CartPole-v1__s0__")]:
        path = default_run_dir("dqn", eqxrl.OnlineRun(env_id=env_id))
        assert os.path.dirname(path) == "runs" and os.path.basename(path).startswith(part)


def test_hyper_of_refuses_names_it_would_ignore():
    with pytest.raises(ValueError, match=r"hyper_of: \['hidden_dims', 'nosuch'\] are not swept "
                                         r"hyperparameters of Config"):
        eqxrl.hyper_of(sac.Config(), {"nosuch": 1.0, "hidden_dims": 3, "tau": 0.01})


@pytest.mark.parametrize("capacity", [2.5, "10", True])
def test_a_replay_capacity_that_is_not_a_row_count_is_named(capacity):
    # the tests' annotation checks (jaxtyping + beartype) name it first; without them, eqxrl does
    says = r"ReplayBuffer capacity must be an integer >= 1 \(rows\)|parameter 'capacity'"
    with pytest.raises((ValueError, TypeError), match=says):
        eqxrl.ReplayBuffer.create(jnp.zeros(3), capacity)
