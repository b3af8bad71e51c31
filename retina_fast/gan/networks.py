"""StyleGAN2 generator and discriminator (StyleGAN2-ADA semantics): the public face.

The networks themselves are defined in `retina_fast.gan.architecture` and re-exported here
unchanged (the same classes, so a network built any way, by `make_networks`, from a snapshot or
from an NVlabs pickle, is an instance of ``retina_fast.gan.networks.Generator``). This module adds
what needs the file formats on top of them: ``Generator.from_checkpoint`` and
``Discriminator.from_checkpoint``.

The layering is a line, with no import circle: ``architecture`` (the networks and the check of
their constructor arguments) <- ``snapshot`` (our file format, checked against the architecture)
<- ``nvlabs`` (NVlabs' network pickles mapped onto the architecture) <- ``networks``.
"""
import os

from .architecture import (PRESETS, Conv2dLayer, Discriminator, DiscriminatorBlock,  # noqa: F401
                           DiscriminatorEpilogue, FullyConnectedLayer, Generator, MappingNetwork,
                           MinibatchStdLayer, SynthesisBlock, SynthesisLayer, SynthesisNetwork, ToRGBLayer,
                           check_impl, check_network_kwargs, make_networks, normalize_2nd_moment, set_impl,
                           z_from_seeds)
from .nvlabs import is_network_pickle, network_from_pickle
from .snapshot import FORMAT, load_snapshot

__all__ = [
    "FullyConnectedLayer", "Conv2dLayer", "MappingNetwork", "SynthesisLayer", "ToRGBLayer",
    "SynthesisBlock", "SynthesisNetwork", "Generator", "DiscriminatorBlock", "MinibatchStdLayer",
    "DiscriminatorEpilogue", "Discriminator", "PRESETS", "make_networks", "set_impl", "z_from_seeds",
    "normalize_2nd_moment", "SNAPSHOT_FORMAT", "check_network_kwargs", "network_from_checkpoint",
]

SNAPSHOT_FORMAT = FORMAT  # one constant: the snapshot module's


def network_from_checkpoint(cls, path, key, kwargs_key, device="cpu", impl=None):
    """Build the network ``cls(**file[kwargs_key])`` with the weights ``file[key]``, for inference.

    `path` is a snapshot (``.pt``, read by `retina_fast.gan.snapshot.load_snapshot`, which checks
    the stored arguments against the stored weights before anything is built) or an NVlabs network
    pickle (``.pkl``, read by `retina_fast.gan.nvlabs.network_from_pickle` without running its
    code). ``Generator.from_checkpoint`` and ``Discriminator.from_checkpoint`` call this.

    Parameters
    ----------
    cls : type
        :class:`Generator` or :class:`Discriminator`.
    path : str or os.PathLike
        Snapshot (``.pt``) or network pickle (``.pkl``).
    key : str
        Key of the state dict ('G_ema', 'G' or 'D').
    kwargs_key : str
        Key of the constructor arguments in a snapshot ('G_kwargs' or 'D_kwargs').
    device : str or torch.device, optional
        Where to put the network (default 'cpu').
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation, replacing the one stored with the arguments.

    Returns
    -------
    torch.nn.Module
        A `cls` on `device`, in eval mode, with ``requires_grad`` off.

    Raises
    ------
    FileNotFoundError
        `path` does not exist.
    ValueError
        An unknown `impl`, or one line naming the file: corrupt, of another format, lacking the
        keys, or weights that do not fit its arguments.
    """
    impl = check_impl(impl)
    if is_network_pickle(path):   # NVlabs' format, read without running its code
        return network_from_pickle(path, key, cls, impl=impl).to(device).eval().requires_grad_(False)
    snap = load_snapshot(path)   # its kwargs are checked against its weights there
    missing = [k for k in (kwargs_key, key) if k not in snap]
    if missing:
        raise ValueError(f"checkpoint {os.fspath(path)!r} lacks the key(s) {missing}; it has {sorted(snap)}")
    net = cls(**dict(snap[kwargs_key], impl=impl))
    try:
        net.load_state_dict(snap[key], strict=True)
    except RuntimeError as exc:  # e.g. a dtype the parameters cannot take
        raise ValueError(f"checkpoint {os.fspath(path)!r}: {key!r} does not load into the "
                         f"{cls.__name__}: {str(exc).splitlines()[0]}") from None
    return net.to(device).eval().requires_grad_(False)


# The loaders are class methods of the architecture's own classes, installed here because they need
# the file formats, which need the architecture: defining them in `architecture` would close a circle.

def _generator_from_checkpoint(cls, path, key="G_ema", device="cpu", impl=None):
    """Load a generator from a snapshot file (format ``retina_fast.gan/1``) or from an NVlabs
    StyleGAN2-ADA / StyleGAN3 network pickle (``.pkl``, read by `retina_fast.gan.nvlabs`).

    Reads ``snap['G_kwargs']`` and the state dict ``snap[key]`` with
    ``torch.load(weights_only=True)``; `impl` replaces the one stored in G_kwargs. To train,
    build a generator from G_kwargs and ``load_state_dict`` instead.

    Parameters
    ----------
    path : str or os.PathLike
        Snapshot (``.pt``) or network pickle (``.pkl``).
    key : {'G_ema', 'G'}, optional
        Which generator: the exponential moving average of the weights (default, the one to
        generate with) or the raw training weights.
    device : str or torch.device, optional
        Where to put the network (default 'cpu').
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.

    Returns
    -------
    Generator
        On `device`, in eval mode, with ``requires_grad`` off.

    Raises
    ------
    FileNotFoundError
        `path` does not exist.
    ValueError
        One line naming the file: corrupt, of another format, lacking the keys, or weights
        that do not fit its arguments.
    """
    return network_from_checkpoint(cls, path, key, "G_kwargs", device, impl)


def _discriminator_from_checkpoint(cls, path, key="D", device="cpu", impl=None):
    """Load the discriminator of a snapshot (``snap['D_kwargs']``, ``snap[key]``) or of an
    NVlabs network pickle.

    Parameters
    ----------
    path : str or os.PathLike
        Snapshot (``.pt``) or network pickle (``.pkl``).
    key : str, optional
        Key of the state dict (default 'D').
    device : str or torch.device, optional
        Where to put the network (default 'cpu').
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.

    Returns
    -------
    Discriminator
        On `device`, in eval mode, with ``requires_grad`` off.

    Raises
    ------
    FileNotFoundError
        `path` does not exist.
    ValueError
        One line naming the file, as :meth:`Generator.from_checkpoint`.
    """
    return network_from_checkpoint(cls, path, key, "D_kwargs", device, impl)


Generator.from_checkpoint = classmethod(_generator_from_checkpoint)
Discriminator.from_checkpoint = classmethod(_discriminator_from_checkpoint)
