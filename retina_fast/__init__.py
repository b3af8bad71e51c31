"""retina_fast: realistic high-resolution retinal fundus synthesis with StyleGAN2-ADA on native
C++/CUDA ops, and the tools to show that the synthetic images are realistic and useful.

``retina_fast.ops`` holds the native StyleGAN ops (upfirdn2d, bias_act, modulated_conv2d). If the
compiled extension is missing, importing still works: a warning is issued once and the ops run
their pure-PyTorch reference path.
"""
__version__ = "0.1.0"

from . import ops  # noqa: F401,E402
