"""Data on the device: the offline `Dataset`, observation normalisers (fixed and running),
replay buffers (plain and frame-stacked), images left on disk, and what a checkpoint keeps of a
buffer.
"""


from .dataset import Dataset as Dataset
from .dataset import Normalizer as Normalizer
from .frames import FrameReplayBuffer as FrameReplayBuffer
from .frames import frame_capacity as frame_capacity
from .image_rows import EpisodeImageRows as EpisodeImageRows
from .image_rows import ImageRows as ImageRows
from .image_rows import decode_jpeg as decode_jpeg
from .image_rows import is_image_node as is_image_node
from .replay import ReplayBuffer as ReplayBuffer
from .replay import n_step_windows as n_step_windows
from .reward_scale import ReturnScaler as ReturnScaler
from .running_norm import RunningNormalizer as RunningNormalizer
from .saved import buffer_from_saved as buffer_from_saved
from .saved import buffer_saved as buffer_saved
from .saved import buffer_saved_like as buffer_saved_like
from .saved import filled_rows as filled_rows
from .saved import filled_rows_like as filled_rows_like
from .saved import from_filled_rows as from_filled_rows
from .saved import make_buffer as make_buffer

# The public names of this package (the API reference documents these).
__all__ = [
    "Dataset", "Normalizer", "FrameReplayBuffer", "frame_capacity", "EpisodeImageRows", "ImageRows",
    "decode_jpeg", "is_image_node", "ReplayBuffer", "n_step_windows", "ReturnScaler",
    "RunningNormalizer", "buffer_from_saved", "buffer_saved", "buffer_saved_like", "filled_rows",
    "filled_rows_like", "from_filled_rows", "make_buffer"
]
