"""NVlabs StyleGAN2-ADA / StyleGAN3 network pickles, read without running the code inside them.

    nets = load_network_pickle("network-snapshot-025000.pkl")    # our G, D, G_ema, ADA p, dataset options
    G = Generator.from_checkpoint("network-snapshot-025000.pkl") # its G_ema, ready to generate
    convert_network_pickle("network-snapshot-025000.pkl", "nvlabs.pt")   # `retina-fast convert`

The format (NVlabs' public ``torch_utils/persistence.py`` and ``training/training_loop.py``, the
same in ``stylegan2-ada-pytorch`` and ``stylegan3``): the training loop pickles a dict
``{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}`` with ``pickle.dump``. Each network
and each of its layers is a "persistent" object that pickles as a call of the hook
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = {'type': 'class',
'version': 6, 'module_src': <the whole source of the module defining the class>, 'class_name',
'state'}``, where ``state`` is the object's ``__dict__``: ``_parameters``, ``_buffers``, ``_modules``
(the layers, persistent objects again), plain attributes (``w_avg_beta``, ``conv_clamp``, ...) and
the constructor arguments ``_init_args`` / ``_init_kwargs``. NVlabs' own loader ``exec``\\ s
``module_src`` to rebuild the class, so opening such a file with ``pickle.load`` runs whatever
code it carries.

Here nothing from the file is ever executed. A restricted unpickler resolves only the hook (to a
function that records class name, state and constructor arguments as a `PersistentObject`), the
tensor rebuild functions (each storage is read with ``torch.load(weights_only=True)``), ordered
dicts, sets, ``dnnlib.EasyDict`` (as a plain dict) and numpy scalars and arrays; any other global
a pickle names (``os.system`` in a ``__reduce__``, an arbitrary class) stops the load with an error
naming it, before it is called. The recorded trees are then mapped onto our networks
(`retina_fast.gan.networks` has StyleGAN2-ADA's constructor arguments, class names, attribute and
state-dict names): every layer's class and its structural attributes (channels, resolution,
up/down, gains, clamps, w_avg_beta, ...) are checked against ours and the parameters and buffers
are loaded strictly.

Read: StyleGAN2 networks of both repositories (``training.networks`` of stylegan2-ada-pytorch,
``training.networks_stylegan2`` of stylegan3), conditional or not, any resolution. Refused with a
message: StyleGAN3-T/R generators (``networks_stylegan3``), legacy TensorFlow pickles
(``dnnlib.tflib``), and anything else.
"""
import collections
import dataclasses
import io
import math
import os
import pickle
import warnings

import numpy as np
import torch

from retina_fast.checkpoints import check_local_file

from . import snapshot as snap
from .architecture import PRESETS, Discriminator, Generator, check_network_kwargs

__all__ = ["PersistentObject", "NetworkPickle", "read_network_pickle", "load_network_pickle", "network_from_pickle",
           "network_pickle_to_snapshot", "convert_network_pickle", "is_network_pickle", "read_snapshot",
           "NetworkPickleError", "PERSISTENCE_HOOK"]

PERSISTENCE_HOOK = ("torch_utils.persistence", "_reconstruct_persistent_obj")
NETWORK_KEYS = ("G", "D", "G_ema")

# Class names of StyleGAN2's networks, as NVlabs and `retina_fast.gan.networks` both spell them.
_TOP_CLASS = {"G": "Generator", "G_ema": "Generator", "D": "Discriminator"}
# Only in stylegan3's networks_stylegan3 (the alias-free -T/-R generators).
_STYLEGAN3_CLASSES = {"SynthesisInput"}
_STYLEGAN3_KWARGS = {"magnitude_ema_beta", "conv_kernel", "use_radial_filters", "num_critical", "first_cutoff",
                     "first_stopband", "last_stopband_rel", "margin_size", "output_scale"}
# stylegan3's networks_stylegan2 only picks grouped vs per-sample convolutions with it (same values).
_IGNORED_SYNTHESIS_KWARGS = ("fused_modconv_default",)
# Plain attributes that fix a layer's arithmetic; each present in both trees must agree.
_CHECKED_ATTRS = ("z_dim", "c_dim", "w_dim", "num_ws", "img_resolution", "img_channels", "block_resolutions",
                  "in_features", "out_features", "in_channels", "out_channels", "activation", "lr_multiplier",
                  "weight_gain", "bias_gain", "act_gain", "up", "down", "padding", "conv_clamp", "resolution",
                  "use_noise", "architecture", "use_fp16", "is_last", "num_conv", "num_torgb", "num_layers",
                  "first_layer_idx", "w_avg_beta", "cmap_dim", "group_size", "num_channels")


class NetworkPickleError(ValueError):
    """A network pickle that cannot or must not be read (the message names the file)."""


# ---------------------------------------------------------------------------------------------
# What the restricted unpickler builds


class PersistentObject:
    """One NVlabs persistent object as recorded (never instantiated): class name and ``__dict__``.

    Attributes
    ----------
    class_name : str
        E.g. ``'Generator'``, ``'SynthesisLayer'``, ``'AugmentPipe'``.
    version : int
        ``torch_utils.persistence`` format version (6 in both public repositories).
    state : dict
        The object's ``__dict__`` as pickled: ``_parameters``, ``_buffers``, ``_modules`` (child
        `PersistentObject`\\ s), plain attributes, ``_init_args``, ``_init_kwargs``.
    module_src : str
        The pickled source of the class's module: kept as text for inspection, never executed.
    """

    __slots__ = ("class_name", "version", "state", "module_src")

    def __init__(self, class_name, version, state, module_src):
        self.class_name, self.version, self.state, self.module_src = class_name, version, state, module_src

    def __setstate__(self, state):
        raise pickle.UnpicklingError("a persistent object's state is set twice")

    @property
    def children(self):
        """Child objects by attribute name (the ``_modules`` of the pickled module)."""
        return {k: v for k, v in (self.state.get("_modules") or {}).items() if v is not None}

    @property
    def init_kwargs(self):
        """Constructor keyword arguments, as plain dicts and lists."""
        return _plain(self.state.get("_init_kwargs") or {})

    def walk(self, prefix):
        """(dotted name, object) of this object and every descendant, parents first."""
        yield prefix, self
        for name, child in self.children.items():
            if isinstance(child, PersistentObject):
                yield from child.walk(f"{prefix}.{name}")

    def __repr__(self):
        return f"PersistentObject({self.class_name!r}, {len(self.children)} children)"


class _EasyDict(dict):
    """Stand-in for ``dnnlib.EasyDict`` (a dict with attribute access): read as a plain dict."""


def _reconstruct(meta):
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError(f"persistence hook called with a {type(meta).__name__}, not a meta dict")
    missing = {"type", "version", "module_src", "class_name", "state"} - set(meta)
    if missing:
        raise pickle.UnpicklingError(f"persistent object meta lacks {sorted(missing)}")
    if meta["type"] != "class":
        raise pickle.UnpicklingError(f"persistent object of type {meta['type']!r} (only 'class' is known)")
    name, state = meta["class_name"], meta["state"]
    if not isinstance(name, str) or not name.isidentifier():
        raise pickle.UnpicklingError(f"persistent object class name {name!r} is not an identifier")
    if state is None:
        state = {}
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"state of persistent {name} is a {type(state).__name__}, not a dict")
    return PersistentObject(name, meta["version"], state, meta["module_src"])


def _storage_from_bytes(data):
    # torch pickles a storage as `torch.save(storage)` bytes (legacy format): read them tensors-only.
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"tensor storage given as {type(data).__name__}, not bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # TypedStorage deprecation, legacy-format notices
        try:
            storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 (torch's refusal or a torn storage: many types)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise pickle.UnpicklingError(f"a tensor storage cannot be read tensors-only: {first}") from None
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"tensor storage bytes hold a {type(storage).__name__}")
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None):
    del requires_grad, backward_hooks, metadata   # no autograd state is taken from a file
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._utils._rebuild_tensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    # `_parameters` vs `_buffers` already says what is a parameter: keep the plain tensor.
    del requires_grad, backward_hooks, state
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"parameter rebuilt from a {type(data).__name__}, not a tensor")
    return data.detach()


def _numpy_core():
    try:
        from numpy._core import multiarray
    except ImportError:   # numpy < 2
        from numpy.core import multiarray
    return multiarray


def _numpy_reconstruct(subtype, shape, dtype_code):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"numpy array of type {subtype!r} (only numpy.ndarray is read)")
    return _numpy_core()._reconstruct(np.ndarray, shape, dtype_code)


def _allowed_globals():
    mu = _numpy_core()
    allowed = {
        PERSISTENCE_HOOK: _reconstruct,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("__builtin__", "set"): set,
        ("__builtin__", "frozenset"): frozenset,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = mu.scalar
        allowed[(mod, "_reconstruct")] = _numpy_reconstruct
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of `_allowed_globals`; any other name is refused unresolved."""

    _ALLOWED = None

    def find_class(self, module, name):
        if _RestrictedUnpickler._ALLOWED is None:
            _RestrictedUnpickler._ALLOWED = _allowed_globals()
        found = self._ALLOWED.get((module, name))
        if found is not None:
            return found
        if module.startswith("dnnlib.tflib"):
            raise _Refused(f"a legacy TensorFlow StyleGAN pickle ({module}.{name}) is not supported; convert it "
                           "with NVlabs' stylegan2-ada-pytorch legacy.py first")
        raise _Refused(f"refusing {module}.{name}: only NVlabs StyleGAN networks, tensors and plain data are "
                       "read (nothing in the file is run)")

    def persistent_load(self, pid):
        raise _Refused("refusing a persistent id: not an NVlabs network pickle")


class _Refused(pickle.UnpicklingError):
    pass


# ---------------------------------------------------------------------------------------------
# Reading


def _one_line(e):
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def read_network_pickle(path):
    """The object of an NVlabs network pickle, with every persistent object as a `PersistentObject`.

    Parameters
    ----------
    path : str or os.PathLike
        A local ``.pkl`` file written by NVlabs' training loop (or with the same structure).

    Returns
    -------
    object
        For a training snapshot, a dict ``{'G', 'D', 'G_ema', 'augment_pipe',
        'training_set_kwargs'}``; networks are `PersistentObject` trees, tensors plain CPU tensors.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        One line naming the file: a refused global (named), a legacy TensorFlow pickle, a
        truncated or corrupt file, or not a pickle.
    """
    path = check_local_file(path, "network pickle")
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head[:2] == b"PK":
            raise NetworkPickleError(f"network pickle {path!r} is a zip file (a torch.save snapshot?), not a "
                                     "pickle: name retina_fast snapshots .pt")
        try:
            return _RestrictedUnpickler(f).load()
        except _Refused as e:
            raise NetworkPickleError(f"network pickle {path!r}: {e}") from None
        except EOFError:
            raise NetworkPickleError(f"network pickle {path!r} is truncated (ends mid-pickle) or empty") from None
        except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                RuntimeError, MemoryError, OverflowError) as e:
            what = "is truncated" if "truncated" in str(e) else "is corrupt or not an NVlabs network pickle"
            raise NetworkPickleError(f"network pickle {path!r} {what}: {_one_line(e)}") from None


def _plain(value):
    """Plain-Python copy: dicts (EasyDict, OrderedDict) -> dict, tuples -> lists, numpy -> numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same(a, b):
    a, b = _plain(a), _plain(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _check_stylegan2(path, key, obj):
    """Refuse StyleGAN3 networks and classes we do not have, naming them."""
    for where, rec in obj.walk(key):
        marks = sorted(_STYLEGAN3_KWARGS & set(rec.init_kwargs))
        if rec.class_name in _STYLEGAN3_CLASSES or marks:
            why = f"class {rec.class_name} at {where}" + (f" takes {', '.join(marks)}" if marks else "")
            raise NetworkPickleError(
                f"network pickle {path!r}: {key} is a StyleGAN3-T/R (alias-free) network of stylegan3's "
                f"networks_stylegan3 ({why}), which is not supported; only StyleGAN2 networks "
                "(stylegan2-ada-pytorch, or stylegan3 --cfg=stylegan2) can be read")
    if obj.class_name != _TOP_CLASS[key]:
        raise NetworkPickleError(f"network pickle {path!r}: {key} is of unknown class {obj.class_name!r} "
                                 f"(expected {_TOP_CLASS[key]})")


def _generator_kwargs(obj):
    kw = obj.init_kwargs
    out = {k: kw.pop(k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels") if k in kw}
    mapping = dict(kw.pop("mapping_kwargs", None) or {})
    synthesis = dict(kw.pop("synthesis_kwargs", None) or {})
    synthesis.update(kw)   # stylegan3's Generator takes the synthesis options directly (**synthesis_kwargs)
    for k in _IGNORED_SYNTHESIS_KWARGS:
        synthesis.pop(k, None)
    # The two repositories' defaults differ (0.995 vs 0.998): the pickled value decides.
    beta = (obj.children.get("mapping").state.get("w_avg_beta") if "mapping" in obj.children else None)
    if beta is not None:
        mapping.setdefault("w_avg_beta", _plain(beta))
    return dict(out, mapping_kwargs=mapping, synthesis_kwargs=synthesis)


def _discriminator_kwargs(obj):
    kw = obj.init_kwargs
    epilogue = dict(kw.pop("epilogue_kwargs", None) or {})
    for k in ("mbstd_group_size", "mbstd_num_channels"):   # ours takes them on the Discriminator
        if k in epilogue:
            kw[k] = epilogue.pop(k)
    kw["epilogue_kwargs"] = epilogue
    return kw


def _flat_state(obj, prefix=""):
    """The ``state_dict`` of a recorded module tree: parameters and persistent buffers by dotted name."""
    out = {}
    skip = set(obj.state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, t in (obj.state.get(group) or {}).items():
            if t is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{prefix}{name} is a {type(t).__name__}, not a tensor")
            out[prefix + name] = t
    for name, child in obj.children.items():
        if not isinstance(child, PersistentObject):
            raise TypeError(f"{prefix}{name} is a {type(child).__name__}, not a persistent module")
        out.update(_flat_state(child, f"{prefix}{name}."))
    return out


def _check_tree(path, key, obj, module):
    """Class names, child names and arithmetic attributes of the recorded tree against ours."""
    for where, rec in obj.walk(key):
        sub = module
        for part in where.split(".")[1:]:
            sub = getattr(sub, part, None)
        if not isinstance(sub, torch.nn.Module):
            raise NetworkPickleError(f"network pickle {path!r}: {where} ({rec.class_name}) has no counterpart here")
        if type(sub).__name__ != rec.class_name:
            raise NetworkPickleError(f"network pickle {path!r}: {where} is a {rec.class_name}, ours a "
                                     f"{type(sub).__name__} (unknown NVlabs class)")
        ours = {n for n, _ in sub.named_children()}
        if set(rec.children) != ours:
            raise NetworkPickleError(f"network pickle {path!r}: {where} has layers {sorted(rec.children)}, "
                                     f"ours {sorted(ours)}")
        for attr in _CHECKED_ATTRS:
            if attr in rec.state and hasattr(sub, attr) and not _same(rec.state[attr], getattr(sub, attr)):
                raise NetworkPickleError(f"network pickle {path!r}: {where}.{attr} is {_plain(rec.state[attr])!r} "
                                         f"there and {_plain(getattr(sub, attr))!r} here")


def _build(path, key, obj, impl):
    if not isinstance(obj, PersistentObject):
        raise NetworkPickleError(f"network pickle {path!r}: {key} is a {type(obj).__name__}, not an NVlabs network")
    _check_stylegan2(path, key, obj)
    if obj.state.get("_init_args"):
        raise NetworkPickleError(f"network pickle {path!r}: {key} was built with positional arguments, which "
                                 "NVlabs' training loop never does")
    cls = Generator if _TOP_CLASS[key] == "Generator" else Discriminator
    kwargs = _generator_kwargs(obj) if cls is Generator else _discriminator_kwargs(obj)
    try:
        state = _flat_state(obj)
    except TypeError as e:
        raise NetworkPickleError(f"network pickle {path!r}: {key}: {e}") from None
    # Bounds and every tensor's name and shape, on the meta device: nothing is allocated for a
    # hostile size before the file's own tensors are known to fit.
    check_network_kwargs(cls, kwargs, {key: state}, where=f"network pickle {path!r}",
                         kwargs_name=f"{key}'s constructor arguments")
    net = cls(**kwargs, impl=impl)
    _check_tree(path, key, obj, net)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:   # e.g. a dtype the parameters cannot take
        raise NetworkPickleError(f"network pickle {path!r}: {key}'s tensors do not load into our "
                                 f"{cls.__name__}: {_one_line(e)}") from None
    return net.eval().requires_grad_(False)


@dataclasses.dataclass
class NetworkPickle:
    """What `load_network_pickle` maps from an NVlabs training snapshot.

    Attributes
    ----------
    path : str
    G, D, G_ema : Generator, Discriminator, Generator or None
        Ours, in eval mode with ``requires_grad`` off, on the CPU (None when not asked for).
    augment_p : float or None
        The ADA probability (``augment_pipe``'s buffer ``p``); None without an augment pipe.
    training_set_kwargs : dict
        NVlabs' dataset options (path, resolution, use_labels, xflip, ...), plain data.
    """
    path: str
    G: Generator | None = None
    D: Discriminator | None = None
    G_ema: Generator | None = None
    augment_p: float | None = None
    training_set_kwargs: dict = dataclasses.field(default_factory=dict)


def _augment_p(path, pipe):
    if pipe is None:
        return None
    if not isinstance(pipe, PersistentObject) or pipe.class_name != "AugmentPipe":
        what = pipe.class_name if isinstance(pipe, PersistentObject) else type(pipe).__name__
        raise NetworkPickleError(f"network pickle {path!r}: augment_pipe is a {what}, not an AugmentPipe")
    p = (pipe.state.get("_buffers") or {}).get("p")
    if not isinstance(p, torch.Tensor) or p.numel() != 1 or not math.isfinite(float(p)) or not 0 <= float(p) <= 1:
        raise NetworkPickleError(f"network pickle {path!r}: augment_pipe has no probability p in [0, 1]")
    return float(p)


def load_network_pickle(path, keys=NETWORK_KEYS, impl=None):
    """Read an NVlabs network pickle into our networks, never running its code.

    Parameters
    ----------
    path : str or os.PathLike
        ``network-snapshot-*.pkl`` of stylegan2-ada-pytorch, or of stylegan3 with a StyleGAN2 config.
    keys : sequence of {'G', 'D', 'G_ema'}
        Networks to map (each must be in the file).
    impl : None, 'native' or 'ref'
        Op implementation of our networks.

    Returns
    -------
    NetworkPickle

    Raises
    ------
    FileNotFoundError, ValueError
        As `read_network_pickle`; also a StyleGAN3-T/R network, an unknown class, a missing key or
        parameters that do not fit (one line naming the file and the part).
    """
    bad = [k for k in keys if k not in NETWORK_KEYS]
    if bad:
        raise ValueError(f"keys must be among {NETWORK_KEYS}, got {bad}")
    data = read_network_pickle(path)
    path = os.fspath(path)
    if not isinstance(data, dict):
        raise NetworkPickleError(f"network pickle {path!r} holds a {type(data).__name__}, not NVlabs' snapshot "
                                 "dict with G, D, G_ema")
    missing = [k for k in keys if data.get(k) is None]
    if missing:
        raise NetworkPickleError(f"network pickle {path!r} has no {missing}; it holds {sorted(map(str, data))}")
    out = NetworkPickle(path=path, augment_p=_augment_p(path, data.get("augment_pipe")),
                        training_set_kwargs=_plain(dict(data.get("training_set_kwargs") or {})))
    for k in keys:
        setattr(out, k, _build(path, k, data[k], impl))
    return out


def network_from_pickle(path, key="G_ema", cls=None, impl=None):
    """One network of an NVlabs pickle (``Generator.from_checkpoint`` on a ``.pkl`` calls this).

    ``cls`` (Generator or Discriminator), when given, must be the class of ``key``'s network.
    """
    if key not in NETWORK_KEYS:
        raise ValueError(f"key must be one of {NETWORK_KEYS} for a network pickle, got {key!r}")
    net = getattr(load_network_pickle(path, keys=(key,), impl=impl), key)
    if cls is not None and not isinstance(net, cls):
        raise ValueError(f"network pickle {os.fspath(path)!r}: {key} is a {type(net).__name__}, not a {cls.__name__}")
    return net


# ---------------------------------------------------------------------------------------------
# Our snapshot format


_DROP = object()


def _jsonable_only(value):
    """Drop what a weights-only load could not read back (keeps str, numbers, bool, None, lists, dicts)."""
    if isinstance(value, dict):
        items = ((str(k), _jsonable_only(v)) for k, v in value.items())
        return {k: v for k, v in items if v is not _DROP}
    if isinstance(value, list):
        return [v for v in map(_jsonable_only, value) if v is not _DROP]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _DROP


def network_pickle_to_snapshot(path, impl=None):
    """An NVlabs pickle as a ``retina_fast.gan/1`` snapshot dict (in memory).

    Holds ``G_kwargs``, ``D_kwargs``, ``G``, ``D``, ``G_ema`` (state dicts), ``augment_p``,
    ``config`` (``{'preset': ...}`` when a preset has the pickle's resolution, for `finetune`'s
    defaults) and ``nvlabs`` (source file name, ADA p, ``training_set_kwargs``). It carries no
    optimiser states or counters: training from it starts with fresh optimisers at kimg 0, as
    NVlabs' own ``--resume``.
    """
    nets = load_network_pickle(path, keys=NETWORK_KEYS, impl=impl)
    res = nets.G.img_resolution
    preset = next((name for name, spec in PRESETS.items() if spec["resolution"] == res), None)
    sd = lambda m: {k: v.detach().cpu().clone().contiguous() for k, v in m.state_dict().items()}
    return {
        "format": snap.FORMAT, "G_kwargs": dict(nets.G.init_kwargs, impl=None),
        "D_kwargs": dict(nets.D.init_kwargs, impl=None),
        "G": sd(nets.G), "D": sd(nets.D), "G_ema": sd(nets.G_ema),
        "augment_p": float(nets.augment_p or 0.0),
        "config": {"preset": preset} if preset is not None else {},
        "nvlabs": {"source": os.path.basename(nets.path), "augment_p": nets.augment_p,
                   "training_set_kwargs": _jsonable_only(nets.training_set_kwargs)},
    }


def convert_network_pickle(src, dst):
    """Write an NVlabs pickle as our snapshot file (``retina-fast convert SRC DST``).

    The pickle is read and mapped completely before `dst` is written, atomically (temporary name,
    fsync, rename; `retina_fast.gan.snapshot.save_snapshot`). The snapshot serves ``generate``,
    ``finetune --resume`` and ``train --resume`` (fresh optimisers, see
    `network_pickle_to_snapshot`). Returns the absolute path of `dst`.
    """
    if os.path.exists(os.fspath(dst)) and os.path.exists(os.fspath(src)) \
            and os.path.samefile(os.fspath(src), os.fspath(dst)):
        raise ValueError(f"convert: output {os.fspath(dst)!r} is the input file")
    if os.path.isdir(os.fspath(dst)):
        raise ValueError(f"convert: output {os.fspath(dst)!r} is a folder; give a file name such as nvlabs.pt")
    data = network_pickle_to_snapshot(src)
    return snap.save_snapshot(dst, data)


def is_network_pickle(path):
    """True for a ``.pkl`` path (NVlabs' network pickles); our snapshots are ``.pt``."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).lower().endswith(".pkl")


def read_snapshot(path):
    """A snapshot dict from our ``.pt`` file (`snapshot.load_snapshot`) or an NVlabs ``.pkl``
    (`network_pickle_to_snapshot`): what ``train/finetune --resume`` start from."""
    if is_network_pickle(path):
        return network_pickle_to_snapshot(path)
    return snap.load_snapshot(path)
