"""The run harness: run settings, the command line, agents over seeds, grids, devices and
processes, the run folder with its logs, checkpoints and summary, and loading a finished run.
"""


from .agents import Agents as Agents
from .agents import tree_bytes as tree_bytes
from .checkpoints import CheckpointError as CheckpointError
from .cli import cli as cli
from .cli import parse_flags as parse_flags
from .config_io import flat_fields as flat_fields
from .config_io import from_dict as from_dict
from .config_io import identity as identity
from .config_io import to_dict as to_dict
from .drive import Advanced as Advanced
from .drive import drive as drive
from .drive import run_loop as run_loop
from .finetuning import Finetune as Finetune
from .grid import agents_for as agents_for
from .grid import make_agents as make_agents
from .harness import Run as Run
from .load import LoadedRun as LoadedRun
from .load import load_policy as load_policy
from .load import load_run as load_run
from .logging import Logger as Logger
from .logging import read_metrics as read_metrics
from .processes import connect as connect
from .progress import AgentProgress as AgentProgress
from .progress import Progress as Progress
from .record import read_record as read_record
from .record import resolve_resume as resolve_resume
from .settings import OfflineRun as OfflineRun
from .settings import OnlineRun as OnlineRun
from .settings import OnPolicyRun as OnPolicyRun
from .settings import RunConfig as RunConfig
from .stop import StopFlag as StopFlag
from .summary import print_summary as print_summary

# The public names of this package (the API reference documents these).
__all__ = [
    "Agents", "tree_bytes", "CheckpointError", "cli", "parse_flags", "flat_fields", "from_dict",
    "identity", "to_dict", "Advanced", "drive", "run_loop", "agents_for", "make_agents", "Run",
    "LoadedRun", "load_policy", "load_run", "Logger", "read_metrics", "connect", "AgentProgress",
    "Progress", "read_record", "resolve_resume", "Finetune", "OfflineRun", "OnlineRun",
    "OnPolicyRun", "RunConfig", "StopFlag", "print_summary"
]
