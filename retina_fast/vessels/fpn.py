"""Feature Pyramid Network (FPN) vessel segmentation, trained from scratch; never downloads weights.

The paper segmented vessels with an FPN trained on HRF plus its own annotations (AUC 0.80). This module
builds the same kind of network with segmentation-models-pytorch (`smp.FPN`, a ResNet-18 encoder by
default, always `encoder_weights=None`), trains it on image / vessel-mask pairs, and runs tiled
inference. `retina_fast.vessels.segment.segment(image, method='fpn', checkpoint=PATH)` uses it.

Training data (`train_seg(pairs_or_dir, ...)`)
----------------------------------------------
* an int N: N phantoms from `retina_fast.data.phantom.make_fundus` (seeds `seed * 100000 + i`;
  `evaluate_phantoms` holds out seeds from `seed * 100000 + 50000`), rendered at `phantom_size`, with
  `truth.vessel_mask` as the label;
* a folder laid out like HRF or DRIVE::

      DIR/images/<name>.<ext>       RGB fundus photographs
      DIR/<labels>/<name>.<ext>     vessel masks, <labels> one of manual1, 1st_manual, masks, labels,
                                    vessels (non-zero or > 127 = vessel)
      DIR/mask/<name>.<ext>         optional field-of-view masks (HRF / DRIVE `mask/`); when absent
                                    the FOV is estimated from the image

  <ext> is png, jpg, jpeg, tif, tiff, gif, bmp or ppm (any case). Names are matched after lower-casing and
  removing the suffixes _manual1, _manual, _mask, _training, _test, _gt, _label, _vessels, so HRF
  (`01_dr.JPG` / `01_dr.tif` / `01_dr_mask.tif`) and DRIVE (`21_training.tif` / `21_manual1.gif` /
  `21_training_mask.gif`) match as they come. Images without a label are skipped with a warning;
* a sequence of (image, vessel_mask) pairs ((H, W, 3) uint8 and (H, W) bool).

Each image is rescaled so that its short side is `short_side` px (default: the phantoms' short side,
or the images' own size for folders and pairs), and inference rescales its input the same way, so a
checkpoint works on images of any size.

Checkpoint: a `torch.save` dict {'format', 'config' (model and input settings), 'state_dict', 'train'
(hyper-parameters and the loss history)}, written to a temporary name and renamed.
"""
from dataclasses import dataclass
import math
import os
from pathlib import Path
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from retina_fast.checkpoints import build_on_meta, check_local_file, check_state_dict, load_torch_file
from retina_fast.device import resolve_device
from retina_fast.fileio import atomic_write

from .auc import pixel_auc
from .image import check_image, estimate_fov_mask

CHECKPOINT_FORMAT = "retina_fast.vessels.fpn/1"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".ppm")
LABEL_DIRS = ("manual1", "1st_manual", "masks", "labels", "vessels")
FOV_DIRS = ("mask", "fov")
NAME_SUFFIXES = ("_manual1", "_manual", "_mask", "_training", "_test", "_gt", "_label", "_vessels")
DEFAULT_PHANTOM_SIZE = (384, 512)
# Phantom seed blocks: training seeds seed*SEED_BLOCK + i, held-out seeds seed*SEED_BLOCK + HELD_OUT + i.
SEED_BLOCK = 100000
HELD_OUT = 50000


@dataclass
class SegModel:
    """A loaded FPN: the torch module (eval mode, on `device`) and the config it was built from."""

    net: torch.nn.Module
    config: dict
    device: str


def _resolve_device(device):
    return str(resolve_device(device))  # SegModel.device is a string


def build_model(encoder_name="resnet18", *, pyramid_channels=128, segmentation_channels=64,
                encoder_depth=5, dropout=0.0):
    """An untrained `smp.FPN` with 3 input channels and 1 output (vessel logit) channel.

    Encoder weights are always random (`encoder_weights=None`): nothing is downloaded. Input height and
    width must be multiples of 2 ** encoder_depth; the output has the input's size.
    """
    import segmentation_models_pytorch as smp

    return smp.FPN(encoder_name=encoder_name, encoder_depth=encoder_depth, encoder_weights=None,
                   decoder_pyramid_channels=pyramid_channels,
                   decoder_segmentation_channels=segmentation_channels, decoder_dropout=dropout,
                   in_channels=3, classes=1, activation=None)


def _model_kwargs(config):
    return {k: config[k] for k in ("encoder_name", "pyramid_channels", "segmentation_channels",
                                   "encoder_depth", "dropout")}


# ----------------------------------------------------------------------------------------- input


def normalise_image(image, fov_mask):
    """(3, H, W) float32 network input: each channel standardised over the FOV, 0 outside it.

    Standardising per image makes the network indifferent to exposure and colour balance.
    """
    a = check_image(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    x = a.astype(np.float32)
    inside = x[fov_mask]
    mean = inside.mean(axis=0)
    std = np.maximum(inside.std(axis=0), 1e-3 * max(float(np.abs(inside).max()), 1.0))
    x = (x - mean) / std
    x[~fov_mask] = 0.0
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _resize_chw(x, shape):
    """Resize a (C, H, W) float32 array to `shape` (H, W): bilinear, antialiased when shrinking."""
    if tuple(x.shape[-2:]) == tuple(shape):
        return x
    t = torch.from_numpy(np.ascontiguousarray(x))[None]
    t = F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False, antialias=True)
    return t[0].numpy()


def _scaled_shape(shape, short_side):
    if short_side is None:
        return tuple(shape)
    f = short_side / min(shape)
    return (max(1, int(round(shape[0] * f))), max(1, int(round(shape[1] * f))))


def _prepare_pair(image, vessel_mask, fov_mask, short_side):
    """Network input, label and valid mask of one training pair, rescaled to `short_side`."""
    a = check_image(image)
    v = np.asarray(vessel_mask)
    if v.shape != a.shape[:2]:
        raise ValueError(f"vessel mask {v.shape} does not match image {a.shape[:2]}")
    fov = estimate_fov_mask(a) if fov_mask is None else np.asarray(fov_mask).astype(bool)
    x = normalise_image(a, fov)
    shape = _scaled_shape(a.shape[:2], short_side)
    x = _resize_chw(x, shape)
    # area-weighted label: a rescaled vessel mask is a fraction, which BCE takes as a soft target
    y = _resize_chw(v.astype(np.float32)[None], shape)[0]
    valid = _resize_chw(fov.astype(np.float32)[None], shape)[0] > 0.5
    return x.astype(np.float32), np.clip(y, 0, 1).astype(np.float32), valid


# ------------------------------------------------------------------------------------------ data


def _key(name):
    k = Path(name).stem.lower()
    changed = True
    while changed:
        changed = False
        for s in NAME_SUFFIXES:
            if k.endswith(s) and len(k) > len(s):
                k, changed = k[: -len(s)], True
    return k


def _index(folder):
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            out.setdefault(_key(p.name), p)
    return out


def list_pairs(folder):
    """Match images, vessel labels and optional FOV masks in an HRF/DRIVE-like `folder`.

    Returns
    -------
    pairs : list of (image_path, label_path, fov_path or None)
    skipped : list of (image_path, reason)
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"training folder not found: {root}")
    img_dir = root / "images"
    if not img_dir.is_dir():
        raise ValueError(f"{root}: expected an images/ sub-folder (HRF/DRIVE layout), found none")
    label_dir = next((root / d for d in LABEL_DIRS if (root / d).is_dir()), None)
    if label_dir is None:
        raise ValueError(f"{root}: expected a vessel-label sub-folder, one of {LABEL_DIRS}")
    fov_dir = next((root / d for d in FOV_DIRS if (root / d).is_dir()), None)
    labels = _index(label_dir)
    fovs = _index(fov_dir) if fov_dir is not None else {}
    pairs, skipped = [], []
    for key, p in _index(img_dir).items():
        if key in labels:
            pairs.append((p, labels[key], fovs.get(key)))
        else:
            skipped.append((p, f"no label in {label_dir.name}/"))
    if not pairs:
        raise ValueError(f"{root}: no image in images/ has a matching label in {label_dir.name}/")
    return pairs, skipped


def _read_rgb(path):
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many types for bad files
        raise ValueError(f"cannot read image {path}: {e}") from e


def _read_binary(path):
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"))
    except Exception as e:
        raise ValueError(f"cannot read mask {path}: {e}") from e
    return a > 127


def _load_training_data(pairs_or_dir, *, seed, phantom_size, short_side, progress):
    """List of (x, y, valid) arrays and the short side they were rescaled to."""
    from tqdm import tqdm

    out = []
    if isinstance(pairs_or_dir, (int, np.integer)) and not isinstance(pairs_or_dir, bool):
        from retina_fast.data.phantom import make_fundus

        n = int(pairs_or_dir)
        if n < 1:
            raise ValueError(f"number of training phantoms must be >= 1, got {n}")
        short_side = short_side or min(phantom_size)
        for i in tqdm(range(n), desc="phantoms", unit="img", disable=not progress, file=sys.stderr):
            image, truth = make_fundus(seed * SEED_BLOCK + i, size=tuple(phantom_size))
            out.append(_prepare_pair(image, truth.vessel_mask, None, short_side))
        return out, short_side
    if isinstance(pairs_or_dir, (str, os.PathLike)):
        pairs, skipped = list_pairs(pairs_or_dir)
        for p, why in skipped:
            warnings.warn(f"skipping {p}: {why}", stacklevel=3)
        for ip, lp, fp in tqdm(pairs, desc="reading", unit="img", disable=not progress, file=sys.stderr):
            image = _read_rgb(ip)
            out.append(_prepare_pair(image, _read_binary(lp), None if fp is None else _read_binary(fp),
                                     short_side))
        return out, short_side
    try:
        items = list(pairs_or_dir)
    except TypeError:
        raise TypeError("pairs_or_dir must be an int (phantoms), a folder path, or a sequence of "
                        f"(image, vessel_mask) pairs, got {type(pairs_or_dir).__name__}") from None
    if not items:
        raise ValueError("pairs_or_dir is an empty sequence")
    for i, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"pairs_or_dir[{i}] must be an (image, vessel_mask) pair")
        out.append(_prepare_pair(item[0], item[1], None, short_side))
    return out, short_side


def _random_crops(data, rng, batch_size, crop):
    """A batch of random `crop` x `crop` crops, flipped and transposed at random, mostly in the FOV."""
    xs, ys, vs = [], [], []
    for _ in range(batch_size):
        x, y, v = data[rng.integers(len(data))]
        h, w = y.shape
        for _ in range(10):  # prefer crops that are at least half field of view
            r0 = int(rng.integers(0, h - crop + 1))
            c0 = int(rng.integers(0, w - crop + 1))
            if v[r0:r0 + crop, c0:c0 + crop].mean() >= 0.5:
                break
        sl = (slice(r0, r0 + crop), slice(c0, c0 + crop))
        xc, yc, vc = x[(slice(None),) + sl], y[sl], v[sl]
        if rng.random() < 0.5:
            xc, yc, vc = xc[:, :, ::-1], yc[:, ::-1], vc[:, ::-1]
        if rng.random() < 0.5:
            xc, yc, vc = xc[:, ::-1], yc[::-1], vc[::-1]
        if rng.random() < 0.5:
            xc, yc, vc = xc.transpose(0, 2, 1), yc.T, vc.T
        xs.append(np.ascontiguousarray(xc))
        ys.append(np.ascontiguousarray(yc))
        vs.append(np.ascontiguousarray(vc))
    return (torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))[:, None],
            torch.from_numpy(np.stack(vs).astype(np.float32))[:, None])


def seg_loss(logits, target, valid):
    """BCE + soft Dice over the valid (FOV) pixels of a batch; target may be fractional."""
    n = valid.sum().clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid).sum() / n
    p = torch.sigmoid(logits) * valid
    t = target * valid
    dice = 1.0 - (2.0 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
    return bce + dice


# -------------------------------------------------------------------------------------- training


def _save_atomic(obj, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        torch.save(obj, f)


def train_seg(pairs_or_dir, out_checkpoint, *, epochs=10, batch_size=8, crop=256, lr=1e-3, device=None,
              seed=0, crops_per_image=16, phantom_size=DEFAULT_PHANTOM_SIZE, short_side=None,
              encoder_name="resnet18", pyramid_channels=128, segmentation_channels=64, max_steps=None,
              progress=True):
    """Train an FPN vessel segmenter from scratch and save it to `out_checkpoint`.

    Parameters
    ----------
    pairs_or_dir : int, str / path-like, or sequence of (image, vessel_mask)
        N phantoms, an HRF/DRIVE-like folder, or pairs (see the module docstring).
    out_checkpoint : str or path-like
        Written (atomically) after every epoch.
    epochs : int
        One epoch is ceil(n_images * crops_per_image / batch_size) steps.
    batch_size, crop : int
        Crops per step and crop side (px, a multiple of 32).
    lr : float
        Adam learning rate.
    device : {'cpu', 'cuda', 'auto', None}
    seed : int
        Seeds torch, the crop sampler and the phantom seeds.
    phantom_size : (int, int)
        (H, W) of training phantoms.
    short_side : int, optional
        Rescale every image to this short side (px) for training and inference.
    encoder_name, pyramid_channels, segmentation_channels :
        `build_model` arguments.
    max_steps : int, optional
        Stop after this many steps in all (for quick runs).
    progress : bool
        tqdm progress bars on stderr.

    Returns
    -------
    dict
        'losses' (per-step training loss), 'steps', 'epochs', 'checkpoint' (path), 'n_images',
        'model' (the trained `SegModel`, in eval mode).
    """
    from tqdm import tqdm

    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("crop", crop),
                    ("crops_per_image", crops_per_image)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if crop % 32:
        raise ValueError(f"crop must be a multiple of 32, got {crop}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if out_checkpoint is None:
        raise ValueError("out_checkpoint must be a path")
    if max_steps is not None and (not isinstance(max_steps, (int, np.integer)) or max_steps < 1):
        raise ValueError(f"max_steps must be a positive int or None, got {max_steps!r}")
    device = _resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data, short_side = _load_training_data(pairs_or_dir, seed=seed, phantom_size=phantom_size,
                                           short_side=short_side, progress=progress)
    small = min(min(y.shape) for _, y, _ in data)
    if small < crop:
        raise ValueError(f"crop {crop} px is larger than the smallest training image side {small} px")
    config = dict(encoder_name=encoder_name, pyramid_channels=int(pyramid_channels),
                  segmentation_channels=int(segmentation_channels), encoder_depth=5, dropout=0.0,
                  short_side=None if short_side is None else int(short_side))
    net = build_model(**_model_kwargs(config)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(data) * crops_per_image / batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(epochs * steps_per_epoch, max_steps)
    train = dict(epochs=int(epochs), batch_size=int(batch_size), crop=int(crop), lr=float(lr), seed=int(seed),
                 n_images=len(data), losses=[],
                 source=str(pairs_or_dir) if isinstance(pairs_or_dir, (str, os.PathLike, int)) else "pairs")
    step = 0
    net.train()
    with tqdm(total=total, desc="train-seg", unit="step", disable=not progress, file=sys.stderr) as bar:
        for epoch in range(epochs):
            for _ in range(steps_per_epoch):
                if step >= total:
                    break
                x, y, v = (t.to(device) for t in _random_crops(data, rng, batch_size, crop))
                loss = seg_loss(net(x), y, v)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                train["losses"].append(float(loss.detach()))
                step += 1
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{train['losses'][-1]:.3f}")
            train["steps"] = step
            state = {k: t.detach().cpu() for k, t in net.state_dict().items()}
            _save_atomic({"format": CHECKPOINT_FORMAT, "config": config, "state_dict": state,
                          "train": train}, out_checkpoint)
            if step >= total:
                break
    net.eval()
    return dict(losses=list(train["losses"]), steps=step, epochs=epoch + 1, checkpoint=str(out_checkpoint),
                n_images=len(data), model=SegModel(net, config, device))


# ------------------------------------------------------------------------------------- inference


def load_model(checkpoint, device="cpu"):
    """Load a checkpoint written by `train_seg` from a local file (never from the network).

    `device` is 'cpu', 'cuda', 'auto' or None (= 'auto'). A `SegModel` is returned unchanged.

    Returns
    -------
    SegModel
    """
    if isinstance(checkpoint, SegModel):
        return checkpoint
    path = Path(check_local_file(checkpoint, "FPN checkpoint"))
    ck = load_torch_file(path, what="FPN checkpoint")
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a retina_fast FPN checkpoint (format {CHECKPOINT_FORMAT!r})")
    where = f"FPN checkpoint {str(path)!r}"
    if not isinstance(ck.get("config"), dict):
        raise ValueError(f"{where} has no 'config' dict")
    # The config's sizes are checked against the stored weights before a network of that size exists.
    meta = build_on_meta(lambda: build_model(**_model_kwargs(ck["config"])), where, "its config")
    check_state_dict(meta, ck.get("state_dict"), where, what="its config")
    device = _resolve_device(device)
    net = build_model(**_model_kwargs(ck["config"]))
    net.load_state_dict(ck["state_dict"])
    net.to(device).eval()
    return SegModel(net, dict(ck["config"]), device)


def _window(n, overlap):
    """1-D blending weight for a tile of n px: linear ramps of `overlap` px at both ends."""
    i = np.arange(n, dtype=np.float32)
    if overlap <= 0:
        return np.ones(n, np.float32)
    return np.clip(np.minimum(i + 0.5, n - i - 0.5) / overlap, 1e-3, 1.0).astype(np.float32)


def _starts(n, tile, step):
    s = list(range(0, max(n - tile, 0) + 1, step))
    if s[-1] + tile < n:
        s.append(n - tile)
    return s


@torch.inference_mode()
def _infer(net, x, device, tile, overlap):
    """Sigmoid output of `net` on a (3, H, W) array: whole if it fits in `tile`, else blended tiles.

    The input is zero-padded (zero is the normalised input outside the FOV) to a multiple of 32, and
    to at least `tile` when tiling.
    """
    _, h, w = x.shape
    H, W = h + (-h % 32), w + (-w % 32)
    if H > tile or W > tile:
        H, W = max(h, tile), max(w, tile)
    xt = F.pad(torch.from_numpy(np.ascontiguousarray(x))[None], (0, W - w, 0, H - h)).to(device)
    if H <= tile and W <= tile:
        return torch.sigmoid(net(xt))[0, 0, :h, :w].float().cpu().numpy()
    win = torch.from_numpy(np.outer(_window(tile, overlap), _window(tile, overlap))).to(device)
    acc = torch.zeros((H, W), device=device)
    wsum = torch.zeros((H, W), device=device)
    for r in _starts(H, tile, tile - overlap):
        for c in _starts(W, tile, tile - overlap):
            p = torch.sigmoid(net(xt[..., r:r + tile, c:c + tile]))[0, 0].float()
            acc[r:r + tile, c:c + tile] += p * win
            wsum[r:r + tile, c:c + tile] += win
    return (acc / wsum)[:h, :w].cpu().numpy()


def predict(image, checkpoint, *, device=None, fov_mask=None, tile=512, overlap=None):
    """Vessel probability map of `image` from an FPN checkpoint.

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB (or (H, W)) array
    checkpoint : str, path-like or SegModel
        Local checkpoint path (or a model from `load_model`, to avoid reloading per image).
    device : {'cpu', 'cuda', 'auto', None}
    fov_mask : (H, W) bool array, optional
        Default `estimate_fov_mask(image)`; prob is 0 outside it.
    tile, overlap : int
        Tile side (a multiple of 32) and overlap (px, at the network's input scale; default tile / 8).

    Returns
    -------
    (H, W) float32 array in [0, 1]
    """
    if tile % 32 or tile < 64:
        raise ValueError(f"tile must be a multiple of 32 and >= 64, got {tile}")
    overlap = tile // 8 if overlap is None else int(overlap)
    if not 0 <= overlap < tile // 2:
        raise ValueError(f"overlap must be in [0, tile / 2), got {overlap}")
    a = check_image(image)
    model = load_model(checkpoint, device=device)  # a SegModel is used as is, on its own device
    fov = estimate_fov_mask(a) if fov_mask is None else np.asarray(fov_mask).astype(bool)
    x = normalise_image(a, fov)
    shape = _scaled_shape(a.shape[:2], model.config.get("short_side"))
    x = _resize_chw(x, shape)
    prob = _infer(model.net, x, model.device, tile, overlap)
    if prob.shape != a.shape[:2]:
        prob = _resize_chw(prob[None], a.shape[:2])[0]
    prob = np.clip(prob, 0.0, 1.0).astype(np.float32)
    prob[~fov] = 0.0
    return prob


def evaluate_phantoms(checkpoint, n=3, *, seed=0, size=DEFAULT_PHANTOM_SIZE, device=None):
    """Pixel AUC (inside the FOV) of an FPN on `n` held-out phantoms (seeds seed*100000 + 50000 + i)."""
    from retina_fast.data.phantom import make_fundus

    model = load_model(checkpoint, device=device)
    aucs = []
    for i in range(n):
        image, truth = make_fundus(seed * SEED_BLOCK + HELD_OUT + i, size=tuple(size))
        fov = estimate_fov_mask(image)
        aucs.append(pixel_auc(predict(image, model, fov_mask=fov), truth.vessel_mask, fov))
    return aucs
