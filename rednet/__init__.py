"""RedNet (involution networks) in PyTorch, with the involution op defined once (spec/Involution.yaml)."""
from . import ops  # registers torch.ops.rednet.involution
from .checkpoint import CheckpointError, load_checkpoint, read_state_dict
from .flops import count_macs, count_params
from .models.layers import Involution, fuse_involution_epilogues
from .models.rednet import RedNet, RedNetClassifier, RedNetConfig
from .registry import MODELS, create_model, get_entry, list_models

__version__ = "0.1.0"

__all__ = ["ops", "CheckpointError", "load_checkpoint", "read_state_dict", "count_macs", "count_params",
           "Involution", "fuse_involution_epilogues", "RedNet", "RedNetClassifier", "RedNetConfig", "MODELS",
           "create_model", "get_entry", "list_models", "__version__"]
