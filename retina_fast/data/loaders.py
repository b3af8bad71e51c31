"""Training batches from a prepared image set: one output contract, two interchangeable backends.

    loader = make_loader("OUT/dataset.zip", backend="torch", batch_size=8, resolution=1024,
                         xflip=True, crop_scale=(0.9, 1.0), shuffle=True, seed=0, device="cuda")
    for epoch in range(n_epochs):
        loader.set_epoch(epoch)
        for images, labels in loader:
            ...

Sources
-------
A dataset folder or .zip in StyleGAN2-ADA's layout (``dataset.json`` with labels, see
`retina_fast.data.dataset.list_images`), or a plain folder of PNG/JPEG images (searched recursively,
sorted by relative name, labels None). Images must be 8-bit RGB or greyscale (grey is repeated to RGB).

Output contract (both backends)
-------------------------------
Each batch is a pair ``(images, labels)`` on the requested device:

- ``images``: float32 tensor [N, 3, R, R] (NCHW, RGB), R = `resolution`, normalised with StyleGAN's
  convention ``x / 127.5 - 1`` so that grey levels 0..255 map to [-1, 1].
- ``labels``: int64 tensor [N], the dataset.json class (0 = normal, 1 = ERM), -1 where none.

N is `batch_size` except for a smaller last batch when ``drop_last=False``. ``len(loader)`` is the
number of batches per epoch. With ``shuffle=False`` samples come in dataset order.

Per sample, in this order: decode -> crop (a square box in source pixels) -> resize to R x R ->
flips -> normalise. The box and the flips come from `augment_params`, a pure function of
(seed, epoch, sample index, image size), so both backends see identical random parameters and a
sample's augmentation does not depend on the batch it lands in or on the shuffle.

Resampling is the separable triangle filter of DALI's ``fn.resize(interp_type=INTERP_LINEAR,
antialias=True)``: filter radius max(1, s / R) source pixels for an s -> R resize, pixel centres at
(j + 0.5) * s / R, taps outside the box clamped to its edge pixel. The torch backend uses
``torch.nn.functional.interpolate(mode='bilinear', antialias=True)``, which computes the same
filter except at the box's outermost output rows/columns (it renormalises the truncated filter
instead of clamping); those few rows/columns are recomputed with the clamped weights, so the two
backends agree to float rounding on PNGs (max |diff| < 0.01 grey levels in the tests) and up to
libjpeg-turbo vs nvJPEG decoding differences on JPEGs (identical on the CPU in the tests).

Backends
--------
``'auto'``: ``'dali'`` when the device is CUDA and nvidia-dali imports, ``'torch'`` otherwise (see
`resolve_backend`); with ``num_workers=None`` the count suits the device (`default_workers`).
``'torch'``: Pillow decode in a `torch.utils.data.DataLoader` with `num_workers` processes.
``'dali'``: an NVIDIA DALI pipeline (``nvidia.dali.plugin.pytorch.DALIGenericIterator``) fed through
``fn.external_source`` with the encoded bytes (read here in Python) and the `augment_params`
boxes/flips; decoding on the GPU (``device='mixed'``) when ``device='cuda'``, on the CPU with
``device_id=None`` and `num_workers` threads otherwise. The pipeline is built once per loader at
the first iteration; an epoch abandoned part-way makes the next iteration rebuild it.

Bad images
----------
An image that cannot be decoded, or that is not 8-bit RGB/grey, raises ValueError naming the file
and the source (both backends). Nothing is skipped: a silent skip would shift every later sample
between batches and break the backends' identity; prepared datasets are already screened by the
ingest step, so a bad file there is a real error.
"""
import collections
import functools
import io
import math
import os
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..checks import check_int
from ..device import resolve_device
from .dataset import DatasetReader, list_images

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")  # the formats both backends decode identically
BACKENDS = ("torch", "dali")
AUTO_DALI_THREADS = 12   # DALI threads on CUDA: PNG decoding there is on the CPU (~12 ms per 1024 px image)
_MODES = ("RGB", "L")  # 8-bit colour or grey: decoded identically by Pillow and DALI
# SeedSequence spawn-key namespaces, so the shuffle and the per-sample draws never share a stream.
_ORDER_KEY, _SAMPLE_KEY = 0, 1


# ----------------------------------------------------------------------------------------------
# Random parameters, shared by both backends


@dataclass(frozen=True)
class AugmentParams:
    """Augmentation of one sample: the square crop box (source pixels) and the flips.

    The box covers rows ``top:top + size`` and columns ``left:left + size``; ``xflip`` mirrors
    columns (left-right), ``yflip`` mirrors rows (up-down), both applied after the resize.
    """
    top: int
    left: int
    size: int
    xflip: bool
    yflip: bool


def _check_crop_scale(crop_scale):
    if crop_scale is None:
        return None
    try:
        lo, hi = (float(v) for v in crop_scale)
    except (TypeError, ValueError):
        raise ValueError(f"crop_scale must be None or a (low, high) pair, got {crop_scale!r}") from None
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale!r}")
    return lo, hi


def augment_params(height, width, *, seed, epoch, index, xflip=False, yflip=False, crop_scale=None):
    """Crop box and flips for sample `index` of `epoch`: a pure function of its arguments.

    Parameters
    ----------
    height, width : int
        Size of the decoded source image, pixels.
    seed, epoch, index : int >= 0
        The random stream is numpy's default generator keyed on (seed, epoch, index), so each
        sample's parameters are independent of batch composition, shuffle and backend.
    xflip, yflip : bool
        Enable a random left-right / up-down flip, each with probability 1/2.
    crop_scale : None or (low, high)
        None: the centred largest square (the whole image when square). Otherwise a random square
        of side ``round(u * min(height, width))``, u uniform in [low, high] (side as a fraction of
        the shorter side, so aspect is kept), at a uniformly random position inside the image.

    Returns
    -------
    AugmentParams
        Box (top, left, size) in source pixels, (row, col) convention; flip decisions.

    Five uniforms are always drawn in a fixed order (scale, row, col, xflip, yflip), so turning one
    option on or off leaves the others' draws unchanged.
    """
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    seed = check_int("seed", seed, minimum=0)
    epoch = check_int("epoch", epoch, minimum=0)
    index = check_int("index", index, minimum=0)
    crop_scale = _check_crop_scale(crop_scale)
    u = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SAMPLE_KEY, epoch, index))).random(5)
    short = min(height, width)
    if crop_scale is None:
        size = short
        top, left = (height - size) // 2, (width - size) // 2
    else:
        lo, hi = crop_scale
        size = min(short, max(1, int(round(short * (lo + u[0] * (hi - lo))))))
        top = min(int(u[1] * (height - size + 1)), height - size)
        left = min(int(u[2] * (width - size + 1)), width - size)
    return AugmentParams(top, left, size, bool(xflip and u[3] < 0.5), bool(yflip and u[4] < 0.5))


def epoch_order(n, *, shuffle, seed, epoch):
    """Sample indices of one epoch: ``arange(n)``, or a permutation keyed on (seed, epoch)."""
    if not shuffle:
        return np.arange(n)
    seq = np.random.SeedSequence(check_int("seed", seed, minimum=0), spawn_key=(_ORDER_KEY, check_int("epoch", epoch, minimum=0)))
    return np.random.default_rng(seq).permutation(n)


def _batches(n, batch_size, drop_last, order):
    stop = (n // batch_size) * batch_size if drop_last else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


# ----------------------------------------------------------------------------------------------
# Listing and decoding


def list_source(source):
    """Images of a loader source: list of (name, label or None).

    A folder or .zip with dataset.json is read with `retina_fast.data.dataset.list_images`
    (dataset.json order); otherwise every PNG/JPEG, searched recursively, sorted by relative name.
    """
    path = os.fspath(source)
    is_zip = os.path.isfile(path) and zipfile.is_zipfile(path)
    if not (is_zip or os.path.isdir(path)):
        raise ValueError(f"source must be a dataset folder, a .zip or a folder of images, got {path!r}")
    items = list_images(path, extensions=IMAGE_EXTENSIONS)
    if not items:
        raise ValueError(f"source {path!r} holds no PNG/JPEG images")
    return items


def _open(data, name, source):
    """Pillow image (header parsed, pixels not yet decoded); ValueError naming the file if unusable."""
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError...
        raise ValueError(f"{source}: cannot decode image {name!r}: {e}") from None
    if img.format not in ("PNG", "JPEG"):
        raise ValueError(f"{source}: image {name!r} is {img.format}, expected PNG or JPEG")
    if img.mode not in _MODES:
        raise ValueError(f"{source}: image {name!r} has mode {img.mode!r}; expected 8-bit RGB or grey")
    return img


def _decode(data, name, source):
    """(H, W, 3) uint8 RGB array; ValueError naming the file if it cannot be decoded."""
    img = _open(data, name, source)
    try:
        img.load()
    except Exception as e:
        raise ValueError(f"{source}: cannot decode image {name!r}: {e}") from None
    a = np.array(img)  # writable: torch.from_numpy warns on read-only arrays
    return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a


def _head_and_tail(source, is_zip, zf, name, n=64):
    """First 16 and last `n` bytes of image `name` (a folder file, or a zip member)."""
    if is_zip:
        info = zf.getinfo(name)
        if info.compress_type == zipfile.ZIP_STORED:
            # Read the stored bytes in place: seeking a member (Python 3.11) reads it through, which
            # on a 100 GB dataset zip would cost every run start a full pass over the data.
            with open(source, "rb") as f:
                f.seek(info.header_offset)
                local = f.read(30)
                if local[:4] != b"PK\x03\x04":
                    raise zipfile.BadZipFile(f"bad local header for {name!r}")
                start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
                    + int.from_bytes(local[28:30], "little")
                f.seek(start)
                head = f.read(min(16, info.file_size))
                f.seek(start + max(info.file_size - n, 0))
                return head, f.read(min(n, info.file_size))
        with zf.open(name) as f:
            head = f.read(16)
            f.seek(max(info.file_size - n, 0))
            return head, f.read()
    with open(DatasetReader(source).file_path(name), "rb") as f:
        head = f.read(16)
        f.seek(max(os.fstat(f.fileno()).st_size - n, 0))
        return head, f.read()


def check_images(source, sample=8):
    """Check a loader source's images before a run that reads them creates any output.

    Every image is checked cheaply: a PNG must start with the PNG signature and end with its IEND
    chunk, a JPEG start with SOI and end with EOI (a truncated copy or download fails this), and
    `sample` images spread over the list are decoded in full as the loaders decode them (format
    and mode checked).

    Parameters
    ----------
    source : str or os.PathLike
        A dataset folder or .zip, or a folder of PNG/JPEG images (as `make_loader` takes).
    sample : int
        How many images to decode in full (evenly spaced, first and last included).

    Raises
    ------
    ValueError
        One line naming the source, how many images are bad and the first of them with the reason.
    """
    source = os.fspath(source)
    names = [n for n, _ in list_source(source)]
    is_zip = os.path.isfile(source) and zipfile.is_zipfile(source)
    bad = []
    zf = zipfile.ZipFile(source) if is_zip else None
    try:
        for name in names:
            try:
                head, tail = _head_and_tail(source, is_zip, zf, name)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
                bad.append((name, f"cannot be read: {e}"))
                continue
            if head.startswith(b"\x89PNG\r\n\x1a\n"):
                if not tail.endswith(b"IEND\xaeB`\x82"):
                    bad.append((name, "PNG is truncated (no IEND chunk at its end)"))
            elif head.startswith(b"\xff\xd8\xff"):
                if b"\xff\xd9" not in tail:
                    bad.append((name, "JPEG is truncated (no end-of-image marker)"))
            else:
                bad.append((name, "is neither a PNG nor a JPEG"))
    finally:
        if zf is not None:
            zf.close()
    if not bad:
        picks = sorted({round(i * (len(names) - 1) / max(sample - 1, 1)) for i in range(min(sample, len(names)))})
        with DatasetReader(source) as reader:
            for i in picks:
                try:
                    _decode(reader.read_bytes(names[i]), names[i], source)
                except ValueError as e:
                    bad.append((names[i], str(e).split(": ", 1)[-1]))
                    break
    if bad:
        name, why = bad[0]
        raise ValueError(f"{source}: {len(bad)} of {len(names)} images are unusable, e.g. {name!r}: {why}")


# ----------------------------------------------------------------------------------------------
# Resampling that matches DALI's linear antialiased resize


@functools.lru_cache(maxsize=256)
def _resize_taps(n_in, n_out):
    """Clamped triangle filter of an n_in -> n_out resize.

    Returns (index, weight), both [n_out, K] (source indices already clamped to the edge, weights
    summing to 1 per output), and the output indices whose filter hangs over an edge: the only
    ones where torch's antialiased bilinear (which renormalises the truncated filter) can differ.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centre = (np.arange(n_out) + 0.5) * scale
    first = np.floor(centre - support).astype(np.int64)
    taps = first[:, None] + np.arange(int(math.ceil(2 * support)) + 2)[None, :]
    w = np.clip(1 - np.abs((taps + 0.5 - centre[:, None]) / support), 0, None)
    w /= w.sum(1, keepdims=True)
    border = np.flatnonzero(((w > 0) & ((taps < 0) | (taps >= n_in))).any(1))
    return (torch.from_numpy(np.clip(taps, 0, n_in - 1)), torch.from_numpy(w.astype(np.float32)),
            torch.from_numpy(border))


def _apply_taps(x, dim, index, weight):
    """Resample [C, H, W] tensor `x` along `dim` (1 or 2) with per-output taps (index, weight)."""
    shape = (1, -1, 1) if dim == 1 else (1, 1, -1)
    out = None
    for k in range(index.shape[1]):
        t = x.index_select(dim, index[:, k]).mul_(weight[:, k].view(shape))
        out = t if out is None else out.add_(t)
    return out


def resize_linear_aa(image, size):
    """Resize a float [C, H, W] tensor to [C, size, size] exactly as DALI's linear antialiased resize.

    torch's ``interpolate(mode='bilinear', antialias=True)`` does all but the border output rows
    and columns whose filter hangs over the edge; those are recomputed with clamped weights.
    Upscaling needs no fix (a truncated support-1 triangle leaves one tap either way), and the
    fix costs a few taps on a few rows, so it adds little to the interpolation itself.
    """
    _, h, w = image.shape
    out = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear",
                                          antialias=True, align_corners=False)[0]
    ir, wr, rows = _resize_taps(h, size)
    ic, wc, cols = _resize_taps(w, size)
    if len(rows):
        out[:, rows, :] = _apply_taps(_apply_taps(image, 1, ir[rows], wr[rows]), 2, ic, wc)
    if len(cols):
        out[:, :, cols] = _apply_taps(_apply_taps(image, 2, ic[cols], wc[cols]), 1, ir, wr)
    return out


# ----------------------------------------------------------------------------------------------
# Loaders


class _LoaderBase:
    def __init__(self, source, *, batch_size, resolution, xflip, yflip, crop_scale, shuffle, seed,
                 epoch, drop_last, num_workers, device):
        self.source = os.fspath(source)
        check_int("batch_size", batch_size, minimum=1)
        check_int("resolution", resolution, minimum=1)
        check_int("num_workers", num_workers, minimum=0)
        self.device = resolve_device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.batch_size, self.resolution = int(batch_size), int(resolution)
        self.num_workers = int(num_workers)
        self.augment = dict(xflip=bool(xflip), yflip=bool(yflip), crop_scale=_check_crop_scale(crop_scale))
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed = check_int("seed", seed, minimum=0)
        self.epoch = check_int("epoch", epoch, minimum=0)
        items = list_source(self.source)
        self.names = [n for n, _ in items]
        self.labels = np.array([-1 if lab is None else int(lab) for _, lab in items], np.int64)
        self._reader = DatasetReader(self.source)

    def set_epoch(self, epoch):
        """Epoch used by the next iteration (selects the shuffle and the augmentation draws)."""
        self.epoch = check_int("epoch", epoch, minimum=0)

    def __len__(self):
        n = len(self.names)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batch_indices(self):
        """Sample indices (into `names`) of each batch of the current epoch, in order."""
        order = epoch_order(len(self.names), shuffle=self.shuffle, seed=self.seed, epoch=self.epoch)
        return _batches(len(self.names), self.batch_size, self.drop_last, order)


class _TorchDataset(torch.utils.data.Dataset):
    def __init__(self, loader):
        self.reader, self.names, self.labels = loader._reader, loader.names, loader.labels
        self.source, self.resolution = loader.source, loader.resolution
        self.seed, self.augment = loader.seed, loader.augment

    def __len__(self):
        return len(self.names)

    def __getitem__(self, key):
        index, epoch = key
        name = self.names[index]
        a = _decode(self.reader.read_bytes(name), name, self.source)
        p = augment_params(a.shape[0], a.shape[1], seed=self.seed, epoch=epoch, index=index, **self.augment)
        box = torch.from_numpy(a[p.top:p.top + p.size, p.left:p.left + p.size])
        x = resize_linear_aa(box.permute(2, 0, 1).to(torch.float32, memory_format=torch.contiguous_format),
                              self.resolution)
        flips = [d for d, on in ((2, p.xflip), (1, p.yflip)) if on]
        if flips:
            x = x.flip(flips)
        return x.mul_(1 / 127.5).sub_(1), torch.tensor(self.labels[index])


class _EpochBatchSampler(torch.utils.data.Sampler):
    # Yields (index, epoch) keys, so persistent workers need no epoch state of their own.
    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        epoch = self.loader.epoch
        for b in self.loader.batch_indices():
            yield [(int(i), epoch) for i in b]

    def __len__(self):
        return len(self.loader)


def _worker_init(_):
    torch.set_num_threads(1)  # one process per core already; intra-op threads would oversubscribe


class TorchLoader(_LoaderBase):
    """Pillow + torch backend of `make_loader` (a `torch.utils.data.DataLoader` underneath)."""

    def __init__(self, source, **kw):
        super().__init__(source, **kw)
        self._dl = torch.utils.data.DataLoader(
            _TorchDataset(self), batch_sampler=_EpochBatchSampler(self), num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=self.num_workers > 0,
            worker_init_fn=_worker_init if self.num_workers > 0 else None)

    def __iter__(self):
        for images, labels in self._dl:
            if self.device.type == "cuda":
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
            yield images, labels


class _DaliFeed:
    """external_source iterable: one epoch of (bytes, box start, box shape, xflip, yflip, label).

    The generator reads the loader's epoch when it starts (lazily), so a `set_epoch` made before
    the iterator's reset is honoured even though DALI asks for the next iterator early.
    """

    def __init__(self, loader):
        self.loader = loader
        self.recent = collections.deque(maxlen=4)  # names of batches in flight, to blame a bad file

    def __iter__(self):
        return self._epoch()

    def _epoch(self):
        ld = self.loader
        epoch = ld.epoch
        for batch in ld.batch_indices():
            cols = ([], [], [], [], [], [])
            names = [ld.names[i] for i in batch]
            self.recent.append(names)
            for i, name in zip(batch, names):
                data = ld._reader.read_bytes(name)
                width, height = _open(data, name, ld.source).size
                p = augment_params(height, width, seed=ld.seed, epoch=epoch, index=int(i), **ld.augment)
                cols[0].append(np.frombuffer(data, np.uint8))
                cols[1].append(np.array([p.top, p.left], np.int32))
                cols[2].append(np.array([p.size, p.size], np.int32))
                cols[3].append(np.array(p.xflip, np.int32))
                cols[4].append(np.array(p.yflip, np.int32))
                cols[5].append(np.array(ld.labels[i], np.int64))
            yield cols


class DaliLoader(_LoaderBase):
    """NVIDIA DALI backend of `make_loader` (GPU decode when device='cuda')."""

    def __init__(self, source, **kw):
        super().__init__(source, **kw)
        try:
            import nvidia.dali  # noqa: F401
        except ImportError as e:
            raise ValueError(f"backend='dali' needs nvidia-dali ({e})") from None
        self._feed = _DaliFeed(self)
        self._iter = None
        self._done = False    # the last epoch ran to its end, so the iterator may be reset

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        gpu = self.device.type == "cuda"
        device_id = self.device.index if gpu else None
        op = "gpu" if gpu else "cpu"
        r = self.resolution

        @pipeline_def(batch_size=self.batch_size, num_threads=max(1, self.num_workers), device_id=device_id,
                      prefetch_queue_depth=2)
        def pipe():
            enc, start, shape, xflip, yflip, label = fn.external_source(
                source=self._feed, num_outputs=6, batch=True, cycle="raise")
            img = fn.decoders.image(enc, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                    adjust_orientation=False)
            img = fn.slice(img, start=start, shape=shape, axis_names="HW", device=op)
            img = fn.resize(img, size=[r, r], interp_type=types.INTERP_LINEAR, antialias=True,
                            dtype=types.FLOAT, device=op)
            img = fn.flip(img, horizontal=xflip, vertical=yflip, device=op)
            img = fn.crop_mirror_normalize(img, mean=127.5, std=127.5, dtype=types.FLOAT,
                                           output_layout="CHW", device=op)
            # labels travel with the images: a host tensor would need a stalling copy per batch
            return img, (label.gpu() if gpu else label)

        p = pipe()
        p.build()
        self._iter = DALIGenericIterator([p], ["images", "labels"], auto_reset=False, size=-1)

    def _blame(self, err):
        """Turn a DALI failure into a ValueError naming the file, if Pillow finds it bad too."""
        self._iter = None
        for names in list(self._feed.recent):
            for name in names:
                _decode(self._reader.read_bytes(name), name, self.source)  # raises ValueError naming it
        raise RuntimeError(f"DALI failed on {self.source} (images decode with Pillow): {err}") from err

    def __iter__(self):
        # A fresh pipeline (first epoch, or the last one abandoned part-way, which DALI cannot
        # reset) prefetches at construction, so it is built here, after any set_epoch.
        try:
            if self._iter is not None and self._done:
                self._iter.reset()
            else:
                self._iter = None
                self._feed.recent.clear()
                self._build()
        except ValueError:
            self._iter = None
            raise
        except RuntimeError as e:
            self._blame(e)
        self._done = False
        it = self._iter
        while True:
            try:
                out = next(it)
            except StopIteration:
                self._done = True
                return
            except ValueError:
                self._iter = None
                raise
            except RuntimeError as e:
                self._blame(e)
            images, labels = out[0]["images"], out[0]["labels"].reshape(-1)
            if images.device != self.device or labels.device != self.device:
                images, labels = images.to(self.device), labels.to(self.device)
            yield images, labels


def _dali_importable():
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend, device):
    """The loader backend for `backend` on `device`: 'auto' -> 'dali' on CUDA if DALI imports, else 'torch'.

    Parameters
    ----------
    backend : {'auto', 'torch', 'dali'}
    device : str or torch.device
        Where the batches go ('cpu', 'cuda', 'cuda:k').

    Returns
    -------
    str
        'torch' or 'dali'. An explicit backend is returned as given (checked).
    """
    if backend == "auto":
        return "dali" if torch.device(device).type == "cuda" and _dali_importable() else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    return backend


def default_workers(backend, device):
    """Loader workers for ``num_workers=None``: none beside a model trained on the CPU, many on CUDA.

    On the CPU the model's own threads use every core, so the torch backend decodes in the main
    process (0) and DALI uses 1 thread. On CUDA the CPU only feeds the GPU: DALI gets
    min(AUTO_DALI_THREADS, cores - 2) threads and torch min(8, cores - 2) processes (at least 1),
    leaving cores for the training loop.

    Parameters
    ----------
    backend : {'torch', 'dali'} (resolved, see `resolve_backend`)
    device : str or torch.device

    Returns
    -------
    int >= 0
    """
    if torch.device(device).type != "cuda":
        return 1 if backend == "dali" else 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(AUTO_DALI_THREADS if backend == "dali" else 8, cores - 2))


def make_loader(source, *, backend="torch", batch_size=8, resolution=1024, xflip=False, yflip=False,
                crop_scale=None, shuffle=False, seed=0, epoch=0, drop_last=False, num_workers=0,
                device="cpu"):
    """Iterable of (images, labels) batches over a dataset folder/zip or a folder of PNG/JPEG images.

    Parameters
    ----------
    source : path
        Dataset folder or .zip (StyleGAN2-ADA layout with dataset.json), or a folder of images.
    backend : {'torch', 'dali', 'auto'}
        'torch': Pillow decode in a DataLoader. 'dali': NVIDIA DALI pipeline; GPU (mixed) decode
        when `device` is CUDA, CPU pipeline (``device_id=None``) otherwise. 'auto': 'dali' on CUDA
        when DALI is installed, else 'torch' (`resolve_backend`).
    batch_size : int
        Samples per batch.
    resolution : int
        Output side R, pixels: every crop box is resized to R x R.
    xflip, yflip, crop_scale :
        Augmentations, see `augment_params`. All off by default: centred largest square, resized.
    shuffle : bool
        Permute the samples each epoch (a permutation keyed on (seed, epoch)).
    seed, epoch : int >= 0
        Key of the random draws; change the epoch with ``loader.set_epoch(e)``.
    drop_last : bool
        Drop the last, smaller batch.
    num_workers : int or None
        torch: DataLoader worker processes (0 = in the main process). dali: CPU threads
        (``num_threads = max(1, num_workers)``). None: `default_workers` (0 or 1 on the CPU, most
        cores on CUDA).
    device : 'cpu' or 'cuda' (or 'cuda:k')
        Where the batches are delivered (and, for dali, where decoding runs).

    Returns
    -------
    TorchLoader or DaliLoader
        Iterable of ``(images, labels)``: images float32 [N, 3, R, R] in [-1, 1] (``x / 127.5 - 1``),
        labels int64 [N] (-1 when unlabelled). ``len()`` is the number of batches per epoch;
        ``.names`` / ``.labels`` list the samples in dataset order; ``.set_epoch(e)``.

    Raises
    ------
    ValueError
        Bad argument (named), an empty or missing source, or (during iteration) an image that cannot
        be decoded or is not 8-bit RGB/grey (the file is named).
    """
    backend = resolve_backend(backend, device)
    if num_workers is None:
        num_workers = default_workers(backend, device)
    cls = TorchLoader if backend == "torch" else DaliLoader
    return cls(source, batch_size=batch_size, resolution=resolution, xflip=xflip, yflip=yflip,
               crop_scale=crop_scale, shuffle=shuffle, seed=seed, epoch=epoch, drop_last=drop_last,
               num_workers=num_workers, device=device)
