"""Inception-v3 feature extractor for FID, compatible with the TF-ported 'inception-2015-12-05' network.

The FID ecosystem (TTUR's TensorFlow FID, pytorch-fid, clean-fid, StyleGAN2-ADA) scores images with
the pool3 features (2048-D, after the final average pooling) of one particular Inception-v3: the
2015-12-05 TensorFlow graph. Its PyTorch port (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``)
differs from torchvision's Inception-v3 in three places, reproduced here:

- the average-pool branch of the A, C and first E blocks (Mixed_5b-d, Mixed_6b-e, Mixed_7b) ignores
  the zero padding (``count_include_pad=False``, TensorFlow's 'SAME' average pooling);
- the pool branch of the last E block (Mixed_7c) is a 3 x 3 *max* pool, not an average pool;
- the classifier has 1008 classes (kept only so that the weight file loads strictly).

`InceptionV3FID`'s parameter and buffer names are exactly those of that weight file (which are
torchvision's ``Inception3(num_classes=1008, aux_logits=False)`` names), so its state_dict loads
with no renaming. Weights are only ever read from a local file: nothing here downloads.
"""
import hashlib
import os
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retina_fast.checkpoints import load_torch_file, load_torchscript_file
from retina_fast.checks import check_int

FEATURE_DIM = 2048
RESIZE_MODES = ("bilinear", "bilinear-tf1", "bicubic-pil", "none")
NORMALIZATIONS = ("pytorch-fid", "tf")
# Smallest input the network accepts: below 75 px a stride-2 layer runs out of pixels.
MIN_SIZE = 75


class BasicConv2d(nn.Module):
    """Convolution (no bias) -> batch norm (eps 1e-3, TensorFlow's) -> ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_same(x):
    # TensorFlow's 'SAME' average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b/5c/5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool (padding excluded)-1x1."""

    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_same(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Mixed_6a (grid reduction 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | max pool/2."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    """Mixed_6b-6e: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg pool (padding excluded)-1x1."""

    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_same(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Mixed_7a (grid reduction 17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool/2."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """Mixed_7b/7c: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1.

    `pool` is 'avg' (padding excluded) for Mixed_7b and 'max' for Mixed_7c: the 2015-12-05 graph
    uses a max pool there (pytorch-fid's FIDInceptionE_2).
    """

    def __init__(self, in_channels, pool="avg"):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":
            p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            p = _avg_pool_same(x)
        return torch.cat([b1, b3, bd, self.branch_pool(p)], 1)


def _tf1_bilinear_matrix(n_in, n_out):
    """[n_out, n_in] weights of TF1's legacy ResizeBilinear (align_corners=False, no half-pixel
    centres): output j samples source position j * n_in / n_out, linear between floor and floor+1
    (clamped to the last pixel)."""
    src = np.arange(n_out) * (n_in / n_out)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), i1), frac)
    return m


def resize_images(x, size, mode):
    """Resize float images [N, C, H, W] (grey levels 0-255) to size x size pixels.

    Modes (see `InceptionV3FID`): 'bilinear' = ``F.interpolate(mode='bilinear', align_corners=False,
    antialias=False)`` (pytorch-fid); 'bilinear-tf1' = TF1's legacy ResizeBilinear (sample position
    j * in / out, no antialiasing; the original TensorFlow FID graph); 'bicubic-pil' = Pillow's
    antialiased bicubic on each float32 channel, clipped to 0-255 (clean-fid's 'clean' mode);
    'none' = no resize (the input must already be size x size).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {mode!r}")
    h, w = x.shape[-2:]
    if mode == "none" or (h == size and w == size and mode != "bicubic-pil"):
        if (h, w) != (size, size):
            raise ValueError(f"resize_mode 'none' needs {size} x {size} images, got {h} x {w}")
        return x
    if mode == "bilinear":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    if mode == "bilinear-tf1":
        ry = torch.as_tensor(_tf1_bilinear_matrix(h, size), dtype=x.dtype, device=x.device)
        rx = torch.as_tensor(_tf1_bilinear_matrix(w, size), dtype=x.dtype, device=x.device)
        return torch.matmul(torch.matmul(ry, x), rx.T)
    from PIL import Image
    a = x.detach().cpu().numpy().astype(np.float32)
    out = np.empty(a.shape[:2] + (size, size), np.float32)
    for i in range(a.shape[0]):
        for c in range(a.shape[1]):
            im = Image.fromarray(a[i, c], mode="F").resize((size, size), resample=Image.BICUBIC)
            out[i, c] = np.asarray(im)
    return torch.from_numpy(np.clip(out, 0, 255)).to(x.device, x.dtype)


class InceptionV3FID(nn.Module):
    """Inception-v3 (2015-12-05 TF graph, as ported by pytorch-fid) returning pool3 features.

    ``net(images)`` maps images [N, 3, H, W], uint8 (or float) with grey levels 0-255, RGB, to
    float32 features [N, 2048]:

    1. convert to float32;
    2. resize to `resize` x `resize` pixels (default 299 x 299) with `resize_mode`:

       - 'bilinear' (default): ``torch.nn.functional.interpolate(mode='bilinear',
         align_corners=False, antialias=False)``, pixel centres at (j + 0.5) * in / out, exactly
         what pytorch-fid does;
       - 'bilinear-tf1': TensorFlow 1's legacy ResizeBilinear (align_corners=False,
         half_pixel_centers=False: output j samples input j * in / out), as inside the original TF
         Inception graph;
       - 'bicubic-pil': Pillow bicubic with antialiasing per float32 channel, clipped to 0-255
         (clean-fid's 'clean' mode; runs on the CPU);
       - 'none': no resize; the images must already be `resize` x `resize`.

       None of the linear modes antialias: a 1024 -> 299 resize with them aliases fine detail,
       which is the convention the published FIDs were computed with. The resize mode alone moves
       FID, so compare only FIDs computed with the same mode.
    3. normalise to [-1, 1]: 'pytorch-fid' (default) x / 127.5 - 1 (pytorch-fid's 2 * (x / 255) - 1),
       or 'tf' (x - 128) / 128 (the TF graph, clean-fid and StyleGAN2-ADA's TorchScript);
    4. the network up to Mixed_7c, global average pool -> [N, 2048].

    The 1008-class `fc` layer is kept so the weight file loads strictly; it is not used.

    Parameters
    ----------
    resize : int
        Side the images are resized to, pixels (299 for FID; >= 75; smaller only for quick tests).
    resize_mode : str
        One of 'bilinear', 'bilinear-tf1', 'bicubic-pil', 'none' (above).
    normalize : {'pytorch-fid', 'tf'}
        Input scaling (above).

    Attributes
    ----------
    weights_id : str or None
        Where the weights came from ('sha256:<hex>' of the file for `load_inception`); None for
        random weights (then `identity` hashes the weights themselves).
    """

    def __init__(self, resize=299, resize_mode="bilinear", normalize="pytorch-fid"):
        super().__init__()
        check_int("resize", resize, minimum=MIN_SIZE)  # pixels
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        self.resize, self.resize_mode, self.normalize = int(resize), resize_mode, normalize
        self.weights_id = None
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, 1008)
        # Random weights (before any load) keep the activation scale through the deep ReLU stack
        # (He initialisation; PyTorch's default would shrink the pool3 features towards 0), so an
        # untrained network still gives informative features for tests.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        self.eval()
        self.requires_grad_(False)

    def train(self, mode=True):
        # Batch norm must always use the stored statistics: FID features are a fixed function.
        return super().train(False)

    @property
    def identity(self):
        """String naming the weights and the preprocessing (a key of cached dataset statistics)."""
        wid = self.weights_id or "random:" + _state_hash(self)
        return f"InceptionV3FID(weights={wid}, resize={self.resize} {self.resize_mode}, normalize={self.normalize})"

    def forward(self, images):
        x = _check_images(images)
        x = resize_images(x, self.resize, self.resize_mode)
        if self.normalize == "pytorch-fid":
            x = x / 127.5 - 1
        else:
            x = (x - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def _check_images(images):
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor [N, 3, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W] RGB, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.to(torch.float32)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or float (0-255), got {images.dtype}")
    if images.numel() and float(images.min()) < 0:
        raise ValueError("float images must hold grey levels 0-255 (got negative values; "
                         "convert [-1, 1] generator output with x * 127.5 + 128 first)")
    return images.to(torch.float32)


def _state_hash(module):
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class TorchScriptExtractor(nn.Module):
    """A TorchScript feature network (e.g. StyleGAN2-ADA / clean-fid's inception-2015-12-05.pt).

    Called as ``module(images, return_features=True)`` (their convention: uint8 [N, 3, H, W], the
    script resizes and normalises inside) when the script accepts that keyword, else ``module(images)``;
    the output is reshaped to [N, D].
    """

    def __init__(self, module, identity):
        super().__init__()
        self.module = module
        self.identity = identity
        self._keyword = None

    def forward(self, images):
        if self._keyword is None:
            try:
                out = self.module(images, return_features=True)
                self._keyword = True
            except (RuntimeError, TypeError):
                out = self.module(images)
                self._keyword = False
        else:
            out = self.module(images, return_features=True) if self._keyword else self.module(images)
        return out.reshape(images.shape[0], -1).to(torch.float32)


def _is_torchscript(path):
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_inception(path, *, resize=299, resize_mode="bilinear", normalize="pytorch-fid", device="cpu"):
    """Load the FID Inception network from a local file. Never downloads.

    Parameters
    ----------
    path : str or os.PathLike
        Either pytorch-fid's state_dict file (``pt_inception-2015-12-05-6726825d.pth``, or any
        state_dict with `InceptionV3FID`'s key names, optionally wrapped as ``{'state_dict': ...}``),
        loaded into `InceptionV3FID`; or a TorchScript file (``torch.jit.load``) whose output on
        uint8 [1, 3, 299, 299] zeros is [1, 2048], wrapped in `TorchScriptExtractor` (the script does
        its own resize and normalisation; `resize`, `resize_mode`, `normalize` are then unused).
    resize, resize_mode, normalize :
        Preprocessing of `InceptionV3FID` (see there). Defaults: 299 x 299, pytorch-fid's bilinear,
        x / 127.5 - 1.
    device : str or torch.device
        Where the network is put.

    Returns
    -------
    torch.nn.Module
        Maps uint8 images [N, 3, H, W] to float32 features [N, 2048]; has a string `identity`
        (naming the file's sha256 and the preprocessing) used to key cached statistics.

    Raises
    ------
    FileNotFoundError
        `path` does not exist (the message names it).
    ValueError
        The file is neither a compatible state_dict nor a TorchScript [N, 2048] extractor.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Inception weights file not found: {path!r} (retina_fast never downloads "
                                "weights; copy pt_inception-2015-12-05-6726825d.pth or a TorchScript "
                                "inception-2015-12-05.pt there)")
    digest = "sha256:" + _file_sha256(path)[:16]
    if _is_torchscript(path):
        module = load_torchscript_file(path, what="Inception weights").eval()
        net = TorchScriptExtractor(module, f"TorchScript(weights={digest})")
        with torch.no_grad():
            try:
                out = net(torch.zeros(1, 3, 299, 299, dtype=torch.uint8))
            except Exception as e:  # noqa: BLE001 - TorchScript errors carry the script's traceback
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ValueError(f"{path}: TorchScript module failed on uint8 [1, 3, 299, 299]: {first}") from None
        if tuple(out.shape) != (1, FEATURE_DIM):
            raise ValueError(f"{path}: TorchScript module returns {tuple(out.shape)} features, "
                             f"expected [N, {FEATURE_DIM}]")
        return net.to(device)
    state = load_torch_file(path, what="Inception weights")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict (mapping of names to tensors)")
    net = InceptionV3FID(resize=resize, resize_mode=resize_mode, normalize=normalize)
    expected = net.state_dict()
    state = dict(state)
    for k, v in expected.items():
        # Older ports predate BatchNorm's num_batches_tracked counter; it plays no part in eval.
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: state_dict does not match InceptionV3FID: {len(missing)} missing keys "
                         f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    bad = [k for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(f"{path}: shape mismatch for {len(bad)} tensors, e.g. {bad[0]}: "
                         f"{tuple(state[bad[0]].shape)} vs {tuple(expected[bad[0]].shape)}")
    net.load_state_dict(state, strict=True)
    net.weights_id = digest
    return net.to(device)
