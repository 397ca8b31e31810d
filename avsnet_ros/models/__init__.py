"""Networks of AVS-Net (stage 1) and the self-supervised relative depth models (stage 2), torch only.

See docs/ARCHITECTURE.md (avsnet_ros/models) for the contracts.
"""
from .avsnet import AVSNet, AVSNetOutput
from .builder import build_model
from .checkpoint import CheckpointError, load_checkpoint_config, load_model, save_checkpoint
from .config import AVSNetConfig, RelativeDepthConfig, asdict, config_from_dict
from .geometry import BackprojectDepth, Project3D, transformation_from_parameters, warp_source
from . import relative as _relative_module
from .relative import *  # noqa: F401,F403  (its __all__: DepthNet, PoseNet, the RelativeDepthModel wrappers, ...)

__all__ = [
    "AVSNet",
    "AVSNetOutput",
    "AVSNetConfig",
    "RelativeDepthConfig",
    "asdict",
    "config_from_dict",
    "build_model",
    "save_checkpoint",
    "load_model",
    "load_checkpoint_config",
    "CheckpointError",
    "BackprojectDepth",
    "Project3D",
    "transformation_from_parameters",
    "warp_source",
]
__all__ += [name for name in _relative_module.__all__ if name not in __all__]
