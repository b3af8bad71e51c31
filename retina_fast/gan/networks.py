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
"""
import os

import numpy as np
import torch

from retina_fast.ops import (ACTIVATIONS, bias_act, conv2d_resample, downsample2d, modulated_conv2d,
                             setup_filter, upsample2d)

__all__ = [
    "FullyConnectedLayer", "Conv2dLayer", "MappingNetwork", "SynthesisLayer", "ToRGBLayer",
    "SynthesisBlock", "SynthesisNetwork", "Generator", "DiscriminatorBlock", "MinibatchStdLayer",
    "DiscriminatorEpilogue", "Discriminator", "PRESETS", "make_networks", "set_impl", "z_from_seeds",
    "normalize_2nd_moment", "SNAPSHOT_FORMAT",
]

SNAPSHOT_FORMAT = "retina_fast.gan/1"
_IMPLS = (None, "native", "ref")
_NOISE_MODES = ("random", "const", "none")


# ---------------------------------------------------------------------------------------------
# Argument checks shared by the layers.

def _check_impl(impl, where="impl"):
    if impl not in _IMPLS:
        raise ValueError(f"{where} must be None, 'native' or 'ref', got {impl!r}")
    return impl


def _check_resolution(name, value):
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 4
            or value & (value - 1) != 0):
        raise ValueError(f"{name} must be a power of 2 >= 4, got {value!r}")
    return int(value)


def _check_pos_int(name, value, minimum=1):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
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
    """Scale ``x`` to unit root-mean-square along ``dim`` (the mapping network's input norm)."""
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
    """Dense layer with equalised learning rate: ``act(x @ (W * weight_gain).T + b * bias_gain)``."""

    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1,
                 bias_init=0, impl=None):
        super().__init__()
        self.in_features = _check_pos_int("in_features", in_features)
        self.out_features = _check_pos_int("out_features", out_features)
        self.activation = _check_activation(activation)
        self.impl = _check_impl(impl)
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = float(lr_multiplier / np.sqrt(in_features))
        self.bias_gain = float(lr_multiplier)

    def forward(self, x):
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
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(torch.nn.Module):
    """Convolution with equalised learning rate, optional FIR up/downsampling, bias, activation
    and clamp (the discriminator's layers and the generator's resnet skips)."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1,
                 down=1, resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False,
                 trainable=True, impl=None):
        super().__init__()
        self.in_channels = _check_pos_int("in_channels", in_channels)
        self.out_channels = _check_pos_int("out_channels", out_channels)
        self.activation = _check_activation(activation)
        self.up = _check_pos_int("up", up)
        self.down = _check_pos_int("down", down)
        self.conv_clamp = _check_clamp(conv_clamp)
        self.channels_last = bool(channels_last)
        self.impl = _check_impl(impl)
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
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        flip_weight = self.up == 1  # correlation is the cheaper form when not transposing
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=flip_weight, impl=self.impl)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp, impl=self.impl)

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel={self.weight.shape[-1]}, up={self.up}, down={self.down}, activation={self.activation}")


# ---------------------------------------------------------------------------------------------
# Mapping network.

class MappingNetwork(torch.nn.Module):
    """z (and optional label c) -> w, broadcast to ``num_ws`` copies, with truncation toward w_avg."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None,
                 layer_features=None, activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995, impl=None):
        super().__init__()
        self.z_dim = _check_pos_int("z_dim", z_dim, 0)
        self.c_dim = _check_pos_int("c_dim", c_dim, 0)
        self.w_dim = _check_pos_int("w_dim", w_dim)
        self.num_ws = None if num_ws is None else _check_pos_int("num_ws", num_ws)
        self.num_layers = _check_pos_int("num_layers", num_layers)
        if z_dim == 0 and c_dim == 0:
            raise ValueError("MappingNetwork: z_dim and c_dim cannot both be 0")
        if w_avg_beta is not None and not 0 <= w_avg_beta < 1:
            raise ValueError(f"w_avg_beta must be None or in [0, 1), got {w_avg_beta!r}")
        self.w_avg_beta = w_avg_beta
        self.impl = _check_impl(impl)

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
        z : [N, z_dim] tensor (ignored when z_dim == 0).
        c : [N, c_dim] labels, or None when c_dim == 0.
        truncation_psi : 1 = no truncation, 0 = every w is w_avg; ``w_avg + psi (w - w_avg)``.
        truncation_cutoff : truncate only the first ``cutoff`` ws (None = all).
        update_emas : update the running average ``w_avg`` (beta ``w_avg_beta``) with this batch.

        Returns
        -------
        [N, num_ws, w_dim] float32 (or [N, w_dim] when num_ws is None).
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
                cut = _check_pos_int("truncation_cutoff", truncation_cutoff, 0)
                x = torch.cat([self.w_avg.lerp(x[:, :cut], truncation_psi), x[:, cut:]], dim=1)
        return x


# ---------------------------------------------------------------------------------------------
# Synthesis network.

class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution (optionally upsampling 2x) + noise + bias + lrelu + clamp."""

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
        self.impl = _check_impl(impl)
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
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"resolution={self.resolution}, up={self.up}")


class ToRGBLayer(torch.nn.Module):
    """Modulated (not demodulated) 1x1 convolution to image channels, plus bias and clamp."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False,
                 impl=None):
        super().__init__()
        self.conv_clamp = _check_clamp(conv_clamp)
        self.channels_last = bool(channels_last)
        self.impl = _check_impl(impl)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, impl=impl)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = float(1 / np.sqrt(in_channels * kernel_size ** 2))

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv, impl=self.impl)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, impl=self.impl)


class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: (const | 2x-up conv0) + conv1, and ToRGB added to
    the 2x-upsampled image of the previous block ('skip' architecture)."""

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
        self.impl = _check_impl(impl)
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
        return f"resolution={self.resolution}, use_fp16={self.use_fp16}, architecture={self.architecture}"


class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, img_resolution, img_resolution] float32."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512,
                 num_fp16_res=4, conv_clamp=256, impl=None, **block_kwargs):
        super().__init__()
        self.w_dim = _check_pos_int("w_dim", w_dim)
        self.img_resolution = _check_resolution("img_resolution", img_resolution)
        self.img_channels = _check_pos_int("img_channels", img_channels)
        _check_pos_int("channel_base", channel_base)
        _check_pos_int("channel_max", channel_max)
        _check_pos_int("num_fp16_res", num_fp16_res, 0)
        self.impl = _check_impl(impl)
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
        ws : [N, num_ws, w_dim] intermediate latents (one per layer; block b uses ws[:, k:k+3]).
        noise_mode : 'random' (fresh noise per call), 'const' (the stored noise_const buffers)
            or 'none'.
        force_fp32 : run every block in float32 even on CUDA.
        update_emas : accepted for API symmetry; the synthesis network keeps no running averages.
        fused_modconv : None = automatic; only the reference kernels use it.

        Returns
        -------
        [N, img_channels, R, R] float32.
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
    seeds : sequence of ints in [0, 2**32 - 1] (list, tuple, range or 1-D integer array).
    z_dim : int >= 1.
    device : where to put the result.

    Returns
    -------
    float32 tensor [len(seeds), z_dim].
    """
    z_dim = _check_pos_int("z_dim", z_dim)
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
# Checkpoints.

def _load_snapshot(path, key, kwargs_key):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        snap = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage files
        raise ValueError(f"checkpoint {path} could not be read as a retina_fast.gan snapshot "
                         f"(corrupt or not a torch.save file): {type(exc).__name__}: {exc}") from None
    if not isinstance(snap, dict):
        raise ValueError(f"checkpoint {path} holds a {type(snap).__name__}, not a snapshot dict")
    fmt = snap.get("format")
    if fmt is not None and fmt != SNAPSHOT_FORMAT:
        raise ValueError(f"checkpoint {path} has format {fmt!r}; this code reads {SNAPSHOT_FORMAT!r}")
    missing = [k for k in (kwargs_key, key) if k not in snap]
    if missing:
        raise ValueError(f"checkpoint {path} lacks the key(s) {missing}; it has {sorted(snap)}")
    if not isinstance(snap[kwargs_key], dict) or not isinstance(snap[key], dict):
        raise ValueError(f"checkpoint {path}: {kwargs_key!r} and {key!r} must be dicts")
    return path, snap[kwargs_key], snap[key]


def _build_from_snapshot(cls, path, key, kwargs_key, device, impl):
    path, kwargs, state = _load_snapshot(path, key, kwargs_key)
    kwargs = dict(kwargs, impl=_check_impl(impl))
    try:
        net = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {path}: {kwargs_key} does not build a {cls.__name__}: {exc}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {path}: {key!r} does not match {kwargs_key}: {exc}") from None
    return net.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Generator.

class Generator(torch.nn.Module):
    """StyleGAN2 generator: ``mapping`` (z, c -> ws) then ``synthesis`` (ws -> image).

    Defaults are those of the 'paper1024' configuration (config-f, mixed precision on the top 4
    resolutions, conv clamp 256).
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
                                          synthesis_kwargs=synthesis_kwargs, impl=_check_impl(impl)))
        self.z_dim = _check_pos_int("z_dim", z_dim)
        self.c_dim = _check_pos_int("c_dim", c_dim, 0)
        self.w_dim = _check_pos_int("w_dim", w_dim)
        self.img_resolution = _check_resolution("img_resolution", img_resolution)
        self.img_channels = _check_pos_int("img_channels", img_channels)
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
        z : [N, z_dim] float tensor, or a sequence of int seeds (-> :func:`z_from_seeds` on G's device).
        c : [N, c_dim] labels, or None when c_dim == 0.
        truncation_psi, truncation_cutoff : truncation toward w_avg (see :class:`MappingNetwork`).
        noise_mode : 'random', 'const' or 'none'.
        force_fp32 : float32 everywhere even on CUDA.
        update_emas : update w_avg with this batch.

        Returns
        -------
        [N, img_channels, img_resolution, img_resolution] float32, nominally in [-1, 1].
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

    @classmethod
    def from_checkpoint(cls, path, key="G_ema", device="cpu", impl=None):
        """Load a generator from a snapshot file (format ``retina_fast.gan/1``).

        Reads ``snap['G_kwargs']`` and the state dict ``snap[key]`` (``'G_ema'`` or ``'G'``) with
        ``torch.load(weights_only=True)``; ``impl`` replaces the one stored in G_kwargs. Returns
        the generator on ``device`` in eval mode with ``requires_grad`` off (ready to generate;
        to train, build one from G_kwargs and ``load_state_dict``).
        Raises FileNotFoundError for a missing file and ValueError naming the file when it is
        corrupt, of another format, or lacks the keys.
        """
        return _build_from_snapshot(cls, path, key, "G_kwargs", device, impl)


# ---------------------------------------------------------------------------------------------
# Discriminator.

class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the discriminator: (fromrgb) + conv0 + 2x-down conv1 (+ 2x-down 1x1 skip)."""

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
        self.impl = _check_impl(impl)
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
        return f"resolution={self.resolution}, use_fp16={self.use_fp16}, architecture={self.architecture}"


class MinibatchStdLayer(torch.nn.Module):
    """Append the mean standard deviation over groups of ``group_size`` samples as extra channels."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = None if group_size is None else _check_pos_int("mbstd_group_size", group_size)
        self.num_channels = _check_pos_int("mbstd_num_channels", num_channels)

    def forward(self, x):
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
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(torch.nn.Module):
    """4x4 head: minibatch-std, 3x3 conv, fully connected, output logit (or label projection)."""

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture="resnet",
                 mbstd_group_size=4, mbstd_num_channels=1, activation="lrelu", conv_clamp=None, impl=None):
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = _check_architecture(architecture)
        self.impl = _check_impl(impl)
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation, impl=impl)
        self.mbstd = (MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
                      if mbstd_num_channels > 0 else None)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp, impl=impl)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation, impl=impl)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim, impl=impl)

    def forward(self, x, img, cmap, force_fp32=False):
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
            impl=_check_impl(impl)))
        self.c_dim = _check_pos_int("c_dim", c_dim, 0)
        self.img_resolution = _check_resolution("img_resolution", img_resolution)
        self.img_channels = _check_pos_int("img_channels", img_channels)
        _check_architecture(architecture)
        _check_pos_int("channel_base", channel_base)
        _check_pos_int("channel_max", channel_max)
        _check_pos_int("num_fp16_res", num_fp16_res, 0)
        _check_clamp(conv_clamp)
        if mbstd_group_size is not None:
            _check_pos_int("mbstd_group_size", mbstd_group_size)
        _check_pos_int("mbstd_num_channels", mbstd_num_channels, 0)
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
        img : [N, img_channels, R, R] float tensor (R = img_resolution), nominally in [-1, 1].
        c : [N, c_dim] labels, or None when c_dim == 0.
        update_emas : accepted for API symmetry (D keeps no running averages).
        force_fp32 : float32 everywhere even on CUDA.

        Returns
        -------
        [N, 1] float32 logits.
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

    @classmethod
    def from_checkpoint(cls, path, key="D", device="cpu", impl=None):
        """Load the discriminator of a snapshot (``snap['D_kwargs']``, ``snap[key]``); eval mode,
        ``requires_grad`` off. Errors as :meth:`Generator.from_checkpoint`."""
        return _build_from_snapshot(cls, path, key, "D_kwargs", device, impl)


# ---------------------------------------------------------------------------------------------
# Implementation switch.

def set_impl(module, impl):
    """Set ``impl`` (None, 'native' or 'ref') on every layer of ``module`` (a G, D or any part).

    Also updates ``init_kwargs['impl']`` of the networks inside, so that a network rebuilt from
    its ``init_kwargs`` uses the same implementation. Returns ``module``.
    """
    _check_impl(impl)
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

    Parameters
    ----------
    preset : key of PRESETS ('paper1024', '512', '256', '64', '32').
    c_dim : label dimensionality (0 = unconditional).
    impl : None, 'native' or 'ref' for every layer.
    **overrides : architecture keys to change: resolution, z_dim, w_dim, mapping_layers,
        channel_base, channel_max, num_fp16_res, conv_clamp, mbstd_group, img_channels (default 3).

    Returns
    -------
    (Generator, Discriminator), freshly initialised on the CPU (use the global torch RNG).
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


