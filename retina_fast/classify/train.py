"""Training and inference of the ERM-vs-normal classifier (the paper's step 3 recipe).

    items = items_from_source("prepared/dataset")            # retina_fast.data.items: [Item, ...]
    res = train_classifier(train_items, valid_items, TrainConfig(outdir="run", epochs=30))
    p_erm = predict(res.model, test_items)                    # P(class 1) per item

Recipe (paper): ResNet152, 512 x 512 RGB, Adam lr 1e-4, batch 10; augmentation per minibatch,
random horizontal and vertical flips, shift 6.25 %, zoom 10 %, rotation +-5 degrees; the epoch with the
lowest validation loss is kept. Options beyond the paper: class-weighted cross-entropy and random
oversampling of the minority class (the cheap imbalance baselines of the study).

Images are read by `retina_fast.data.loaders.make_loader` (Pillow/torch, or DALI with GPU decoding):
an item list is staged as a dataset folder of symbolic links plus ``dataset.json`` (copies for items
inside a .zip), so every image goes through the loaders' one decode -> centred square crop ->
resize -> ``x / 127.5 - 1`` path, and the loaders' bad-image errors name the file.

The geometric augmentation runs on the batch tensor (on the GPU when training there): one affine
matrix per sample, applied with ``affine_grid``/``grid_sample`` (bilinear, edge replication outside
the image, as Keras' ``fill_mode='nearest'``). The draws are a pure function of (seed, epoch, batch
index), so a run is repeatable.
"""
import contextlib
import copy
import csv
import io
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from retina_fast.checkpoints import build_on_meta, check_state_dict, load_torch_file
from retina_fast.checks import check_int
from retina_fast.data.items import as_items, stage_items
from retina_fast.data.loaders import BACKENDS, make_loader
from retina_fast.device import resolve_device
from retina_fast.fileio import atomic_write, write_text_atomic
from retina_fast.transfer import host_to_device

from .model import ARCHITECTURES, ResNetClassifier, load_weights, make_classifier, prepare_for_device

__all__ = [
    "CHECKPOINT_FORMAT",
    "COMPILE_MODES",
    "TrainConfig",
    "TrainResult",
    "augment_batch",
    "check_config",
    "load_classifier",
    "plot_history",
    "predict",
    "save_checkpoint",
    "train_classifier",
    "train_step",
]

CHECKPOINT_FORMAT = "retina_fast.classify/1"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
HISTORY_COLUMNS = ("epoch", "train_loss", "valid_loss", "valid_accuracy", "valid_auc", "train_images",
                   "images_per_s", "seconds", "best")

_AUG_KEY = 2  # SeedSequence spawn-key namespace of the augmentation draws (the loaders use 0 and 1)


# ----------------------------------------------------------------------------------------------
# Configuration and results


@dataclass
class TrainConfig:
    """Settings of one training run (saved in the checkpoint and beside the outputs).

    Attributes
    ----------
    outdir : str or None
        Folder for ``checkpoint.pt``, ``history.csv`` and ``training_curve.png`` (None: nothing written).
    arch, weights : see `make_classifier` ('resnet152', None = random init; or a local weight file).
    size : int
        Input side, pixels (images are centre-cropped to a square and resized to size x size).
    batch_size : int
        Minibatch (paper: 10).
    epochs : int
        Epochs; the one with the lowest validation loss is kept.
    lr : float
        Adam learning rate (paper: 1e-4).
    augment : bool
        Paper augmentation (flips, shift 6.25 %, zoom 10 %, rotation +-5 deg), per minibatch.
    shift, zoom, rotation : float
        Maximum shift (fraction of the side), zoom (scale in [1 - zoom, 1 + zoom]), rotation (degrees).
    class_weight : None, 'balanced' or (w0, w1)
        Weighted cross-entropy: 'balanced' weights class c by n / (2 n_c) of the training set.
    oversample : bool
        Random oversampling: minority items are drawn with replacement (seeded) until both classes
        have as many items as the majority, once before training (as imbalanced-learn's
        RandomOverSampler).
    patience : None or int
        Stop after this many epochs without a lower validation loss (None: run all epochs).
    seed : int
        Seeds the weight initialisation, the shuffle, the loaders and the augmentation.
    device : 'auto', 'cpu', 'cuda'
    backend : 'auto', 'torch' or 'dali'
        `make_loader` backend (DALI decodes on the GPU when device is CUDA); 'auto' (default): DALI
        on CUDA when it is installed, torch otherwise.
    workers : None or int
        Loader workers (torch processes / DALI threads); None (default): none beside a model trained
        on the CPU, most cores on CUDA (`retina_fast.data.loaders.default_workers`).
    amp : None or bool
        Mixed precision (torch.autocast); None = on for CUDA. `amp_dtype` 'bfloat16' or 'float16'
        (float16 uses a gradient scaler).
    channels_last : None or bool
        None = on for CUDA.
    compile : bool or str
        ``torch.compile`` the training forward/backward: False (default), True (torch's default
        mode) or a torch.compile mode name. ``'reduce-overhead'`` also replays each step as CUDA
        graphs, which removes the host's per-kernel launch cost: the fastest setting measured
        (ResNet152, 512 px, bf16, channels_last, batch 64, one H100, model only, in
        benchmarks/classify_throughput.py): eager 369 images/s, ``'reduce-overhead'`` 530 images/s.
        Compilation takes a few minutes, once per process: later models of the same architecture
        and batch shape (a study's other runs) reuse the compiled code. The epoch's last, smaller
        batch, validation and checkpoints use the plain module.
    progress : bool
        tqdm bars over epochs and batches.
    """
    outdir: str = None
    arch: str = "resnet152"
    weights: str = None
    size: int = 512
    batch_size: int = 10
    epochs: int = 30
    lr: float = 1e-4
    augment: bool = True
    shift: float = 0.0625
    zoom: float = 0.1
    rotation: float = 5.0
    class_weight: object = None
    oversample: bool = False
    patience: int = None
    seed: int = 0
    device: str = "auto"
    backend: str = "auto"
    workers: int = None
    amp: bool = None
    amp_dtype: str = "bfloat16"
    channels_last: bool = None
    compile: object = False
    progress: bool = False

    def as_dict(self):
        d = asdict(self)
        if isinstance(d["class_weight"], (tuple, list)):
            d["class_weight"] = [float(w) for w in d["class_weight"]]
        return d


@dataclass
class TrainResult:
    """Outcome of `train_classifier`.

    best_epoch : int (0-based); history : list of per-epoch dicts (HISTORY_COLUMNS);
    checkpoint : path of the best epoch's checkpoint or None; model : the model with the best
    epoch's weights, in eval mode; history_csv, curve_png : paths or None.
    """
    best_epoch: int
    history: list
    checkpoint: str = None
    model: torch.nn.Module = field(default=None, repr=False)
    history_csv: str = None
    curve_png: str = None


def _check_config(cfg):
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"cfg.arch must be one of {sorted(ARCHITECTURES)}, got {cfg.arch!r}")
    for name in ("size", "batch_size", "epochs"):
        check_int(f"cfg.{name}", getattr(cfg, name), minimum=1)
    if cfg.size < 32:
        raise ValueError(f"cfg.size must be >= 32 (ResNet downsamples by 32), got {cfg.size}")
    if not (cfg.lr > 0):
        raise ValueError(f"cfg.lr must be > 0, got {cfg.lr!r}")
    if not (0 <= cfg.shift < 0.5 and 0 <= cfg.zoom < 0.5 and 0 <= cfg.rotation <= 180):
        raise ValueError(f"augmentation out of range: shift {cfg.shift}, zoom {cfg.zoom}, rotation {cfg.rotation}")
    cw = cfg.class_weight
    if not (cw is None or cw == "balanced" or (isinstance(cw, (tuple, list)) and len(cw) == 2
                                               and all(float(w) > 0 for w in cw))):
        raise ValueError(f"cfg.class_weight must be None, 'balanced' or two positive weights, got {cw!r}")
    if cfg.amp_dtype not in ("bfloat16", "float16"):
        raise ValueError(f"cfg.amp_dtype must be 'bfloat16' or 'float16', got {cfg.amp_dtype!r}")
    if cfg.backend not in ("auto",) + BACKENDS:
        raise ValueError(f"cfg.backend must be 'auto' or one of {BACKENDS}, got {cfg.backend!r}")
    check_int("cfg.workers", cfg.workers, minimum=0, allow_none=True)
    if not (isinstance(cfg.compile, bool) or cfg.compile in COMPILE_MODES):
        raise ValueError(f"cfg.compile must be True, False or one of {COMPILE_MODES}, got {cfg.compile!r}")
    if cfg.patience is not None and (isinstance(cfg.patience, bool) or int(cfg.patience) < 1):
        raise ValueError(f"cfg.patience must be None or an integer >= 1, got {cfg.patience!r}")


def check_config(cfg):
    """Check a `TrainConfig` before a run writes anything: its values, and its weights file.

    The weights file (``cfg.weights``) is read safely and matched to ``cfg.arch`` on the ``meta``
    device (no network of real size is built).

    Raises
    ------
    ValueError
        One line naming the option or the file.
    """
    _check_config(cfg)
    if cfg.weights is not None:
        model = build_on_meta(lambda: ResNetClassifier(cfg.arch, 2), "cfg.weights", "cfg.arch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # copying into meta tensors is a no-op, and warns so
            load_weights(model, cfg.weights)


# ----------------------------------------------------------------------------------------------
# Staging item lists for make_loader


def _oversample(items, seed):
    """Minority-class items drawn with replacement until the classes are equal; order shuffled."""
    labels = np.array([it.label for it in items])
    counts = {c: int((labels == c).sum()) for c in (0, 1)}
    if min(counts.values()) == 0:
        return list(items)
    minority = min(counts, key=counts.get)
    need = max(counts.values()) - counts[minority]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    idx = np.flatnonzero(labels == minority)
    extra = rng.choice(idx, size=need, replace=True) if need else np.zeros(0, int)
    return list(items) + [items[i] for i in extra]


# ----------------------------------------------------------------------------------------------
# Augmentation


def augment_batch(x, *, seed, epoch, step, shift=0.0625, zoom=0.1, rotation=5.0, hflip=True, vflip=True):
    """The paper's augmentation on a batch tensor: one random affine transform per sample.

    Parameters
    ----------
    x : torch.Tensor [N, C, H, W]
        Images (any float dtype, any device); square images keep angles exact.
    seed, epoch, step : int >= 0
        Key of the draws (numpy SeedSequence), so a batch's transforms are repeatable.
    shift : float
        Translation, uniform in [-shift, shift] times the side, independently along rows and columns.
    zoom : float
        Isotropic scale, uniform in [1 - zoom, 1 + zoom] (> 1 magnifies).
    rotation : float
        Angle, uniform in [-rotation, rotation] degrees.
    hflip, vflip : bool
        Left-right / up-down flips, each with probability 1/2.

    Returns
    -------
    torch.Tensor, same shape, dtype and device. Sampled bilinearly (``align_corners=False``);
    outside the source the edge pixel is repeated (fundus borders are black).
    """
    n = x.shape[0]
    u = np.random.default_rng(np.random.SeedSequence(
        [int(seed), int(epoch), int(step)], spawn_key=(_AUG_KEY,))).random((n, 6))
    angle = np.deg2rad((2 * u[:, 0] - 1) * rotation)
    scale = 1.0 + (2 * u[:, 1] - 1) * zoom
    # shift as a fraction of the side; normalised coordinates span 2 per side
    tx, ty = (2 * u[:, 2] - 1) * shift * 2, (2 * u[:, 3] - 1) * shift * 2
    fx = np.where(hflip & (u[:, 4] < 0.5), -1.0, 1.0)
    fy = np.where(vflip & (u[:, 5] < 0.5), -1.0, 1.0)
    c, s = np.cos(angle) / scale, np.sin(angle) / scale
    # output (x, y) -> input: R(angle) / scale @ diag(fx, fy) @ (x, y) + t
    theta = np.stack([np.stack([c * fx, -s * fy, tx], 1), np.stack([s * fx, c * fy, ty], 1)], 1)
    theta = host_to_device(torch.from_numpy(theta.astype(np.float32)), x.device)  # no host stall
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    grid = F.affine_grid(theta.to(xf.dtype), list(xf.shape), align_corners=False)
    out = F.grid_sample(xf, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Checkpoints and history


def save_checkpoint(path, model, *, size, config=None, epoch=None, valid_loss=None):
    """Write the model's weights and metadata with ``torch.save``, atomically (`retina_fast.fileio`).

    The file holds plain data only (``torch.load(..., weights_only=True)`` reads it):
    ``{'format', 'arch', 'num_classes', 'size', 'state_dict', 'config', 'epoch', 'valid_loss'}``.
    """
    path = os.fspath(path)
    state = {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone()
             for k, v in model.state_dict().items()}
    obj = {"format": CHECKPOINT_FORMAT, "arch": model.arch, "num_classes": int(model.fc.out_features),
           "size": int(size), "state_dict": state, "config": config or {},
           "epoch": None if epoch is None else int(epoch),
           "valid_loss": None if valid_loss is None else float(valid_loss)}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        torch.save(obj, f)
    return path


def load_classifier(path, device="cpu", channels_last=None):
    """Model of a `save_checkpoint` file, in eval mode, with ``model.input_size`` set (pixels).

    Raises FileNotFoundError (named) when missing, ValueError when the file is not such a checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"classifier checkpoint not found: {path!r}")
    obj = load_torch_file(path, what="classifier checkpoint")
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path!r} is not a classifier checkpoint (format {CHECKPOINT_FORMAT!r})")
    where = f"classifier checkpoint {path!r}"
    if obj.get("arch") not in ARCHITECTURES:
        raise ValueError(f"{where}: arch {obj.get('arch')!r} is not one of {list(ARCHITECTURES)}")
    # num_classes sizes the head: checked against the stored weights before the model is built.
    meta = build_on_meta(lambda: ResNetClassifier(obj["arch"], obj["num_classes"]), where, "its arch and num_classes")
    check_state_dict(meta, obj.get("state_dict"), where, what="its arch and num_classes")
    model = ResNetClassifier(obj["arch"], obj["num_classes"])
    model.load_state_dict(obj["state_dict"])
    model.input_size = int(obj["size"])
    model = prepare_for_device(model, resolve_device(device), channels_last)
    return model.eval()


def _write_history_csv(path, history):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k, "") for k in HISTORY_COLUMNS})
    write_text_atomic(path, buf.getvalue())
    return path


def plot_history(history, path, title=""):
    """Training curve PNG: training and validation loss per epoch, validation AUC/accuracy, best epoch."""
    from retina_fast.report.plots import pyplot, save_figure

    plt = pyplot()
    ep = [r["epoch"] + 1 for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(ep, [r["train_loss"] for r in history], "o-", label="train")
    a.plot(ep, [r["valid_loss"] for r in history], "o-", label="valid")
    best = [r["epoch"] + 1 for r in history if r.get("best")]
    if best:
        a.axvline(best[-1], color="grey", ls="--", lw=1, label=f"best epoch {best[-1]}")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy")
    a.legend()
    b.plot(ep, [r["valid_auc"] for r in history], "o-", label="valid AUC")
    b.plot(ep, [r["valid_accuracy"] for r in history], "s-", label="valid accuracy")
    b.set_ylim(0, 1.02)
    b.set_xlabel("epoch")
    b.legend()
    fig.suptitle(title)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# Training


def _autocast(device, amp, dtype):
    if not amp:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def _compiled(model, mode):
    """`model` (mode False) or ``torch.compile(model)`` in torch.compile `mode` (True: torch's default)."""
    if mode is False:
        return model
    return torch.compile(model, mode=None if mode is True else mode)


@contextlib.contextmanager
def _cudnn_autotune(on):
    """cuDNN picks its fastest kernels for the (fixed) batch shapes while training; restored after."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = saved or on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _valid_auc(y, p):
    from .metrics import auc_ci
    if (y == 1).sum() < 2 or (y == 0).sum() < 2:
        return float("nan")
    return auc_ci(y, p, "delong")[0]


def _run_eval(model, loader, device, amp, amp_dtype, channels_last):
    """(mean cross-entropy or nan, P(class 1) per item in loader order)."""
    model.eval()
    losses, probs, n_lab = 0.0, [], 0
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, amp, amp_dtype):
                logits = model(x)
            logits = logits.float()
            y = y.to(logits.device)
            lab = y >= 0
            if lab.any():
                losses += float(F.cross_entropy(logits[lab], y[lab], reduction="sum"))
                n_lab += int(lab.sum())
            probs.append(torch.softmax(logits, 1)[:, 1].cpu().double())
    p = torch.cat(probs).numpy() if probs else np.zeros(0)
    return (losses / n_lab if n_lab else float("nan")), p


def train_step(model, opt, x, y, *, augment=None, amp=False, amp_dtype="bfloat16", channels_last=False, weight=None,
               scaler=None):
    """One optimisation step on batch (x, y); returns the loss as a detached 0-d tensor (no sync).

    x : float [N, 3, H, W] in [-1, 1] (moved to the model's device); y : int64 [N] classes.
    augment : None or dict of `augment_batch` keywords (seed, epoch, step, shift, zoom, rotation).
    amp : torch.autocast with `amp_dtype`; channels_last : convert x; weight : class weights of the
    cross-entropy; scaler : a torch.amp.GradScaler (float16) or None.
    """
    device = next(model.parameters()).device
    # A new step: CUDA graphs of a model compiled with mode='reduce-overhead' may now reuse the last
    # step's output memory. Graphs exist only once inductor loaded its graph trees; checking that
    # spares eager training the 2 s import.
    if "torch._inductor.cudagraph_trees" in sys.modules:
        torch.compiler.cudagraph_mark_step_begin()
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if augment is not None:
        x = augment_batch(x, **augment)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with _autocast(device, amp, amp_dtype):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y, weight=weight)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return loss.detach()


def train_classifier(train_items, valid_items, cfg=None):
    """Train the classifier; keep the epoch with the lowest validation loss.

    Parameters
    ----------
    train_items, valid_items : sequence of Item (root, name, label) or a dataset path
        Labelled images (labels 0/1). Validation uses the plain (unweighted) cross-entropy, no
        augmentation and no oversampling.
    cfg : TrainConfig

    Returns
    -------
    TrainResult
        `model` holds the best epoch's weights. With ``cfg.outdir``: ``checkpoint.pt`` (best epoch,
        rewritten atomically whenever the validation loss improves), ``history.csv`` (rewritten
        after every epoch) and ``training_curve.png``.
    """
    cfg = TrainConfig() if cfg is None else cfg
    _check_config(cfg)
    train_items = as_items(train_items, "train_items")
    valid_items = as_items(valid_items, "valid_items")
    for what, its in (("train_items", train_items), ("valid_items", valid_items)):
        bad = [it.name for it in its if it.label is None]
        if bad:
            raise ValueError(f"{what}: {len(bad)} unlabelled images, e.g. {bad[0]!r}")
    device = resolve_device(cfg.device)
    amp = device.type == "cuda" if cfg.amp is None else bool(cfg.amp)
    if amp and device.type == "cpu" and cfg.amp_dtype == "float16":
        raise ValueError("cfg.amp_dtype 'float16' needs CUDA; use 'bfloat16' for CPU autocast")
    channels_last = device.type == "cuda" if cfg.channels_last is None else bool(cfg.channels_last)
    labels = np.array([it.label for it in train_items])
    if cfg.class_weight == "balanced":
        counts = np.array([(labels == c).sum() for c in (0, 1)], float)
        weight = np.where(counts > 0, len(labels) / (2 * np.maximum(counts, 1)), 0.0)
    elif cfg.class_weight is not None:
        weight = np.array(cfg.class_weight, float)
    else:
        weight = None
    fit_items = _oversample(train_items, cfg.seed) if cfg.oversample else train_items

    torch.manual_seed(cfg.seed)
    model = make_classifier(cfg.arch, 2, cfg.weights, device=device, channels_last=channels_last)
    model.input_size = int(cfg.size)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=device.type == "cuda")
    fwd = _compiled(model, cfg.compile)   # shares the parameters with `model`
    scaler = torch.amp.GradScaler(device.type) if amp and cfg.amp_dtype == "float16" else None
    crit_w = None if weight is None else torch.tensor(weight, dtype=torch.float32, device=device)
    outdir = cfg.outdir
    ckpt = hist_csv = curve = None
    if outdir:
        os.makedirs(outdir, exist_ok=True)
        ckpt = os.path.join(outdir, "checkpoint.pt")
        hist_csv = os.path.join(outdir, "history.csv")
        curve = os.path.join(outdir, "training_curve.png")

    history, best, best_state, best_epoch, stale = [], math.inf, None, -1, 0
    with _cudnn_autotune(device.type == "cuda"), tempfile.TemporaryDirectory(prefix="retina_fast_classify_") as tmp:
        common = dict(backend=cfg.backend, batch_size=cfg.batch_size, resolution=cfg.size,
                      num_workers=cfg.workers, device=device.type if device.type == "cpu" else str(device))
        train_loader = make_loader(stage_items(fit_items, os.path.join(tmp, "train")), shuffle=True,
                                   seed=cfg.seed, **common)
        valid_loader = make_loader(stage_items(valid_items, os.path.join(tmp, "valid")), shuffle=False, **common)
        y_valid = np.array([it.label for it in valid_items])
        epochs = range(cfg.epochs)
        if cfg.progress:
            from tqdm import tqdm
            epochs = tqdm(epochs, desc="epochs", unit="epoch", leave=False)
        for epoch in epochs:
            model.train()
            train_loader.set_epoch(epoch)
            t0, total, n_seen = time.perf_counter(), 0.0, 0
            for step, (x, y) in enumerate(train_loader):
                aug = dict(seed=cfg.seed, epoch=epoch, step=step, shift=cfg.shift, zoom=cfg.zoom,
                           rotation=cfg.rotation) if cfg.augment else None
                # The compiled step keeps one static shape. The epoch's last, smaller batch runs
                # eagerly: compiling it would add a dynamic-batch graph (minutes for ResNet152 on a
                # GPU) that then serves the full batches too.
                step_model = fwd if x.shape[0] == cfg.batch_size else model
                loss = train_step(step_model, opt, x, y, augment=aug, amp=amp, amp_dtype=cfg.amp_dtype,
                                  channels_last=channels_last, weight=crit_w, scaler=scaler)
                total = total + loss * x.shape[0]   # stays on the device: no sync per step
                n_seen += x.shape[0]
            total = float(total)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            v_loss, p = _run_eval(model, valid_loader, device, amp, cfg.amp_dtype, channels_last)
            row = {"epoch": epoch, "train_loss": total / max(n_seen, 1), "valid_loss": v_loss,
                   "valid_accuracy": float(((p >= 0.5) == (y_valid == 1)).mean()),
                   "valid_auc": _valid_auc(y_valid, p), "train_images": n_seen,
                   "images_per_s": n_seen / seconds if seconds > 0 else float("nan"),
                   "seconds": seconds, "best": False}
            if v_loss < best:
                best, best_epoch, stale = v_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
                row["best"] = True
                if ckpt:
                    save_checkpoint(ckpt, model, size=cfg.size, config=cfg.as_dict(), epoch=epoch, valid_loss=v_loss)
            else:
                stale += 1
            history.append(row)
            if hist_csv:
                _write_history_csv(hist_csv, history)
            if cfg.patience is not None and stale >= cfg.patience:
                break
    if best_state is None:  # every validation loss was nan (cannot happen with labelled items)
        raise ValueError("validation loss was never finite; check valid_items")
    model.load_state_dict(best_state)
    model.eval()
    if curve:
        plot_history(history, curve, title=f"{cfg.arch} {cfg.size}px, best epoch {best_epoch + 1}")
    return TrainResult(best_epoch=best_epoch, history=history, checkpoint=ckpt, model=model,
                       history_csv=hist_csv, curve_png=curve)


def predict(model, items, *, size=None, batch_size=32, device=None, backend="auto", workers=None, amp=None,
            progress=False):
    """Probability of class 1 (ERM) for each item, in order.

    Parameters
    ----------
    model : ResNetClassifier (or a checkpoint path, loaded with `load_classifier`)
    items : sequence of Item / image file paths, or a dataset folder/zip / folder of images
    size : int, optional
        Input side in pixels; default ``model.input_size`` (set by training and loading).
    batch_size, backend, workers : loader settings (see `make_loader`; by default DALI on CUDA when
        installed, with `default_workers`).
    device : optional
        Default: the model's device.
    amp : None or bool
        bfloat16 autocast; None = on for CUDA.

    Returns
    -------
    numpy.ndarray float64 [n]
        Softmax probability of class 1.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_classifier(model, device or "auto")
    items = as_items(items, "items")
    if size is None:
        size = getattr(model, "input_size", None)
        if size is None:
            raise ValueError("size not given and the model has no input_size (train or load it first)")
    param = next(model.parameters())
    device = param.device if device is None else resolve_device(device)
    model = model.to(device)
    amp = device.type == "cuda" if amp is None else bool(amp)
    channels_last = model.conv1.weight.is_contiguous(memory_format=torch.channels_last) and device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="retina_fast_predict_") as tmp:
        loader = make_loader(stage_items(items, tmp), backend=backend, batch_size=batch_size, resolution=int(size),
                             num_workers=workers, device=device.type if device.type == "cpu" else str(device))
        if progress:
            from tqdm import tqdm
            loader_it = tqdm(loader, desc="predict", unit="batch", leave=False)
        else:
            loader_it = loader
        _, p = _run_eval(model, loader_it, device, amp, "bfloat16", channels_last)
    return p
