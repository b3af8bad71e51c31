"""StyleGAN2 generator and discriminator (StyleGAN2-ADA semantics) on ``retina_fast.ops``.

The networks follow NVlabs' StyleGAN2-ADA ``training/networks.py`` (config-f style: 8-layer
mapping network, 'skip' synthesis network, 'resnet' discriminator with minibatch standard
deviation), with the same constructor argument names, parameter names (so state dicts line up
name for name) and initialisation. Every resampling, bias/activation and modulated convolution
runs through :mod:`retina_fast.ops` (``upfirdn2d``, ``upsample2d``, ``downsample2d``,
``bias_act``, ``modulated_conv2d``, ``conv2d_resample``); nothing here re-implements them.

Conventions
-----------
* Images are ``[N, C, H, W]`` float32, nominally in [-1, 1], rows then columns (H = rows).
* Equalised learning rate: weights are stored N(0, 1) (divided by ``lr_multiplier``) and scaled at
  run time by ``weight_gain`` = ``lr_multiplier / sqrt(fan_in)``; biases by ``lr_multiplier``.
* Mixed precision: the blocks at the top ``num_fp16_res`` resolutions run float16 (and
  channels_last) only when their tensors are on CUDA; on CPU everything runs float32.
  ``conv_clamp`` clamps every convolution output to +-conv_clamp regardless of precision.
* Every layer stores ``impl`` (None, 'native' or 'ref') and passes it to the ops;
  :func:`set_impl` changes it on every layer of a network, so native and reference kernels can be
  compared on the same weights.

Loading a network from a file (``Generator.from_checkpoint``) is added by
`retina_fast.gan.networks`, the public face of these classes: this module imports nothing of
``retina_fast.gan``, so the file formats (`retina_fast.gan.snapshot`, `retina_fast.gan.nvlabs`)
can build and check these networks without an import circle.
"""
import numpy as np
import torch

from retina_fast.checkpoints import build_on_meta, check_state_dict
from retina_fast.checks import check_int
from retina_fast.ops import (ACTIVATIONS, bias_act, conv2d_resample, downsample2d, modulated_conv2d,
                             setup_filter, upsample2d)

__all__ = [
    "FullyConnectedLayer", "Conv2dLayer", "MappingNetwork", "SynthesisLayer", "ToRGBLayer",
    "SynthesisBlock", "SynthesisNetwork", "Generator", "DiscriminatorBlock", "MinibatchStdLayer",
    "DiscriminatorEpilogue", "Discriminator", "PRESETS", "make_networks", "set_impl", "z_from_seeds",
    "normalize_2nd_moment", "check_network_kwargs", "check_impl",
]

_IMPLS = (None, "native", "ref")
_NOISE_MODES = ("random", "const", "none")


# ---------------------------------------------------------------------------------------------
# Argument checks shared by the layers.

def check_impl(impl, where="impl"):
    """`impl` itself if it is None, 'native' or 'ref'; otherwise ValueError naming `where`."""
    if impl not in _IMPLS:
        raise ValueError(f"{where} must be None, 'native' or 'ref', got {impl!r}")
    return impl


def _check_resolution(name, value):
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 4
            or value & (value - 1) != 0):
        raise ValueError(f"{name} must be a power of 2 >= 4, got {value!r}")
    return int(value)


def _check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return activation


def _check_clamp(conv_clamp):
    if conv_clamp is not None and (not isinstance(conv_clamp, (int, float, np.number))
                                   or isinstance(conv_clamp, bool) or conv_clamp <= 0):
        raise ValueError(f"conv_clamp must be None or a positive number, got {conv_clamp!r}")
    return conv_clamp


def _check_architecture(architecture):
    if architecture not in ("orig", "skip", "resnet"):
        raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
    return architecture


def _jsonable(value):
    """Plain-Python copy of a constructor argument (tuples -> lists, numpy scalars -> numbers)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"constructor argument {value!r} of type {type(value).__name__} is not JSON-able")


def _shape_error(name, x, expected):
    got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
    return ValueError(f"{name} must have shape {expected}, got {got}")


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """Scale ``x`` to unit root-mean-square along ``dim`` (the mapping network's input norm).

    Parameters
    ----------
    x : torch.Tensor, float
        Any shape, e.g. latents [N, z_dim] or label embeddings [N, embed_features].
    dim : int, optional
        Axis along which the mean square is taken (default 1, the feature axis).
    eps : float, optional
        Added to the mean square before the inverse square root, so an all-zero row stays finite.

    Returns
    -------
    torch.Tensor
        ``x / sqrt(mean(x ** 2, dim) + eps)``, same shape and dtype as `x`.
    """
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _filter(f):
    # On the default device, so that construction under `with torch.device(...)` (meta, cuda) works.
    return setup_filter(list(f), device=torch.get_default_device())


def _run_dtype(use_fp16, device, force_fp32):
    # float16 pays (and its kernels exist) on CUDA only; CPU always computes in float32.
    return torch.float16 if use_fp16 and not force_fp32 and device.type == "cuda" else torch.float32


def _memory_format(channels_last, dtype):
    return torch.channels_last if channels_last and dtype == torch.float16 else torch.contiguous_format


# ---------------------------------------------------------------------------------------------
# Basic layers.

class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: ``act(x @ (W * weight_gain).T + b * bias_gain)``.

    As StyleGAN2-ADA's ``FullyConnectedLayer``: the weight is stored N(0, 1) / ``lr_multiplier`` and
    scaled at run time by ``weight_gain = lr_multiplier / sqrt(in_features)``, the bias by
    ``bias_gain = lr_multiplier``; the layer's effective learning rate is multiplied by
    ``lr_multiplier`` while its output at initialisation is unchanged.

    Parameters
    ----------
    in_features : int
        Input width, >= 1.
    out_features : int
        Output width, >= 1.
    bias : bool, optional
        Learn an additive bias (default True).
    activation : str, optional
        A key of :data:`retina_fast.ops.ACTIVATIONS` ('linear', 'lrelu', ...), applied with its
        standard gain (sqrt(2) for lrelu).
    lr_multiplier : float, optional
        Learning-rate multiplier (the mapping network uses 0.01).
    bias_init : float, optional
        Initial value of every bias entry (the synthesis network's affine layers use 1, so that
        styles start near 1).
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.

    Raises
    ------
    ValueError
        A width that is not an int >= 1, an unknown activation or impl.
    """

    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1,
                 bias_init=0, impl=None):
        super().__init__()
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        self.activation = _check_activation(activation)
        self.impl = check_impl(impl)
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = float(lr_multiplier / np.sqrt(in_features))
        self.bias_gain = float(lr_multiplier)

    def forward(self, x):
        """Apply the layer.

        Parameters
        ----------
        x : torch.Tensor, [N, in_features] float32 or float16
            Input rows.

        Returns
        -------
        torch.Tensor
            [N, out_features], dtype of `x`.
        """
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation, impl=self.impl)

    def extra_repr(self):
        """Summary of the constructor arguments shown inside ``repr(module)``.

        Returns
        -------
        str
            Comma-separated ``name=value`` pairs.
        """
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(torch.nn.Module):
    """Convolution with equalised learning rate, optional FIR up/downsampling, bias, activation
    and clamp (the discriminator's layers and the generator's resnet skips).

    As StyleGAN2-ADA's ``Conv2dLayer``: weights are stored N(0, 1) and scaled at run time by
    ``1 / sqrt(in_channels * kernel_size ** 2)``; resampling runs through
    :func:`retina_fast.ops.conv2d_resample` with the FIR filter `resample_filter`.

    Parameters
    ----------
    in_channels : int
        Input channels, >= 1.
    out_channels : int
        Output channels, >= 1.
    kernel_size : int
        Side of the square kernel in pixels (1 or 3 here); padding ``kernel_size // 2`` keeps the
        spatial size apart from the resampling.
    bias : bool, optional
        Learn an additive bias (default True).
    activation : str, optional
        A key of :data:`retina_fast.ops.ACTIVATIONS`, applied with its standard gain.
    up : int, optional
        Integer upsampling factor (1 = none, 2 = transposed convolution then FIR filter).
    down : int, optional
        Integer downsampling factor (1 = none, 2 = FIR filter then strided convolution).
    resample_filter : sequence of float, optional
        Taps of the separable FIR filter, normalised to unit DC gain (default ``(1, 3, 3, 1)``).
    conv_clamp : float or None, optional
        Clamp the output to [-conv_clamp, conv_clamp] (times the `gain` of :meth:`forward`);
        None disables.
    channels_last : bool, optional
        Recorded for the enclosing block, which picks the memory format (channels_last only when
        running float16 on CUDA).
    trainable : bool, optional
        False freezes the layer (Freeze-D): weight and bias are stored as buffers under the same
        state-dict names, so checkpoints stay interchangeable.
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.

    Raises
    ------
    ValueError
        A channel count or resampling factor that is not an int >= 1, an unknown activation or
        impl, a non-positive conv_clamp.
    """

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1,
                 down=1, resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False,
                 trainable=True, impl=None):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        self.activation = _check_activation(activation)
        self.up = check_int("up", up, minimum=1)
        self.down = check_int("down", down, minimum=1)
        self.conv_clamp = _check_clamp(conv_clamp)
        self.channels_last = bool(channels_last)
        self.impl = check_impl(impl)
        self.register_buffer("resample_filter", _filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = float(1 / np.sqrt(in_channels * kernel_size ** 2))
        self.act_gain = ACTIVATIONS[activation].def_gain

        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:  # Freeze-D: frozen layers keep their weights as buffers (same state_dict names)
            self.register_buffer("weight", weight)
            if bias is not None:
                self.register_buffer("bias", bias)
            else:
                self.bias = None

    def forward(self, x, gain=1):
        """Apply the layer.

        Parameters
        ----------
        x : torch.Tensor, [N, in_channels, H, W] float32 or float16
            Feature maps (H = rows).
        gain : float, optional
            Extra output scale, multiplied into the activation gain and the clamp (the resnet
            branches use sqrt(0.5) so that their sum keeps unit variance).

        Returns
        -------
        torch.Tensor
            [N, out_channels, H * up / down, W * up / down], dtype of `x`.
        """
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        flip_weight = self.up == 1  # correlation is the cheaper form when not transposing
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=flip_weight, impl=self.impl)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp, impl=self.impl)

    def extra_repr(self):
        """Summary of the constructor arguments shown inside ``repr(module)``.

        Returns
        -------
        str
            Comma-separated ``name=value`` pairs.
        """
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel={self.weight.shape[-1]}, up={self.up}, down={self.down}, activation={self.activation}")


# ---------------------------------------------------------------------------------------------
# Mapping network.

class MappingNetwork(torch.nn.Module):
    """z (and optional label c) -> w, broadcast to ``num_ws`` copies, with truncation toward w_avg.

    As StyleGAN2-ADA's ``MappingNetwork``: z and the embedded label are each normalised to unit
    root-mean-square (:func:`normalize_2nd_moment`), concatenated and passed through `num_layers`
    fully connected layers with learning-rate multiplier `lr_multiplier`. When `num_ws` and
    `w_avg_beta` are set, the buffer ``w_avg`` [w_dim] holds an exponential moving average of w,
    the centre of the truncation trick.

    Parameters
    ----------
    z_dim : int
        Latent size, >= 0 (0 = labels only, as the discriminator's label mapping).
    c_dim : int
        Label size, >= 0 (0 = unconditional). `z_dim` and `c_dim` cannot both be 0.
    w_dim : int
        Intermediate latent size, >= 1.
    num_ws : int or None
        Number of copies of w to output (the synthesis network's ``num_ws``); None outputs a
        single [N, w_dim] and keeps no ``w_avg``.
    num_layers : int, optional
        Fully connected layers (8 in config-f; the tiny presets use 2).
    embed_features : int or None, optional
        Width of the label embedding (default `w_dim`; unused when `c_dim` is 0).
    layer_features : int or None, optional
        Width of the hidden layers (default `w_dim`).
    activation : str, optional
        Activation of every layer (default 'lrelu').
    lr_multiplier : float, optional
        Learning-rate multiplier of every layer (default 0.01, as StyleGAN).
    w_avg_beta : float or None, optional
        Decay of the running average: ``w_avg <- w_avg_beta * w_avg + (1 - w_avg_beta) * mean(w)``
        on each call with ``update_emas=True`` (default 0.995, in [0, 1)); None tracks nothing
        and rules out truncation.
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.

    Raises
    ------
    ValueError
        A size that is not a non-negative (or positive) int, both `z_dim` and `c_dim` 0,
        `w_avg_beta` outside [0, 1), an unknown impl.
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None,
                 layer_features=None, activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995, impl=None):
        super().__init__()
        self.z_dim = check_int("z_dim", z_dim, minimum=0)
        self.c_dim = check_int("c_dim", c_dim, minimum=0)
        self.w_dim = check_int("w_dim", w_dim, minimum=1)
        self.num_ws = None if num_ws is None else check_int("num_ws", num_ws, minimum=1)
        self.num_layers = check_int("num_layers", num_layers, minimum=1)
        if z_dim == 0 and c_dim == 0:
            raise ValueError("MappingNetwork: z_dim and c_dim cannot both be 0")
        if w_avg_beta is not None and not 0 <= w_avg_beta < 1:
            raise ValueError(f"w_avg_beta must be None or in [0, 1), got {w_avg_beta!r}")
        self.w_avg_beta = w_avg_beta
        self.impl = check_impl(impl)

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features, impl=impl)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                                          lr_multiplier=lr_multiplier, impl=impl))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        """Map latents to ws.

        Parameters
        ----------
        z : torch.Tensor, [N, z_dim] float, or None
            Latents, normally N(0, 1); ignored (pass None) when ``z_dim == 0``.
        c : torch.Tensor, [N, c_dim] float, or None
            Labels (one-hot for class conditioning); None when ``c_dim == 0``.
        truncation_psi : float, optional
            Truncation trick, ``w <- w_avg + truncation_psi * (w - w_avg)``: 1 (default) = no
            truncation, 0 = every w is ``w_avg``; values below 1 trade diversity for fidelity.
        truncation_cutoff : int or None, optional
            Truncate only ``ws[:, :truncation_cutoff]`` (the coarse layers); None = all `num_ws`.
        update_emas : bool, optional
            Update ``w_avg`` (decay `w_avg_beta`) with this batch's mean w before broadcasting and
            truncation (the training loss does this for G; G_ema copies G's buffers).

        Returns
        -------
        torch.Tensor
            [N, num_ws, w_dim] float32, or [N, w_dim] when `num_ws` is None.

        Raises
        ------
        ValueError
            `z` or `c` of the wrong shape, different row counts, truncation without ``w_avg``
            (``num_ws`` or ``w_avg_beta`` None), a negative `truncation_cutoff`.
        """
        x = None
        if self.z_dim > 0:
            if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise _shape_error("z", z, f"[N, {self.z_dim}]")
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if not isinstance(c, torch.Tensor) or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise _shape_error("c", c, f"[N, {self.c_dim}]")
            if x is not None and c.shape[0] != x.shape[0]:
                raise ValueError(f"c has {c.shape[0]} rows but z has {x.shape[0]}")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_emas and self.w_avg_beta is not None and self.num_ws is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            if self.num_ws is None or self.w_avg_beta is None:
                raise ValueError("truncation needs a mapping network that tracks w_avg (num_ws and w_avg_beta set)")
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                cut = check_int("truncation_cutoff", truncation_cutoff, minimum=0)
                x = torch.cat([self.w_avg.lerp(x[:, :cut], truncation_psi), x[:, cut:]], dim=1)
        return x


# ---------------------------------------------------------------------------------------------
# Synthesis network.

class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution (optionally upsampling 2x) + noise + bias + lrelu + clamp.

    As StyleGAN2-ADA's ``SynthesisLayer``: an affine layer maps w to per-input-channel styles
    (bias initialised to 1), the weight is modulated by them and demodulated to unit norm per
    output channel (:func:`retina_fast.ops.modulated_conv2d`); per-pixel noise scaled by the
    learned scalar ``noise_strength`` (initialised 0) is added before bias and activation.

    Parameters
    ----------
    in_channels : int
        Input channels.
    out_channels : int
        Output channels.
    w_dim : int
        Size of w.
    resolution : int
        Output side in pixels (also the side of the ``noise_const`` buffer).
    kernel_size : int, optional
        Side of the square kernel (default 3).
    up : int, optional
        1 or 2: upsample the input 2x with the FIR filter (transposed modulated convolution).
    use_noise : bool, optional
        Add per-pixel noise (default True).
    activation : str, optional
        A key of :data:`retina_fast.ops.ACTIVATIONS` (default 'lrelu'), with its standard gain.
    resample_filter : sequence of float, optional
        Taps of the separable upsampling FIR filter (default ``(1, 3, 3, 1)``).
    conv_clamp : float or None, optional
        Clamp the output to [-conv_clamp, conv_clamp] (times `gain`); None disables.
    channels_last : bool, optional
        Recorded for the enclosing block (float16 on CUDA only).
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.

    Raises
    ------
    ValueError
        An unknown activation or impl, a non-positive `conv_clamp`.
    """

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False,
                 impl=None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = _check_activation(activation)
        self.conv_clamp = _check_clamp(conv_clamp)
        self.channels_last = bool(channels_last)
        self.impl = check_impl(impl)
        self.register_buffer("resample_filter", _filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, impl=impl)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="random", fused_modconv=True, gain=1):
        """Apply the layer.

        Parameters
        ----------
        x : torch.Tensor, [N, in_channels, resolution / up, resolution / up] float32 or float16
            Feature maps.
        w : torch.Tensor, [N, w_dim] float32
            This layer's intermediate latent (one slice of ws).
        noise_mode : {'random', 'const', 'none'}, optional
            'random': fresh N(0, 1) noise [N, 1, resolution, resolution] on every call; 'const':
            the stored ``noise_const`` buffer, the same for every sample (reproducible images);
            'none': no noise. Any other value adds no noise; :meth:`SynthesisNetwork.forward`
            rejects unknown modes.
        fused_modconv : bool, optional
            Reference kernels only: one grouped convolution with per-sample weights (True) or a
            shared convolution between per-sample activation scalings (False).
        gain : float, optional
            Extra output scale, multiplied into the activation gain and the clamp.

        Returns
        -------
        torch.Tensor
            [N, out_channels, resolution, resolution], dtype of `x`.

        Raises
        ------
        ValueError
            `x` of the wrong shape.
        """
        in_res = self.resolution // self.up
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, in_res, in_res):
            raise _shape_error("SynthesisLayer input", x, f"[N, {self.in_channels}, {in_res}, {in_res}]")
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength

        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv, impl=self.impl)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain,
                        clamp=act_clamp, impl=self.impl)

    def extra_repr(self):
        """Summary of the constructor arguments shown inside ``repr(module)``.

        Returns
        -------
        str
            Comma-separated ``name=value`` pairs.
        """
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"resolution={self.resolution}, up={self.up}")


class ToRGBLayer(torch.nn.Module):
    """Modulated (not demodulated) 1x1 convolution to image channels, plus bias and clamp.

    As StyleGAN2-ADA's ``ToRGBLayer``: styles are scaled by ``1 / sqrt(in_channels * kernel_size ** 2)``
    (equalised learning rate) instead of demodulating; the output is linear.

    Parameters
    ----------
    in_channels : int
        Feature channels in.
    out_channels : int
        Image channels out (3 for RGB).
    w_dim : int
        Size of w.
    kernel_size : int, optional
        Side of the square kernel (default 1).
    conv_clamp : float or None, optional
        Clamp the output to [-conv_clamp, conv_clamp]; None disables.
    channels_last : bool, optional
        Recorded for the enclosing block (float16 on CUDA only).
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.

    Raises
    ------
    ValueError
        An unknown impl, a non-positive `conv_clamp`.
    """

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False,
                 impl=None):
        super().__init__()
        self.conv_clamp = _check_clamp(conv_clamp)
        self.channels_last = bool(channels_last)
        self.impl = check_impl(impl)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, impl=impl)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = float(1 / np.sqrt(in_channels * kernel_size ** 2))

    def forward(self, x, w, fused_modconv=True):
        """Project features to image channels.

        Parameters
        ----------
        x : torch.Tensor, [N, in_channels, R, R] float32 or float16
            Feature maps.
        w : torch.Tensor, [N, w_dim] float32
            This layer's intermediate latent.
        fused_modconv : bool, optional
            Reference kernels only: grouped convolution (True) or scaled activations (False).

        Returns
        -------
        torch.Tensor
            [N, out_channels, R, R], dtype of `x`, in image units (nominally [-1, 1] once summed
            over the blocks).
        """
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv, impl=self.impl)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, impl=self.impl)


class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: (const | 2x-up conv0) + conv1, and ToRGB added to
    the 2x-upsampled image of the previous block ('skip' architecture).

    As StyleGAN2-ADA's ``SynthesisBlock``. The block consumes ``num_conv + num_torgb`` ws; its
    ToRGB layer shares its w with the next block's conv0.

    Parameters
    ----------
    in_channels : int
        Channels of the previous block; 0 for the first (4x4) block, which starts from a learned
        constant ``const`` [out_channels, resolution, resolution].
    out_channels : int
        Channels of this block.
    w_dim : int
        Size of w.
    resolution : int
        Output side in pixels (a power of 2).
    img_channels : int
        Image channels (3 for RGB).
    is_last : bool
        Whether this is the highest-resolution block (it has a ToRGB layer in every architecture).
    architecture : {'orig', 'skip', 'resnet'}, optional
        'skip' (default, config-f): every block adds its ToRGB output to the upsampled image;
        'resnet': a 1x1 upsampling skip convolution is added to conv1's output, both scaled by
        sqrt(0.5); 'orig': plain chain, ToRGB on the last block only.
    resample_filter : sequence of float, optional
        Taps of the separable upsampling FIR filter (default ``(1, 3, 3, 1)``).
    conv_clamp : float or None, optional
        Clamp of every convolution output; None disables.
    use_fp16 : bool, optional
        Run float16 when on CUDA (float32 on CPU regardless).
    fp16_channels_last : bool, optional
        With float16, use the channels_last memory format (default True).
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.
    **layer_kwargs
        Passed to both :class:`SynthesisLayer` (e.g. ``use_noise``, ``activation``,
        ``kernel_size``).

    Raises
    ------
    ValueError
        An unknown architecture or impl, a non-positive `conv_clamp`.
    """

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last,
                 architecture="skip", resample_filter=(1, 3, 3, 1), conv_clamp=None, use_fp16=False,
                 fp16_channels_last=True, impl=None, **layer_kwargs):
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = _check_architecture(architecture)
        self.use_fp16 = bool(use_fp16)
        self.channels_last = self.use_fp16 and bool(fp16_channels_last)
        self.impl = check_impl(impl)
        self.register_buffer("resample_filter", _filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, impl=impl, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, impl=impl, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last, impl=impl)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last, impl=impl)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, noise_mode="random"):
        """Run the block.

        Parameters
        ----------
        x : torch.Tensor, [N, in_channels, resolution / 2, resolution / 2], or None
            Features of the previous block; None (ignored) for the first block.
        img : torch.Tensor, [N, img_channels, resolution / 2, resolution / 2] float32, or None
            Image accumulated so far ('skip'); upsampled 2x here. None for the first block.
        ws : torch.Tensor, [N, num_conv + num_torgb, w_dim] float32
            The ws of this block's layers, in order conv0, conv1, torgb.
        force_fp32 : bool, optional
            Run float32 even where `use_fp16` would select float16.
        fused_modconv : bool or None, optional
            None picks StyleGAN2-ADA's rule: fused in eval mode when running float32 or with a
            batch of 1, not fused in training.
        noise_mode : {'random', 'const', 'none'}, optional
            See :meth:`SynthesisLayer.forward`.

        Returns
        -------
        x : torch.Tensor
            [N, out_channels, resolution, resolution], in the block's dtype.
        img : torch.Tensor or None
            [N, img_channels, resolution, resolution] float32, contiguous; None for a non-last
            block of the 'orig' or 'resnet' architecture.

        Raises
        ------
        ValueError
            `x` of the wrong shape.
        """
        dtype = _run_dtype(self.use_fp16, ws.device, force_fp32)
        memory_format = _memory_format(self.channels_last, dtype)
        if fused_modconv is None:
            # The reference kernels' grouped form pays at inference; training scales activations.
            fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)
        w_iter = iter(ws.unbind(dim=1))

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)

        lk = dict(fused_modconv=fused_modconv, noise_mode=noise_mode)
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), **lk)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), **lk)
            x = self.conv1(x, next(w_iter), gain=np.sqrt(0.5), **lk)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), **lk)
            x = self.conv1(x, next(w_iter), **lk)

        if img is not None:
            img = upsample2d(img, self.resample_filter, impl=self.impl)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y
        return x, img

    def extra_repr(self):
        """Summary of the constructor arguments shown inside ``repr(module)``.

        Returns
        -------
        str
            Comma-separated ``name=value`` pairs.
        """
        return f"resolution={self.resolution}, use_fp16={self.use_fp16}, architecture={self.architecture}"


class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, img_resolution, img_resolution] float32.

    As StyleGAN2-ADA's ``SynthesisNetwork``: one :class:`SynthesisBlock` per resolution from 4 to
    `img_resolution`, with ``min(channel_base // res, channel_max)`` channels at resolution ``res``.
    ``num_ws`` is the number of ws consumed (``2 * log2(img_resolution) - 2``).

    Parameters
    ----------
    w_dim : int
        Size of w, >= 1.
    img_resolution : int
        Output side in pixels, a power of 2 >= 4.
    img_channels : int
        Image channels, >= 1 (3 for RGB).
    channel_base : int, optional
        Channel budget (default 32768; must be >= `img_resolution`).
    channel_max : int, optional
        Upper bound on channels per block (default 512).
    num_fp16_res : int, optional
        Number of highest resolutions run in float16 on CUDA (default 4; never below 8x8).
    conv_clamp : float or None, optional
        Clamp of every convolution output (default 256); None disables.
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.
    **block_kwargs
        Passed to every :class:`SynthesisBlock` (``architecture``, ``resample_filter``,
        ``fp16_channels_last`` and the :class:`SynthesisLayer` arguments).

    Raises
    ------
    ValueError
        A size out of range, a `channel_base` that leaves no channels, an unknown impl.
    """

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512,
                 num_fp16_res=4, conv_clamp=256, impl=None, **block_kwargs):
        super().__init__()
        self.w_dim = check_int("w_dim", w_dim, minimum=1)
        self.img_resolution = _check_resolution("img_resolution", img_resolution)
        self.img_channels = check_int("img_channels", img_channels, minimum=1)
        check_int("channel_base", channel_base, minimum=1)
        check_int("channel_max", channel_max, minimum=1)
        check_int("num_fp16_res", num_fp16_res, minimum=0)
        self.impl = check_impl(impl)
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        if min(channels.values()) < 1:
            raise ValueError(f"channel_base {channel_base} leaves no channels at resolution {img_resolution}: "
                             f"need channel_base >= img_resolution")
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            is_last = res == self.img_resolution
            block = SynthesisBlock(in_channels, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, use_fp16=(res >= fp16_resolution),
                                   conv_clamp=_check_clamp(conv_clamp), impl=impl, **block_kwargs)
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws, noise_mode="random", force_fp32=False, update_emas=False, fused_modconv=None):
        """Render images.

        Parameters
        ----------
        ws : torch.Tensor, [N, num_ws, w_dim] float
            Intermediate latents, one per layer: a block starting at index k uses
            ``ws[:, k:k + num_conv + num_torgb]`` and the next starts at ``k + num_conv`` (ToRGB
            shares its w with the next conv0), as StyleGAN2-ADA.
        noise_mode : {'random', 'const', 'none'}, optional
            'random' (fresh N(0, 1) noise per call), 'const' (the stored ``noise_const`` buffers:
            deterministic images) or 'none'.
        force_fp32 : bool, optional
            Run every block in float32 even on CUDA.
        update_emas : bool, optional
            Accepted for API symmetry; the synthesis network keeps no running averages.
        fused_modconv : bool or None, optional
            None = automatic (see :meth:`SynthesisBlock.forward`); only the reference kernels use
            it.

        Returns
        -------
        torch.Tensor
            [N, img_channels, img_resolution, img_resolution] float32, nominally in [-1, 1]
            (not clamped).

        Raises
        ------
        ValueError
            An unknown `noise_mode`, `ws` of the wrong shape.
        """
        del update_emas  # nothing to track here (StyleGAN2-ADA semantics)
        if noise_mode not in _NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {list(_NOISE_MODES)}, got {noise_mode!r}")
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            raise _shape_error("ws", ws, f"[N, {self.num_ws}, {self.w_dim}]")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            cur_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, cur_ws, force_fp32=force_fp32, fused_modconv=fused_modconv,
                           noise_mode=noise_mode)
        return img


# ---------------------------------------------------------------------------------------------
# Seeds.

def z_from_seeds(seeds, z_dim, device="cpu"):
    """Latents for a list of seeds, as StyleGAN2-ADA's generate.py draws them.

    Row i is ``np.random.RandomState(seeds[i]).randn(z_dim)``: deterministic per seed and
    independent of which other seeds share the batch.

    Parameters
    ----------
    seeds : sequence of int
        Seeds in [0, 2**32 - 1] (list, tuple, range or 1-D integer array), at least one.
    z_dim : int
        Latent size, >= 1.
    device : str or torch.device, optional
        Where to put the result (default 'cpu').

    Returns
    -------
    torch.Tensor
        [len(seeds), z_dim] float32.

    Raises
    ------
    TypeError
        `seeds` is a single int, a tensor or a string.
    ValueError
        `seeds` empty or holding a value that is not an int in [0, 2**32 - 1]; `z_dim` < 1.
    """
    z_dim = check_int("z_dim", z_dim, minimum=1)
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        raise TypeError(f"seeds must be a sequence of ints, got the single int {seeds!r}: wrap it in a list")
    if isinstance(seeds, (torch.Tensor, str, bytes)):
        raise TypeError(f"seeds must be a sequence of ints (list, tuple, range, 1-D integer array), "
                        f"got {type(seeds).__name__}")
    seeds = list(seeds)
    if len(seeds) == 0:
        raise ValueError("seeds is empty")
    for s in seeds:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or not 0 <= s < 2 ** 32:
            raise ValueError(f"seeds must be ints in [0, 2**32 - 1], got {s!r}")
    z = np.stack([np.random.RandomState(int(s)).randn(z_dim) for s in seeds])
    return torch.from_numpy(z).to(device=device, dtype=torch.float32)


def _is_seed_sequence(z):
    if isinstance(z, (list, tuple, range)):
        return True
    return isinstance(z, np.ndarray) and z.ndim == 1 and np.issubdtype(z.dtype, np.integer)


# ---------------------------------------------------------------------------------------------
# Constructor arguments read from a file (snapshots, network pickles).

# Upper bounds on a snapshot's constructor arguments, checked before anything is built from them
# (a hostile file's z_dim of 200000 would otherwise allocate gigabytes before the weights are
# compared). Each is far above any published StyleGAN configuration; any other integer argument
# is held to _MAX_INT.
_KWARG_LIMITS = {"img_resolution": 4096, "z_dim": 8192, "w_dim": 8192, "c_dim": 65536, "img_channels": 16,
                 "channel_base": 2 ** 20, "channel_max": 8192, "num_fp16_res": 16, "cmap_dim": 8192,
                 "embed_features": 8192, "layer_features": 8192, "num_layers": 64, "kernel_size": 15,
                 "mbstd_group_size": 4096, "mbstd_num_channels": 64, "freeze_layers": 4096}
_MAX_INT = 2 ** 20
_MAX_ITEMS = 64


def _check_kwarg_bounds(value, name, depth=0):
    """Every number of a constructor-argument tree within bounds; ValueError naming the argument."""
    if isinstance(value, dict):
        if depth > 2 or len(value) > _MAX_ITEMS:
            raise ValueError(f"{name} is nested too deep or has too many entries")
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{name} has a non-string key {k!r}")
            _check_kwarg_bounds(v, f"{name}[{k!r}]", depth + 1)
    elif isinstance(value, (list, tuple)):
        if len(value) > _MAX_ITEMS:
            raise ValueError(f"{name} has {len(value)} items, more than {_MAX_ITEMS}")
        for i, v in enumerate(value):
            _check_kwarg_bounds(v, f"{name}[{i}]", depth + 1)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, (int, np.integer)):
        key = name.rsplit("[", 1)[-1].strip("]'")
        limit = _KWARG_LIMITS.get(key, _MAX_INT)
        if not -_MAX_INT <= value <= limit:
            raise ValueError(f"{name} = {value} is out of range (at most {limit})")
        if key == "img_resolution" and (value < 4 or value & (value - 1)):
            raise ValueError(f"{name} = {value} is not a power of 2 in [4, {limit}]")
    elif isinstance(value, (float, np.floating)):
        if not np.isfinite(value) or abs(value) > _MAX_INT:
            raise ValueError(f"{name} = {value} is not a finite number of magnitude <= {_MAX_INT}")
    elif isinstance(value, str):
        if len(value) > 64:
            raise ValueError(f"{name} is a string of {len(value)} characters")
    else:
        raise ValueError(f"{name} has type {type(value).__name__}; expected numbers, strings, lists, dicts")


def check_network_kwargs(cls, kwargs, state_dicts=(), where="snapshot", kwargs_name="kwargs"):
    """Check constructor arguments read from a file before a network is built from them.

    The arguments must be within bounds (e.g. ``img_resolution`` a power of 2 in [4, 4096], ``z_dim``
    and ``w_dim`` at most 8192), and the network they describe must have exactly the tensor names
    and shapes of each given state dict. The shapes come from building the network on the ``meta``
    device, which allocates no memory for its tensors, so nothing of the stored size is allocated
    before the file's weights are known to fit.

    Parameters
    ----------
    cls : type
        :class:`Generator` or :class:`Discriminator`, the class the arguments are for.
    kwargs : dict
        Constructor arguments (a snapshot's ``G_kwargs`` or ``D_kwargs``).
    state_dicts : dict of str to dict
        State dicts to compare, by the name they are stored under (``{'G_ema': ...}``).
    where : str
        The file, for messages.
    kwargs_name : str
        The name of `kwargs` in the file, for messages.

    Raises
    ------
    ValueError
        One line naming `where` and the offending argument or tensor.
    """
    if not isinstance(kwargs, dict):
        raise ValueError(f"{where}: {kwargs_name} is a {type(kwargs).__name__}, not a dict")
    try:
        _check_kwarg_bounds(kwargs, kwargs_name)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    meta = build_on_meta(lambda: cls(**dict(kwargs, impl=None)), where, kwargs_name)
    for key, state in state_dicts.items():
        check_state_dict(meta, state, where, key=key, what=kwargs_name)


# ---------------------------------------------------------------------------------------------
# Generator.

class Generator(torch.nn.Module):
    """StyleGAN2 generator: ``mapping`` (z, c -> ws) then ``synthesis`` (ws -> image).

    Defaults are those of the 'paper1024' configuration (config-f, mixed precision on the top 4
    resolutions, conv clamp 256). ``init_kwargs`` keeps a JSON-able copy of the constructor
    arguments (stored in snapshots as ``G_kwargs``); ``num_ws`` is the synthesis network's.

    Parameters
    ----------
    z_dim : int, optional
        Latent size, >= 1 (default 512).
    c_dim : int, optional
        Label size, >= 0 (default 0 = unconditional).
    w_dim : int, optional
        Intermediate latent size, >= 1 (default 512).
    img_resolution : int, optional
        Output side in pixels, a power of 2 >= 4 (default 1024).
    img_channels : int, optional
        Image channels, >= 1 (default 3).
    mapping_kwargs : dict or None, optional
        Further :class:`MappingNetwork` arguments (``num_layers``, ``lr_multiplier``,
        ``w_avg_beta``, ...).
    synthesis_kwargs : dict or None, optional
        Further :class:`SynthesisNetwork` arguments (``channel_base``, ``channel_max``,
        ``num_fp16_res``, ``conv_clamp``, ``architecture``, ...).
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.
        Set on every layer; pass it here, not inside the kwargs dicts.

    Raises
    ------
    ValueError
        An argument out of range, or `impl` inside `mapping_kwargs` / `synthesis_kwargs`.
    """

    def __init__(self, z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                 mapping_kwargs=None, synthesis_kwargs=None, impl=None):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        for name, kw in (("mapping_kwargs", mapping_kwargs), ("synthesis_kwargs", synthesis_kwargs)):
            if "impl" in kw:
                raise ValueError(f"pass impl to Generator, not inside {name}")
        self.init_kwargs = _jsonable(dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                          img_channels=img_channels, mapping_kwargs=mapping_kwargs,
                                          synthesis_kwargs=synthesis_kwargs, impl=check_impl(impl)))
        self.z_dim = check_int("z_dim", z_dim, minimum=1)
        self.c_dim = check_int("c_dim", c_dim, minimum=0)
        self.w_dim = check_int("w_dim", w_dim, minimum=1)
        self.img_resolution = _check_resolution("img_resolution", img_resolution)
        self.img_channels = check_int("img_channels", img_channels, minimum=1)
        self.impl = impl
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          impl=impl, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, impl=impl,
                                      **mapping_kwargs)

    def _device(self):
        return self.synthesis.b4.const.device

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, noise_mode="random",
                force_fp32=False, update_emas=False, fused_modconv=None):
        """Generate images.

        Parameters
        ----------
        z : torch.Tensor, [N, z_dim] float, or sequence of int
            Latents, or seeds turned into latents by :func:`z_from_seeds` on G's device.
        c : torch.Tensor, [N, c_dim] float, or None
            Labels; None (or an empty [N, 0] tensor) when ``c_dim == 0``.
        truncation_psi : float, optional
            ``w <- w_avg + truncation_psi * (w - w_avg)``; 1 = no truncation (see
            :meth:`MappingNetwork.forward`).
        truncation_cutoff : int or None, optional
            Truncate only the first `truncation_cutoff` ws; None = all.
        noise_mode : {'random', 'const', 'none'}, optional
            Per-pixel noise: fresh per call, the stored constant buffers, or none.
        force_fp32 : bool, optional
            float32 everywhere even on CUDA.
        update_emas : bool, optional
            Update ``w_avg`` with this batch (training only).
        fused_modconv : bool or None, optional
            Reference kernels' modulated-convolution form; None = automatic.

        Returns
        -------
        torch.Tensor
            [N, img_channels, img_resolution, img_resolution] float32, nominally in [-1, 1]
            (not clamped).

        Raises
        ------
        TypeError
            `z` neither a float tensor nor a sequence of int seeds.
        ValueError
            `z` or `c` of the wrong shape, labels missing for a conditional generator or given to
            an unconditional one, an unknown `noise_mode`, truncation without ``w_avg``.
        """
        if _is_seed_sequence(z):
            z = z_from_seeds(z, self.z_dim, device=self._device())
        elif not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a tensor [N, {self.z_dim}] or a sequence of int seeds, "
                            f"got {type(z).__name__}")
        elif not z.is_floating_point():
            raise TypeError(f"z must be a float tensor (pass seeds as a list of ints), got {z.dtype}")
        c = self._labels(c)
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32, fused_modconv=fused_modconv)

    def _labels(self, c):
        if self.c_dim == 0:
            if c is not None and (not isinstance(c, torch.Tensor) or c.numel() != 0):
                raise ValueError("c must be None (or an empty [N, 0] tensor) for an unconditional generator")
            return None
        if c is None:
            raise ValueError(f"this generator is conditional: pass c of shape [N, {self.c_dim}]")
        return c


# ---------------------------------------------------------------------------------------------
# Discriminator.

class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the discriminator: (fromrgb) + conv0 + 2x-down conv1 (+ 2x-down 1x1 skip).

    As StyleGAN2-ADA's ``DiscriminatorBlock``. ``num_layers`` counts the layers it created, which
    are numbered from `first_layer_idx` across the whole discriminator for Freeze-D.

    Parameters
    ----------
    in_channels : int
        0 for the first (highest-resolution) block, which reads the image through ``fromrgb``;
        otherwise equal to `tmp_channels`.
    tmp_channels : int
        Channels of conv0 (and of the block's input).
    out_channels : int
        Channels of the output.
    resolution : int
        Input side in pixels; the output side is ``resolution / 2``.
    img_channels : int
        Image channels (3 for RGB).
    first_layer_idx : int
        Index of this block's first layer in the discriminator.
    architecture : {'orig', 'skip', 'resnet'}, optional
        'resnet' (default, config-f): a 1x1 downsampling skip convolution added to conv1's
        output, both scaled by sqrt(0.5); 'skip': the downsampled image is read again by every
        block's ``fromrgb``; 'orig': plain chain.
    activation : str, optional
        Activation of the convolutions (default 'lrelu').
    resample_filter : sequence of float, optional
        Taps of the separable downsampling FIR filter (default ``(1, 3, 3, 1)``).
    conv_clamp : float or None, optional
        Clamp of every convolution output; None disables.
    use_fp16 : bool, optional
        Run float16 when on CUDA (float32 on CPU regardless).
    fp16_channels_last : bool, optional
        With float16, use the channels_last memory format (default True).
    freeze_layers : int, optional
        Freeze-D: layers with index below this are frozen (stored as buffers); default 0.
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.

    Raises
    ------
    ValueError
        `in_channels` neither 0 nor `tmp_channels`, an unknown architecture, activation or impl.
    """

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx,
                 architecture="resnet", activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None,
                 use_fp16=False, fp16_channels_last=True, freeze_layers=0, impl=None):
        super().__init__()
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"in_channels must be 0 or tmp_channels ({tmp_channels}), got {in_channels}")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = _check_architecture(architecture)
        self.use_fp16 = bool(use_fp16)
        self.channels_last = self.use_fp16 and bool(fp16_channels_last)
        self.impl = check_impl(impl)
        self.register_buffer("resample_filter", _filter(resample_filter))

        # Layers are numbered in creation order across the whole D (fromrgb, conv0, conv1, skip,
        # highest resolution first); Freeze-D freezes those numbered below freeze_layers.
        self.num_layers = 0

        def trainable():
            idx = self.first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        common = dict(channels_last=self.channels_last, impl=impl)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       trainable=trainable(), conv_clamp=conv_clamp, **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=trainable(), conv_clamp=conv_clamp, **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 trainable=trainable(), resample_filter=resample_filter, conv_clamp=conv_clamp,
                                 **common)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    trainable=trainable(), resample_filter=resample_filter, **common)

    def forward(self, x, img, force_fp32=False):
        """Run the block.

        Parameters
        ----------
        x : torch.Tensor, [N, in_channels, resolution, resolution], or None
            Features of the previous block; None for the first block.
        img : torch.Tensor, [N, img_channels, resolution, resolution] float, or None
            The image (first block, or every block with 'skip'); otherwise None.
        force_fp32 : bool, optional
            Run float32 even where `use_fp16` would select float16.

        Returns
        -------
        x : torch.Tensor
            [N, out_channels, resolution / 2, resolution / 2], in the block's dtype.
        img : torch.Tensor or None
            The image downsampled 2x for 'skip'; None otherwise.
        """
        dtype = _run_dtype(self.use_fp16, img.device if img is not None else x.device, force_fp32)
        memory_format = _memory_format(self.channels_last, dtype)
        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter, impl=self.impl) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img

    def extra_repr(self):
        """Summary of the constructor arguments shown inside ``repr(module)``.

        Returns
        -------
        str
            Comma-separated ``name=value`` pairs.
        """
        return f"resolution={self.resolution}, use_fp16={self.use_fp16}, architecture={self.architecture}"


class MinibatchStdLayer(torch.nn.Module):
    """Append the mean standard deviation over groups of ``group_size`` samples as extra channels.

    As StyleGAN2-ADA's ``MinibatchStdLayer``: the batch is split into groups of G samples (sample
    ``i * N / G + j`` is member i of group j), the standard deviation of each feature is taken over
    each group, averaged over channels (in `num_channels` channel groups) and pixels, and appended
    as `num_channels` constant maps, letting the discriminator see the variety of a batch.

    Parameters
    ----------
    group_size : int or None
        Samples per group; ``min(group_size, N)`` is used. None = the whole batch.
    num_channels : int, optional
        Number of statistics channels appended (default 1).

    Raises
    ------
    ValueError
        `group_size` or `num_channels` not an int >= 1.
    """

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = None if group_size is None else check_int("mbstd_group_size", group_size, minimum=1)
        self.num_channels = check_int("mbstd_num_channels", num_channels, minimum=1)

    def forward(self, x):
        """Append the statistics channels.

        Parameters
        ----------
        x : torch.Tensor, [N, C, H, W] float
            Features; N divisible by the group size and C by `num_channels`.

        Returns
        -------
        torch.Tensor
            [N, C + num_channels, H, W], dtype of `x`.

        Raises
        ------
        ValueError
            N not divisible by the group size, or C by `num_channels`.
        """
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        if n % g != 0:
            raise ValueError(f"MinibatchStdLayer: batch size {n} is not divisible by the group size {g} "
                             f"(mbstd_group_size={self.group_size})")
        if c % f != 0:
            raise ValueError(f"MinibatchStdLayer: {c} channels are not divisible by num_channels {f}")
        y = x.reshape(g, -1, f, c // f, h, w)   # sample n*i + j of the batch is group member i of group j
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])               # [n/g, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def extra_repr(self):
        """Summary of the constructor arguments shown inside ``repr(module)``.

        Returns
        -------
        str
            Comma-separated ``name=value`` pairs.
        """
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(torch.nn.Module):
    """4x4 head: minibatch-std, 3x3 conv, fully connected, output logit (or label projection).

    As StyleGAN2-ADA's ``DiscriminatorEpilogue``. Conditional discriminators project the output
    onto the label embedding ``cmap`` (projection discriminator), scaled by ``1 / sqrt(cmap_dim)``.

    Parameters
    ----------
    in_channels : int
        Channels of the 4x4 features.
    cmap_dim : int
        Size of the label embedding; 0 = unconditional (one output logit).
    resolution : int
        Side of the input features (4).
    img_channels : int
        Image channels (used by the 'skip' architecture's ``fromrgb``).
    architecture : {'orig', 'skip', 'resnet'}, optional
        As the discriminator's (default 'resnet').
    mbstd_group_size : int or None, optional
        Group size of :class:`MinibatchStdLayer` (default 4; None = whole batch).
    mbstd_num_channels : int, optional
        Statistics channels appended (default 1; 0 disables the minibatch-std layer).
    activation : str, optional
        Activation of the conv and the hidden fully connected layer (default 'lrelu').
    conv_clamp : float or None, optional
        Clamp of the convolution output; None disables.
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.

    Raises
    ------
    ValueError
        An unknown architecture or impl, bad minibatch-std arguments.
    """

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture="resnet",
                 mbstd_group_size=4, mbstd_num_channels=1, activation="lrelu", conv_clamp=None, impl=None):
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = _check_architecture(architecture)
        self.impl = check_impl(impl)
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation, impl=impl)
        self.mbstd = (MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
                      if mbstd_num_channels > 0 else None)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp, impl=impl)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation, impl=impl)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim, impl=impl)

    def forward(self, x, img, cmap, force_fp32=False):
        """Score the 4x4 features.

        Parameters
        ----------
        x : torch.Tensor, [N, in_channels, resolution, resolution]
            Features of the last block (cast to float32 here).
        img : torch.Tensor, [N, img_channels, resolution, resolution], or None
            Downsampled image, read only by the 'skip' architecture.
        cmap : torch.Tensor, [N, cmap_dim] float32, or None
            Label embedding; None when ``cmap_dim == 0``.
        force_fp32 : bool, optional
            Ignored: the head always runs float32.

        Returns
        -------
        torch.Tensor
            [N, 1] float32 logits (higher = judged real).

        Raises
        ------
        ValueError
            From the minibatch-std layer: a batch not divisible by its group size.
        """
        del force_fp32  # the head always runs float32
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x


class Discriminator(torch.nn.Module):
    """StyleGAN2 residual discriminator: image [N, C, R, R] (+ labels) -> logits [N, 1].

    Defaults are those of the 'paper1024' configuration. ``block_kwargs={'freeze_layers': k}``
    freezes the first k layers (Freeze-D; layers counted fromrgb, conv0, conv1, skip per block,
    highest resolution first): they become buffers, so the state dict keys are unchanged.
    ``init_kwargs`` keeps a JSON-able copy of the constructor arguments (``D_kwargs``).

    Parameters
    ----------
    c_dim : int, optional
        Label size, >= 0 (default 0 = unconditional).
    img_resolution : int, optional
        Input side in pixels, a power of 2 >= 4 (default 1024).
    img_channels : int, optional
        Image channels, >= 1 (default 3).
    architecture : {'orig', 'skip', 'resnet'}, optional
        Block architecture (default 'resnet', config-f).
    channel_base : int, optional
        Channel budget: ``min(channel_base // res, channel_max)`` channels at resolution ``res``
        (default 32768; must be >= `img_resolution`).
    channel_max : int, optional
        Upper bound on channels per block (default 512).
    num_fp16_res : int, optional
        Number of highest resolutions run in float16 on CUDA (default 4; never below 8x8).
    conv_clamp : float or None, optional
        Clamp of every convolution output (default 256); None disables.
    cmap_dim : int or None, optional
        Size of the label embedding (default: the channels at 4x4); ignored when unconditional.
    mbstd_group_size : int or None, optional
        Minibatch-std group size (default 4; None = whole batch).
    mbstd_num_channels : int, optional
        Minibatch-std channels (default 1; 0 disables).
    block_kwargs : dict or None, optional
        Further :class:`DiscriminatorBlock` arguments (``freeze_layers``, ``activation``, ...).
    mapping_kwargs : dict or None, optional
        Further arguments of the label :class:`MappingNetwork` (conditional only).
    epilogue_kwargs : dict or None, optional
        Further :class:`DiscriminatorEpilogue` arguments.
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.
        Set on every layer; pass it here, not inside the kwargs dicts.

    Raises
    ------
    ValueError
        An argument out of range, a `channel_base` that leaves no channels, `impl` or the
        minibatch-std arguments inside the kwargs dicts.
    """

    def __init__(self, c_dim=0, img_resolution=1024, img_channels=3, architecture="resnet", channel_base=32768,
                 channel_max=512, num_fp16_res=4, conv_clamp=256, cmap_dim=None, mbstd_group_size=4,
                 mbstd_num_channels=1, block_kwargs=None, mapping_kwargs=None, epilogue_kwargs=None, impl=None):
        super().__init__()
        block_kwargs = dict(block_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        for name, kw in (("block_kwargs", block_kwargs), ("mapping_kwargs", mapping_kwargs),
                         ("epilogue_kwargs", epilogue_kwargs)):
            if "impl" in kw:
                raise ValueError(f"pass impl to Discriminator, not inside {name}")
        for k in ("mbstd_group_size", "mbstd_num_channels"):
            if k in epilogue_kwargs:
                raise ValueError(f"pass {k} to Discriminator directly, not inside epilogue_kwargs")
        self.init_kwargs = _jsonable(dict(
            c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, architecture=architecture,
            channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
            cmap_dim=cmap_dim, mbstd_group_size=mbstd_group_size, mbstd_num_channels=mbstd_num_channels,
            block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs, epilogue_kwargs=epilogue_kwargs,
            impl=check_impl(impl)))
        self.c_dim = check_int("c_dim", c_dim, minimum=0)
        self.img_resolution = _check_resolution("img_resolution", img_resolution)
        self.img_channels = check_int("img_channels", img_channels, minimum=1)
        _check_architecture(architecture)
        check_int("channel_base", channel_base, minimum=1)
        check_int("channel_max", channel_max, minimum=1)
        check_int("num_fp16_res", num_fp16_res, minimum=0)
        _check_clamp(conv_clamp)
        if mbstd_group_size is not None:
            check_int("mbstd_group_size", mbstd_group_size, minimum=1)
        check_int("mbstd_num_channels", mbstd_num_channels, minimum=0)
        self.impl = impl
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        if min(channels.values()) < 1:
            raise ValueError(f"channel_base {channel_base} leaves no channels at resolution {img_resolution}: "
                             f"need channel_base >= img_resolution")
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp, impl=impl)
        cur_layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels[res], channels[res // 2], resolution=res,
                                       first_layer_idx=cur_layer_idx, use_fp16=(res >= fp16_resolution),
                                       **block_kwargs, **common)
            setattr(self, f"b{res}", block)
            cur_layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          impl=impl, **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4,
                                        mbstd_group_size=mbstd_group_size, mbstd_num_channels=mbstd_num_channels,
                                        **epilogue_kwargs, **common)

    def forward(self, img, c=None, update_emas=False, force_fp32=False):
        """Score images.

        Parameters
        ----------
        img : torch.Tensor, [N, img_channels, img_resolution, img_resolution] float
            Images nominally in [-1, 1].
        c : torch.Tensor, [N, c_dim] float, or None
            Labels; None (or an empty [N, 0] tensor) when ``c_dim == 0``.
        update_emas : bool, optional
            Accepted for API symmetry (D keeps no running averages).
        force_fp32 : bool, optional
            float32 everywhere even on CUDA.

        Returns
        -------
        torch.Tensor
            [N, 1] float32 logits (higher = judged real).

        Raises
        ------
        ValueError
            `img` of the wrong shape, labels missing for a conditional discriminator or given to
            an unconditional one, a batch not divisible by the minibatch-std group size.
        TypeError
            `img` not a float tensor.
        """
        del update_emas
        r = self.img_resolution
        if (not isinstance(img, torch.Tensor) or img.ndim != 4
                or tuple(img.shape[1:]) != (self.img_channels, r, r)):
            raise _shape_error("img", img, f"[N, {self.img_channels}, {r}, {r}]")
        if not img.is_floating_point():
            raise TypeError(f"img must be a float tensor, got {img.dtype}")
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        cmap = None
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"this discriminator is conditional: pass c of shape [N, {self.c_dim}]")
            cmap = self.mapping(None, c)
        elif c is not None and (not isinstance(c, torch.Tensor) or c.numel() != 0):
            raise ValueError("c must be None (or an empty [N, 0] tensor) for an unconditional discriminator")
        return self.b4(x, img, cmap)


# ---------------------------------------------------------------------------------------------
# Implementation switch.

def set_impl(module, impl):
    """Set ``impl`` (None, 'native' or 'ref') on every layer of ``module`` (a G, D or any part).

    Also updates ``init_kwargs['impl']`` of the networks inside, so that a network rebuilt from
    its ``init_kwargs`` uses the same implementation.

    Parameters
    ----------
    module : torch.nn.Module
        A network of this module or any part of one; changed in place.
    impl : {None, 'native', 'ref'}
        None uses the native kernels where built for the device, 'native' insists on them,
        'ref' uses the pure-PyTorch reference.

    Returns
    -------
    torch.nn.Module
        `module` itself.

    Raises
    ------
    ValueError
        An unknown `impl`.
    TypeError
        `module` not a ``torch.nn.Module``.
    """
    check_impl(impl)
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    for m in module.modules():
        if hasattr(m, "impl"):
            m.impl = impl
        kw = getattr(m, "init_kwargs", None)
        if isinstance(kw, dict) and "impl" in kw:
            kw["impl"] = impl
    return module


# ---------------------------------------------------------------------------------------------
# Presets (StyleGAN2-ADA cfg_specs and what they imply for the networks).

def _spec(resolution, ref_gpus, kimg, mb, mbstd, fmaps, lrate, gamma, ema, ramp, map, z_dim=512, w_dim=512,
          channel_base=None, channel_max=512, num_fp16_res=4, conv_clamp=256):
    return dict(
        # StyleGAN2-ADA cfg_specs names:
        ref_gpus=ref_gpus, kimg=kimg, mb=mb, mbstd=mbstd, fmaps=fmaps, lrate=lrate, gamma=gamma, ema=ema,
        ramp=ramp, map=map,
        # The same, spelled out, plus the architecture they select:
        resolution=resolution, z_dim=z_dim, w_dim=w_dim, mapping_layers=map,
        channel_base=int(fmaps * 32768) if channel_base is None else channel_base, channel_max=channel_max,
        num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, batch=mb, mbstd_group=mbstd, lr=lrate,
        ema_kimg=ema, ema_rampup=ramp)


PRESETS = {
    # StyleGAN2-ADA 'paper1024' / 'paper512' / 'paper256' (their cfg_specs, 8 reference GPUs).
    "paper1024": _spec(1024, ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=2, ema=10,
                       ramp=None, map=8),
    "512": _spec(512, ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=1, lrate=0.0025, gamma=0.5, ema=20,
                 ramp=None, map=8),
    "256": _spec(256, ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=0.5, lrate=0.0025, gamma=1, ema=20,
                 ramp=None, map=8),
    # Tiny CPU presets for tests and demos: z/w 64, 2 mapping layers, at most 64 channels, float32.
    # Training hyper-parameters follow StyleGAN2-ADA's 'auto' rules for one GPU at batch 4
    # (gamma = 0.0002 R^2 / mb, ema = mb * 10 / 32 kimg, ramp 0.05, lrate 0.0025).
    "64": _spec(64, ref_gpus=1, kimg=2, mb=4, mbstd=4, fmaps=2048 / 32768, lrate=0.0025,
                gamma=0.0002 * 64 ** 2 / 4, ema=4 * 10 / 32, ramp=0.05, map=2, z_dim=64, w_dim=64,
                channel_max=64, num_fp16_res=0),
    "32": _spec(32, ref_gpus=1, kimg=2, mb=4, mbstd=4, fmaps=1024 / 32768, lrate=0.0025,
                gamma=0.0002 * 32 ** 2 / 4, ema=4 * 10 / 32, ramp=0.05, map=2, z_dim=64, w_dim=64,
                channel_max=64, num_fp16_res=0),
}

_ARCH_KEYS = ("resolution", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "num_fp16_res",
              "conv_clamp", "mbstd_group", "img_channels")


def make_networks(preset, c_dim=0, impl=None, **overrides):
    """Build ``(G, D)`` for a preset of :data:`PRESETS`.

    The generator uses the 'skip' and the discriminator the 'resnet' architecture (config-f).

    Parameters
    ----------
    preset : {'paper1024', '512', '256', '64', '32'}
        A key of :data:`PRESETS`.
    c_dim : int, optional
        Label size (default 0 = unconditional).
    impl : {None, 'native', 'ref'}, optional
        Kernel implementation passed to :mod:`retina_fast.ops`: None uses the native kernel where
        it is built for the tensors' device and the pure-PyTorch reference otherwise.
    **overrides
        Architecture keys to change: ``resolution``, ``z_dim``, ``w_dim``, ``mapping_layers``,
        ``channel_base``, ``channel_max``, ``num_fp16_res``, ``conv_clamp``, ``mbstd_group``,
        ``img_channels`` (default 3).

    Returns
    -------
    G : Generator
        Freshly initialised (from the global torch RNG) on the default device.
    D : Discriminator
        Likewise.

    Raises
    ------
    ValueError
        An unknown preset or override key, or an override out of range.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    unknown = sorted(set(overrides) - set(_ARCH_KEYS))
    if unknown:
        raise ValueError(f"make_networks: unknown override(s) {unknown}; allowed: {list(_ARCH_KEYS)}")
    spec = dict(PRESETS[preset], img_channels=3)
    spec.update(overrides)
    G = Generator(z_dim=spec["z_dim"], c_dim=c_dim, w_dim=spec["w_dim"], img_resolution=spec["resolution"],
                  img_channels=spec["img_channels"], mapping_kwargs=dict(num_layers=spec["mapping_layers"]),
                  synthesis_kwargs=dict(channel_base=spec["channel_base"], channel_max=spec["channel_max"],
                                        num_fp16_res=spec["num_fp16_res"], conv_clamp=spec["conv_clamp"],
                                        architecture="skip"),
                  impl=impl)
    D = Discriminator(c_dim=c_dim, img_resolution=spec["resolution"], img_channels=spec["img_channels"],
                      architecture="resnet", channel_base=spec["channel_base"], channel_max=spec["channel_max"],
                      num_fp16_res=spec["num_fp16_res"], conv_clamp=spec["conv_clamp"],
                      mbstd_group_size=spec["mbstd_group"], impl=impl)
    return G, D


