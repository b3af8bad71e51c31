"""Native StyleGAN ops with a pure-PyTorch reference beside each.

Every op takes ``impl``: None (native kernel when built for the tensor's device, else the
reference), 'native' (fail clearly if unavailable) or 'ref'.
"""
from ._native import AVAILABLE as NATIVE_AVAILABLE, has_cuda_kernels
from .bias_act import ACTIVATIONS, bias_act, bias_act_ref
from .modconv import conv2d_resample, modulate, modulated_conv2d, modulated_conv2d_ref, upfirdn2d_modulate
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upfirdn2d_ref, upsample2d

__all__ = [
    "NATIVE_AVAILABLE", "has_cuda_kernels", "ACTIVATIONS", "bias_act", "bias_act_ref",
    "conv2d_resample", "modulate", "modulated_conv2d", "modulated_conv2d_ref", "downsample2d",
    "filter2d", "setup_filter", "upfirdn2d", "upfirdn2d_modulate", "upfirdn2d_ref", "upsample2d",
]
