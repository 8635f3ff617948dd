"""flowkernels: fused GPU kernels for flow-matching 3D generative models.

Importing the package never builds or loads the compiled marching-cubes extension; it is loaded on first use.
"""
from .flow_matching import (FlowBatch, flow_batch, flow_interpolate, flow_interpolate_batch, flow_matching_loss,
                            flow_matching_loss_batch)
from .marching_cubes import Mesh, marching_cubes
from .time_sampling import sample_time
from . import sampling
from .sampling import Guidance, sample_euler

__version__ = "0.1.0"

__all__ = ["flow_interpolate", "flow_matching_loss", "FlowBatch", "flow_batch", "flow_interpolate_batch",
           "flow_matching_loss_batch", "sample_time", "marching_cubes", "Mesh", "sample_euler",
           "Guidance", "sampling", "__version__"]
