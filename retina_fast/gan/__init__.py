"""StyleGAN2-ADA on retina_fast's native ops: networks, training, generation."""
from .networks import (PRESETS, Discriminator, Generator, MappingNetwork, SynthesisNetwork,  # noqa: F401
                       make_networks, set_impl, z_from_seeds)
from .augment import AUGPIPE_SPECS, AdaController, AugmentPipe  # noqa: F401,E402
