"""The processes of a multi-process run (`jax.distributed`): their settings checked, and
joining them with a deadline that says what it waits for."""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import jax

from eqxrl.core.checks import ConfigError, fail, flag, within


def check_processes(run: Any) -> None:
    """--coordinator and --process-id belong to multi-process runs, and are well formed."""
    if run.num_processes == 1:
        for name in ("coordinator", "process_id"):
            if getattr(run, name) is not None:
                raise ConfigError(
                    f"{flag(name)} {getattr(run, name)} has no effect in a one-process "
                    f"run: drop it, or start a multi-process run with --num-processes N.")
        return
    if run.process_id is not None:
        within(run, "process_id", 0, run.num_processes - 1)
    if run.coordinator is not None:
        host, _, port = run.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            fail("coordinator", "HOST:PORT (a port in 1..65535)", run.coordinator,
                 "For example --coordinator localhost:12345 (process 0's address).")
    if (run.coordinator is None) != (run.process_id is None):
        given, missing = (("coordinator", "process_id") if run.process_id is None
                          else ("process_id", "coordinator"))
        raise ConfigError(
            f"{flag(given)} without {flag(missing)}: a multi-process run outside a cluster "
            "that JAX detects needs both, on every process (--coordinator HOST:PORT of "
            "process 0, --process-id 0 .. N-1).")


def connect(run: Any) -> None:
    """Join the processes of a multi-process run (`jax.distributed`), before any JAX work.

    `--coordinator HOST:PORT --num-processes N --process-id I` on each process; on a cluster
    that JAX detects (SLURM, TPU pods, ...) `--num-processes N` alone. CPU processes exchange
    data with gloo.
    """
    if run.num_processes <= 1 or jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = (f"at {run.coordinator} as process {run.process_id}" if run.coordinator
             else "through the cluster's environment")
    print(f"waiting up to {run.process_timeout} s for {run.num_processes} processes to join "
          f"{where} (--process-timeout) ...", file=sys.stderr, flush=True)
    if run.process_id == 0:  # its deadline ends in JAX's C++ client, which Python cannot catch
        print("  if they have not all joined by then, JAX ends this process with "
              "DEADLINE_EXCEEDED (exit code 134, a C++ stack trace); nothing of the run is "
              "written before they join, so run the same command again once every process can "
              "start.", file=sys.stderr, flush=True)
    if run.coordinator and run.process_id != 0:  # process 0 serves the coordinator itself
        _reach_coordinator(run)  # JAX's client ends the process, uncatchable, when it cannot
    try:
        jax.distributed.initialize(run.coordinator, run.num_processes, run.process_id,
                                   initialization_timeout=run.process_timeout)
    except ValueError as err:  # nothing detected to fill in the coordinator or the id
        raise ConfigError(
            f"--num-processes {run.num_processes}: {err} No cluster (SLURM, Open MPI, a TPU "
            "pod, ...) was detected to say where process 0 is; outside one, start every "
            "process with --coordinator HOST:PORT (process 0's) and its own --process-id."
        ) from None
    except RuntimeError as err:
        if "before any JAX" not in str(err):
            raise
        raise ConfigError(
            f"--num-processes {run.num_processes}: this process used JAX before the processes "
            "joined, and jax.distributed cannot start after that. Start the run before any other "
            "JAX work in the process (a fresh `python algorithms/<name>.py ...`)."
        ) from None
    except Exception as err:  # the service's errors (a peer that never came) are runtime ones
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"--num-processes {run.num_processes}: not all processes joined {where} within "
            f"--process-timeout {run.process_timeout} s ({first}). Start every process "
            "(--process-id 0 .. N-1) with the same --coordinator, or raise "
            "--process-timeout; a run folder being resumed is untouched."
        ) from None


def _reach_coordinator(run: Any) -> None:
    """Wait (up to --process-timeout) until process 0's coordinator accepts connections."""
    host, _, port = run.coordinator.rpartition(":")
    deadline = time.monotonic() + run.process_timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1.0).close()
            return
        except OSError as err:
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"--coordinator {run.coordinator}: process 0 did not answer within "
                    f"--process-timeout {run.process_timeout} s ({err}). Start process 0 "
                    "(--process-id 0) with the same --coordinator, check the address, or raise "
                    "--process-timeout."
                ) from None
            time.sleep(0.5)
