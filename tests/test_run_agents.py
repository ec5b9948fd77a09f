"""Many agents as one program: seeds and grids, online and offline, resume, devices, errors."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eqxrl
from eqxrl.algorithms import iql, sac, td3
from eqxrl.core.checks import ConfigError
from eqxrl.run import checkpoints as ck
from eqxrl.run.cli import split_grid_flags
from eqxrl.tools.plot import group_runs, legend_labels

from .conftest import assert_trees_equal, pendulum_dataset_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(tmp_path, name="run", **kw):
    run = dict(env_id="Pendulum-v1", total_steps=300, start_steps=100, batch_size=32,
               buffer_size=1000, eval_interval=300, eval_episodes=2, log_interval=100,
               checkpoint_interval=100, run_dir=str(tmp_path / name), progress=False)
    return sac.Config(run=eqxrl.OnlineRun(**(run | kw)), hidden_dims=(32, 32))


def arrays(state):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(state, eqx.is_inexact_array))]


def assert_close_states(a, b, atol=1e-4):
    for x, y in zip(arrays(a), arrays(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=atol)


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("three")
    summary = sac.main(tiny(tmp, seeds=(4, 0, 7)))
    return tmp / "run", summary


def test_agent_i_of_n_equals_a_single_run_online(three_seeds, tmp_path):
    run_dir, summary = three_seeds
    assert [a["seed"] for a in summary["agents"]] == [4, 0, 7]
    single = sac.main(tiny(tmp_path, seed=7))
    # Float tolerance: XLA:CPU runs a vmapped (batched) matmul with other kernels than a
    # single one, so values differ in the last bits (measured: 4e-6 after 200 updates).
    assert_close_states(eqxrl.load_run(str(run_dir), agent=2).state,
                        eqxrl.load_run(single["run_dir"]).state)
    assert summary["agents"][2]["final_eval_return"] == pytest.approx(
        single["final_eval_return"], abs=1e-2)
    # Distinct seeds learn different agents.
    with pytest.raises(AssertionError):
        assert_close_states(eqxrl.load_run(str(run_dir), agent=0).state,
                            eqxrl.load_run(str(run_dir), agent=2).state)


def test_each_agent_has_its_own_rows_folders_and_summary(three_seeds):
    run_dir, summary = three_seeds
    assert os.path.basename(run_dir) == "run"
    for name in ("train.csv", "eval.csv"):
        rows = eqxrl.run.read_metrics(str(run_dir / name))
        assert sorted(set(rows["seed"].astype(int))) == [0, 4, 7]
        assert sorted(set(rows["agent"].astype(int))) == [0, 1, 2]
    evals = eqxrl.run.read_metrics(str(run_dir / "eval.csv"))
    by_agent = {int(a): r for a, r in zip(evals["agent"], evals["return_mean"], strict=True)}
    assert [by_agent[i] for i in range(3)] == [a["final_eval_return"] for a in summary["agents"]]
    assert summary["final_eval_return"] == pytest.approx(np.mean(list(by_agent.values())))
    assert sorted(os.listdir(run_dir / "agents")) == [
        "agent0_seed4", "agent1_seed0", "agent2_seed7"]
    header, _ = ck.read_header(ck.list_checkpoints(str(run_dir / "checkpoints"))[-1][1])
    assert len(header["meta"]["agents"]) == 3


def test_a_run_of_several_agents_needs_an_agent_to_load(three_seeds):
    run_dir, _ = three_seeds
    with pytest.raises(ValueError, match=r"trained 3 agents.*agent= an index in 0\.\.2"):
        eqxrl.load_policy(str(run_dir))
    policy, config = eqxrl.load_policy(str(run_dir), agent=1)
    assert config.run.seed == 0 and policy(np.zeros(3, np.float32)).shape == (1,)


@pytest.mark.slow  # ~20 s: keeps the default run under 10 minutes
def test_several_agents_resume_bit_exact(tmp_path):
    from .test_sac import InterruptAt

    straight = sac.main(tiny(tmp_path, "straight", num_seeds=2))
    broken = tiny(tmp_path, "broken", num_seeds=2)
    made = []

    def make_env(env_id):  # the first agent's env sends one Ctrl-C
        made.append(env_id)
        return InterruptAt(eqxrl.make_env(env_id), 150 if len(made) == 1 else 0)

    summary = eqxrl.train_online(broken, sac, make_env=make_env)
    assert summary["interrupted"] and summary["steps"] == 150
    resumed = sac.main(sac.Config(run=eqxrl.OnlineRun(resume=broken.run.run_dir)))
    assert resumed["steps"] == 300
    paths = [ck.list_checkpoints(os.path.join(r, "checkpoints"))[-1][1]
             for r in (straight["run_dir"], resumed["run_dir"])]
    assert ck.read_header(paths[0])[1] == ck.read_header(paths[1])[1]  # every agent, bit-exact
    assert straight["agents"] == resumed["agents"]


def test_resume_with_another_number_of_seeds_is_refused(three_seeds):
    run_dir, _ = three_seeds
    with pytest.raises(ValueError, match="--num-seeds 5 would change the run"):
        sac.main(sac.Config(run=eqxrl.OnlineRun(resume=str(run_dir), num_seeds=5)))


def learning_rate(train_state):
    return float(optax.tree_utils.tree_get(train_state.opt_state, "learning_rate"))


@pytest.mark.slow  # ~17 s (the grid's parsing and its refusals stay in the default suite)
def test_a_grid_from_the_command_line_gives_each_point_its_hyperparameters(tmp_path, capsys):
    run_dir = tmp_path / "grid"
    args = ["--env-id", "Pendulum-v1", "--total-steps", "150", "--start-steps", "100",
            "--batch-size", "32", "--buffer-size", "500", "--eval-interval", "150",
            "--eval-episodes", "1", "--hidden-dims", "16", "16", "--num-seeds", "2",
            "--critic-lr", "1e-3", "3e-4", "--tau", "0.01", "0.02", "--run-dir", str(run_dir),
            "--no-progress"]
    eqxrl.cli(sac.main, sac.Config, args)
    out = capsys.readouterr().out
    assert "agents           8 (2 seed(s) per point" in out and "critic_lr=0.001, tau=0.02" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["agents"]) == 8
    for i, agent in enumerate(summary["agents"]):
        state = eqxrl.load_run(str(run_dir), agent=i).state
        assert learning_rate(state.critic) == pytest.approx(agent["critic_lr"])
        assert learning_rate(state.actor) == pytest.approx(3e-4)
        assert float(state.tau) == pytest.approx(agent["tau"])
    assert [(a["seed"], a["critic_lr"], a["tau"]) for a in summary["agents"][:3]] == [
        (0, 1e-3, 0.01), (1, 1e-3, 0.01), (0, 1e-3, 0.02)]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["run"]["grid"] == [["critic_lr", [1e-3, 3e-4]], ["tau", [0.01, 0.02]]]
    # The plot command draws one curve per grid point: mean and spread over its seeds.
    assert sorted(legend_labels(group_runs([str(run_dir)])).values()) == [
        f"sac, critic_lr={lr}, tau={tau} (2 seeds)"
        for lr in (0.0003, 0.001) for tau in (0.01, 0.02)]


def test_grid_flags_are_split_from_the_others():
    argv, grid = split_grid_flags(sac.Config, [
        "--actor-lr", "1e-4", "--critic-lr", "1e-3", "3e-4", "--hidden-dims", "64", "64",
        "--discount=0.9", "--seeds", "1", "2", "--target-entropy-per-dim", "-1", "-0.5"])
    assert grid == (("critic_lr", (1e-3, 3e-4)), ("target_entropy_per_dim", (-1.0, -0.5)))
    assert argv == ["--actor-lr", "1e-4", "--critic-lr", "1e-3", "--hidden-dims", "64", "64",
                    "--discount=0.9", "--seeds", "1", "2", "--target-entropy-per-dim", "-1"]
    with pytest.raises(ConfigError, match="--batch-size is a run setting and takes one value"):
        split_grid_flags(sac.Config, ["--batch-size", "64", "128"])
    with pytest.raises(ConfigError, match="--tau takes numbers"):
        split_grid_flags(sac.Config, ["--tau", "0.1", "fast"])


@pytest.mark.parametrize("algorithm, field, values, why", [
    (sac, "num_critics", (2, 3), "does not mark it Swept"),
    (td3, "policy_delay", (1, 2), "does not mark it Swept"),
    (sac, "batch_size", (32, 64), "a run setting takes one value"),
    (sac, "actor_lr", (3e-4, -1.0), "--actor-lr must be a finite number > 0"),
])
def test_a_grid_over_what_cannot_vary_is_refused(tmp_path, algorithm, field, values, why):
    run = tiny(tmp_path).run
    config = algorithm.Config(run=eqxrl.OnlineRun(**{
        **{f: getattr(run, f) for f in ("env_id", "total_steps", "start_steps", "batch_size",
                                        "buffer_size", "run_dir", "progress")},
        "grid": ((field, values),)}))
    with pytest.raises(ValueError, match=why):
        algorithm.main(config)
    assert not os.path.exists(run.run_dir)


def test_seed_settings_are_checked():
    with pytest.raises(ValueError, match="--seeds 1 2 gives 2 agents, but --num-seeds is 3"):
        eqxrl.OnlineRun(seeds=(1, 2), num_seeds=3)
    with pytest.raises(ValueError, match="--seeds must be distinct seeds"):
        eqxrl.OnlineRun(seeds=(1, 1))
    with pytest.raises(ValueError, match="--num-seeds must be >= 1"):
        eqxrl.OnlineRun(num_seeds=0)


def test_agents_that_cannot_fit_are_refused_before_anything_is_allocated(tmp_path):
    config = tiny(tmp_path, num_seeds=4000, buffer_size=200_000_000)
    with pytest.raises(ValueError, match=r"4000 agents need about .* GiB.*Lower --num-seeds"):
        sac.main(config)
    assert not os.path.exists(config.run.run_dir)


def test_more_devices_than_visible_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--devices 64: only 1 device"):
        sac.main(tiny(tmp_path, devices=64, num_seeds=2))


# ---------------------------------------------------------------------------- offline
@pytest.mark.slow  # 12 s each; the online case stays in the default suite (~10 min)
@pytest.mark.parametrize("layout", ["auto", "vmap"])
def test_agent_i_of_n_equals_a_single_run_offline(tmp_path, layout):
    path = pendulum_dataset_file(tmp_path / "data.hdf5")

    def config(name, expectile=0.9, **kw):
        run = eqxrl.OfflineRun(dataset=path, total_updates=200, batch_size=32,
                               updates_per_call=100, eval_interval=200, eval_episodes=1,
                               log_interval=100, run_dir=str(tmp_path / name), progress=False,
                               **kw)
        return iql.Config(run=run, hidden_dims=(16, 16), expectile=expectile)

    many = iql.main(config("many", seeds=(3, 4), grid=(("expectile", (0.9, 0.7)),),
                           agents_layout=layout))
    one = iql.main(config("one", seed=4, expectile=0.7))
    assert [(a["seed"], a["expectile"]) for a in many["agents"]] == [
        (3, 0.9), (4, 0.9), (3, 0.7), (4, 0.7)]
    assert [float(eqxrl.load_run(many["run_dir"], agent=i).state.expectile)
            for i in range(4)] == pytest.approx([0.9, 0.9, 0.7, 0.7])
    agent = eqxrl.load_run(many["run_dir"], agent=3).state
    single = eqxrl.load_run(one["run_dir"]).state
    if layout == "auto":  # 4 agents on one CPU: written out, each computes as a single run
        assert_trees_equal(agent, single)
    else:
        assert_close_states(agent, single)


def test_the_agents_layout_is_chosen_per_backend_and_size_and_checked():
    from eqxrl.run.grid import UNROLL_AGENTS, agents_layout

    cpu = jax.default_backend() == "cpu"
    assert agents_layout("auto", 5, None) == ("unrolled" if cpu else "vmap")
    assert agents_layout("auto", UNROLL_AGENTS + 1, None) == "vmap"  # compile time grows
    assert agents_layout("auto", 1, None) == "vmap"
    assert agents_layout("vmap", 5, None) == "vmap"
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("devices",))
    assert agents_layout("auto", 4, mesh) == "vmap"  # agents split over devices
    with pytest.raises(ConfigError, match="--agents-layout unrolled .* --devices 1"):
        agents_layout("unrolled", 4, mesh)
    with pytest.raises(ConfigError, match="--agents-layout loop: expected one of auto, vmap"):
        agents_layout("loop", 2, None)


def test_unrolled_agents_compute_what_each_computes_alone():
    from eqxrl.rl.schedules import every
    from eqxrl.run.agents import Agents

    def f(state, shared):  # `every` inside: each agent's own cond (steps may even differ)
        return every(2, state["step"], lambda x: x * shared, state["x"], state["x"]) + 1.0

    states = {"step": jnp.array([0, 1, 2]), "x": jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])}
    shared = jnp.array([10.0, 100.0])
    agents = Agents((0, 1, 2), ((), (), ()), layout="unrolled")
    got = jax.jit(agents.over(f, (0, None), unroll=True))(states, shared)
    np.testing.assert_array_equal(got, [[11.0, 201.0], [4.0, 5.0], [51.0, 601.0]])
    # Without `unroll` (calls that carry a replay buffer), the agents stay vmapped.
    assert jax.jit(agents.over(lambda s: s["x"] * 2))(states).shape == (3, 2)


# ---------------------------------------------------------------------------- devices
DEVICES_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    import eqxrl
    from eqxrl.algorithms import sac, iql, ppo
    from tests.conftest import state_gap as gap
    assert len(jax.devices()) == 4, jax.devices()
    out, data = sys.argv[1], sys.argv[2]

    def online(name, **kw):
        run = eqxrl.OnlineRun(env_id="Pendulum-v1", total_steps=200, start_steps=100,
                              batch_size=32, buffer_size=400, eval_interval=200,
                              eval_episodes=1, run_dir=f"{out}/{name}", progress=False, **kw)
        return sac.main(sac.Config(run=run, hidden_dims=(16, 16)))

    def offline(name, **kw):
        run = eqxrl.OfflineRun(dataset=data, total_updates=100, batch_size=32,
                               eval_interval=100, eval_episodes=1, run_dir=f"{out}/{name}",
                               progress=False, **kw)
        return iql.main(iql.Config(run=run, hidden_dims=(16, 16)))

    def compiled(name, **kw):  # PPO with its env compiled in (gymnax)
        run = eqxrl.OnPolicyRun(env_id="gymnax:CartPole-v1", total_steps=512, num_envs=4,
                                num_steps=32, eval_interval=512, eval_episodes=1,
                                run_dir=f"{out}/{name}", progress=False, **kw)
        return ppo.main(ppo.Config(run=run, hidden_dims=(16, 16)))

    from eqxrl.run import make_agents
    many = make_agents(eqxrl.OnlineRun(num_seeds=4), 32)
    buffer = many.place(eqxrl.ReplayBuffer.create(np.zeros(3, np.float32), 8)
                        .data[None].repeat(4, 0))
    one = make_agents(eqxrl.OnlineRun(), 32)
    rows = one.place(np.zeros((1, 8, 3), np.float32), rows_axis=1)
    result = {"agents_split": len({s.device for s in buffer.addressable_shards}),
              "agent_shard": buffer.addressable_shards[0].data.shape,
              "rows_shard": rows.addressable_shards[0].data.shape}
    for kind, run in (("online", online), ("offline", offline), ("compiled", compiled)):
        a, b = run(f"{kind}4", num_seeds=4), run(f"{kind}1", num_seeds=4, devices=1)
        result[f"{kind}_seeds"] = gap(a["run_dir"], b["run_dir"], range(4))
        c, d = run(f"{kind}b4"), run(f"{kind}b1", devices=1)
        result[f"{kind}_batch"] = gap(c["run_dir"], d["run_dir"], [None])
    try:
        online("three", num_seeds=3)
    except ValueError as err:
        result["error"] = str(err)
    print("RESULT", json.dumps(result))
""")


@pytest.mark.slow  # ~1 min: eight short runs in a subprocess with 4 CPU devices
def test_four_cpu_devices_give_the_result_of_one(tmp_path):
    data = pendulum_dataset_file(tmp_path / "data.hdf5")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", DEVICES_SCRIPT, str(tmp_path), data],
                          env=env, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ")[1])
    # Agents split over devices compute what one device computes; a batch split over devices
    # sums its gradients in another order (float tolerance).
    assert result["online_seeds"] < 1e-4 and result["offline_seeds"] < 1e-4, result
    assert result["online_batch"] < 1e-3 and result["offline_batch"] < 1e-3, result
    assert result["compiled_seeds"] < 1e-3 and result["compiled_batch"] < 1e-3, result
    assert "3 agents (1 grid point(s) × 3 seed(s)) cannot be split evenly over 4" in \
        result["error"]
    # Agents live split over the devices; one agent's buffer rows are split too.
    assert result["agents_split"] == 4 and result["agent_shard"] == [1, 8, 3]
    assert result["rows_shard"] == [1, 2, 3]
    # Each run says where it ran (several devices are easy to miss).
    assert "running 4 agent(s) on 4 CPU devices, the agents split across them" in done.stderr
    assert "running 1 agent(s) on 4 CPU devices, each batch split across them" in done.stderr


@pytest.mark.slow  # ~15 s: keeps the default run under 10 minutes
def test_td3_agents_keep_the_delayed_actor_update_a_cond(tmp_path):
    # TD3's `every(policy_delay, ...)` stays a real cond under the loops' vmap over agents.
    run = tiny(tmp_path).run

    def config(name, **kw):
        settings = dataclasses.replace(run, run_dir=str(tmp_path / name), total_steps=200, **kw)
        return td3.Config(run=settings, hidden_dims=(16, 16))

    many = td3.main(config("many", num_seeds=2))
    one = td3.main(config("one", seed=1))
    assert_close_states(eqxrl.load_run(many["run_dir"], agent=1).state,
                        eqxrl.load_run(one["run_dir"]).state)


def test_the_memory_check_counts_the_offline_data_once_for_all_agents(monkeypatch):
    from eqxrl.run import agents as agents_module

    agents = agents_module.Agents((0, 1, 2), ((), (), ()))
    monkeypatch.setattr(agents_module, "_memory_bytes", lambda mesh: 10 * 2**30)
    agents.check_memory(2**30, shared_bytes=5 * 2**30)  # 3 + 5 GiB of 10: fits
    with pytest.raises(ConfigError, match=r"3 agents need about 10\.0 GiB \(1024 MiB each: state "
                                          r"and replay buffer, and 7\.0 GiB of --offline-data "
                                          r"that they share\).*use a smaller dataset"):
        agents.check_memory(2**30, shared_bytes=7 * 2**30)
