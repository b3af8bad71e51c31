"""The ERM-vs-normal classifier: torchvision's ResNet with its input normalisation built in.

The paper used ResNet152 at 512 x 512 (RGB). `make_classifier` builds that (or ResNet18/34/50/101,
for tests and demos) with a 2-class head, from random weights or from a local weight file; nothing
is ever downloaded.

Input convention (every function of `retina_fast.classify`): float tensors [N, 3, H, W], RGB,
scaled like the data loaders' output, ``x / 127.5 - 1`` (grey levels 0..255 -> [-1, 1]). The model
maps them to ImageNet's normalisation itself, so ImageNet weights see what they were trained on
and the loaders' batches go in unchanged. Output: logits [N, num_classes]; class 1 is ERM.
"""
import os

import torch
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from retina_fast.checkpoints import load_torch_file
from retina_fast.checks import check_int
from retina_fast.device import resolve_device

__all__ = ["ARCHITECTURES", "ResNetClassifier", "load_weights", "make_classifier", "prepare_for_device"]

# torchvision's layer counts of each depth
ARCHITECTURES = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetClassifier(ResNet):
    """torchvision ResNet whose forward first maps [-1, 1] inputs to ImageNet normalisation.

    Same modules and state_dict keys as torchvision's ResNet (``conv1 ... layer4, fc``), so
    torchvision weight files load as they are and Grad-CAM finds ``layer4``. ``arch`` names the depth.
    """

    def __init__(self, arch, num_classes=2):
        block, layers = ARCHITECTURES[arch]
        super().__init__(block, list(layers), num_classes=num_classes)
        self.arch = arch
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        # (x + 1) / 2 then (. - mean) / std, folded into one scale and shift; not saved in state_dict
        self.register_buffer("in_scale", 0.5 / std, persistent=False)
        self.register_buffer("in_shift", (0.5 - mean) / std, persistent=False)

    def forward(self, x):
        x = x * self.in_scale.to(x.dtype) + self.in_shift.to(x.dtype)
        return super().forward(x)


def _state_dict_of(obj, path):
    """The weights inside a loaded file: a plain state_dict, or one under a usual key."""
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()) and obj:
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            if key in obj and isinstance(obj[key], dict):
                return _state_dict_of(obj[key], path)
    raise ValueError(f"weights file {path!r} holds no state_dict (a dict of tensors, or one under "
                     f"'state_dict'/'model')")


def load_weights(model, path):
    """Load a local weight file into `model`, keeping `model`'s head when the file's has another shape.

    Parameters
    ----------
    model : ResNetClassifier
    path : str or os.PathLike
        A ``torch.save`` file of a state_dict (torchvision layout, e.g. ImageNet ``resnet152-*.pth``),
        or of a dict holding one under 'state_dict'/'model' (our checkpoints). Read with
        ``weights_only=True``. A ``module.`` prefix (DataParallel) is stripped.

    Returns
    -------
    list of str
        Keys not taken from the file (the head ``fc.weight``/``fc.bias`` when its shape differs,
        e.g. 1000 ImageNet classes vs 2).

    Raises
    ------
    FileNotFoundError
        `path` does not exist (named).
    ValueError
        The file is not a state_dict of this architecture (named, with the first mismatching keys).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r} (weights are never downloaded; "
                                f"give a local state_dict file)")
    obj = load_torch_file(path, what="weights file")
    sd = {k.removeprefix("module."): v for k, v in _state_dict_of(obj, path).items()}
    own = model.state_dict()
    skipped = [k for k in ("fc.weight", "fc.bias") if k in sd and sd[k].shape != own[k].shape]
    for k in skipped:
        del sd[k]
    missing = [k for k in own if k not in sd and k not in skipped]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or bad_shape:
        arch = getattr(model, "arch", type(model).__name__)
        raise ValueError(f"weights file {path!r} does not fit {arch}: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, wrong shape {bad_shape[:3]}")
    model.load_state_dict(sd, strict=False)
    return skipped


def make_classifier(arch="resnet152", num_classes=2, weights=None, *, device="cpu", channels_last=None):
    """Build the classifier.

    Parameters
    ----------
    arch : {'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152'}
        torchvision depth; the paper's is 'resnet152'.
    num_classes : int
        Output classes (2: normal, ERM).
    weights : None or path
        None: torchvision's random initialisation. A path: a local state_dict file (ImageNet or our
        own checkpoint, see `load_weights`); an ImageNet head (1000 classes) is replaced by a fresh
        `num_classes` one.
    device : str or torch.device
        Where the model goes.
    channels_last : None or bool
        Memory format of the weights; None = on for CUDA (faster convolutions with AMP), off on CPU.

    Returns
    -------
    ResNetClassifier
        In train mode, on `device`. Takes [N, 3, H, W] float in [-1, 1], any H, W >= 32.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    num_classes = check_int("num_classes", num_classes, minimum=2)
    model = ResNetClassifier(arch, num_classes)
    if weights is not None:
        load_weights(model, weights)
    return prepare_for_device(model, device, channels_last)


def prepare_for_device(model, device, channels_last=None):
    """Move `model` to `device`; channels_last memory format on CUDA (or as `channels_last` says)."""
    device = resolve_device(device)
    if channels_last is None:
        channels_last = device.type == "cuda"
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
