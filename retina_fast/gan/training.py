"""StyleGAN2-ADA training and ERM fine-tuning (`retina-fast train`, `retina-fast finetune`).

    from retina_fast.gan.training import TrainConfig, train, finetune
    result = train(TrainConfig(data="prepared/dataset", outdir="runs/gan", preset="paper1024", batch=32))
    result = finetune("runs/gan/best.pt", "erm/dataset", "runs/erm")          # lr 1e-4, ADA kimg 100

The semantics are StyleGAN2-ADA's ``training_loop.py`` and ``loss.py`` (see `retina_fast.gan.loss`):
phases Gmain / Greg (every 4 minibatches) / Dmain / Dreg (every 16), Adam (betas (0, 0.99), eps 1e-8)
with the lazy-regularisation correction of lr and betas (``mb_ratio = k / (k + 1)``), G_ema with
``ema_kimg`` and ``ema_rampup``, ADA (the 'bgc' pipe, target 0.6, p adjusted every 4 minibatches by
``batch * 4 / (ada_kimg * 1000)``), style mixing 0.9, and gradients sanitised with
``nan_to_num`` before each optimiser step.

Outputs in ``outdir``: ``training_options.json``, ``reals.png``, ``fakes_init.png``, image grids
``fakes<kimg>.png``, snapshots ``snapshot-<kimg>kimg.pt`` (see `retina_fast.gan.snapshot`), ``best.pt``
(lowest FID), ``stats.jsonl`` (one JSON object per tick), TensorBoard events, ``fid.csv`` and
``fid.png`` (FID against the training set vs kimg).

Multi-GPU: launched by ``torchrun --nproc_per_node K`` (WORLD_SIZE > 1) each process trains on
``batch / K`` images per step and the gradients are averaged with one flat all_reduce per phase
(NCCL on CUDA, gloo on CPU), as StyleGAN3's loop; the same command runs single-process otherwise.

Resume: ``resume=`` a snapshot file or a run folder (its newest complete snapshot) restores G, D,
G_ema, both optimisers, ADA p and its pending statistics, the path-length mean, the counters, the
FID history, every process's RNG states (torch, CUDA, numpy, python) and the data loader's epoch
and position, so that in deterministic mode a killed-and-resumed run repeats the uninterrupted one
exactly (same world size and device). An NVlabs network pickle (``.pkl``, `retina_fast.gan.nvlabs`) or
its conversion holds weights only: ``resume=`` it starts from its G, D, G_ema and ADA p with fresh
optimisers and counters.
"""
import contextlib
import copy
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from retina_fast.checks import check_int, check_number
from retina_fast.device import resolve_device
from retina_fast.fileio import copy_atomic, write_text_atomic

from . import snapshot as snap
from .loss import StyleGAN2Loss

AUGMENT_MODES = ("ada", "noaug", "fixed")
LOADER_BACKENDS = ("torch", "dali")


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or infinite; the run was stopped (the last snapshot is kept)."""


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """Options of a training run (saved as ``training_options.json`` and in every snapshot).

    Parameters
    ----------
    data : path
        Training images: a dataset folder/.zip (`retina-fast prepare` output) or a folder of images;
        every image is resized to the generator's resolution by `retina_fast.data.loaders.make_loader`.
    outdir : path
        Run folder (created); snapshots, logs and images go directly into it.
    preset : key of `retina_fast.gan.networks.PRESETS`
        Architecture and defaults for batch, gamma, ema_kimg, ema_rampup.
    batch : int or None
        Total batch over all processes (None: the preset's ``batch``).
    batch_gpu : int or None
        Images per process per forward pass (None: batch / processes); smaller values accumulate
        gradients over rounds.
    kimg : float
        Length of training, thousands of real images shown to D.
    lr : float
        Adam learning rate of G and D before the lazy-regularisation correction (0.002; paper 0.001).
    gamma : float or None
        R1 weight (None: the preset's).
    augment : {'ada', 'noaug', 'fixed'}
        ADA with `p` as start value, no augmentation, or a fixed probability `p`.
    p : float
        Augmentation probability ('fixed') or its start ('ada').
    ada_target, ada_interval, ada_kimg : float, int, float
        ADA target of E[sign(D(real))], minibatches between adjustments, kimg for p to move by 1.
    augpipe : str
        Key of `retina_fast.gan.augment.AUGPIPE_SPECS` ('bgc').
    mirror : bool
        Random x-flips of the training images (dataset augmentation, StyleGAN2-ADA ``--mirror``).
    tick : float
        kimg between status lines (a "tick").
    snap : int
        Ticks between snapshots (0: only the final one); ``image_snap`` and ``fid_every`` (None:
        equal to `snap`, 0: never) likewise for image grids and FIDs. The last tick always
        writes a snapshot, a grid and (unless ``fid_every == 0``) an FID.
    fid_images : int
        Generated images per FID (StyleGAN2-ADA's fid50k_full uses 50000).
    fid_real_images : int or None
        Real images for the reference statistics (None: all).
    inception : path, torch module or None
        FID feature extractor: a local Inception-v3 file (`retina_fast.metrics.inception.load_inception`),
        any extractor module, or None for `InceptionV3FID` with RANDOM weights (the FID curve says so;
        its values are only comparable within the run).
    metrics : str or sequence of str
        Metrics at each FID tick, from the same feature pass (`retina_fast.metrics.evaluate`):
        'fid' (always computed: it picks best.pt), 'kid', 'pr' (precision, recall), 'dc' (density,
        coverage); e.g. ``"fid,kid,pr"``. The others go into ``fid.csv``/``fid.png`` beside FID.
    realism_every, realism_images : int or None, int or None
        Ticks between realism audits (None: with FID, 0: never) of `realism_images` (None:
        min(64, fid_images), at least 2) generated images (seeds 0..N-1) against as many training
        images (measured once, cached in ``fid-cache/``), by `retina_fast.audit.realism.RealismMonitor`;
        the share passing prepare's checks and the Cohen's d of vessel fraction and SNR go into
        ``fid.csv``/``fid.png`` (a d that cannot be measured is an empty cell).
    max_minutes : float or None
        Stop cleanly (final snapshot, grid, metrics) at the first tick after this many minutes of
        this process's run, even before `kimg`.
    resume : path or None
        Continue a run exactly from a snapshot file or a run folder's newest complete snapshot.
    init : path or None
        Start from a snapshot's G, D and G_ema weights with fresh optimisers and counters
        (transfer learning; `finetune` sets it).
    freeze_d : int
        Freeze the first N discriminator layers (Freeze-D).
    seed : int
        Global seed; process k of K uses ``seed * K + k``.
    deterministic : bool
        ``torch.use_deterministic_algorithms(True)`` (on CUDA with warn_only) and cudnn.benchmark off.
    impl : None, 'native' or 'ref'
        Op implementation of every layer (`retina_fast.ops`).
    device : 'auto', 'cpu', 'cuda' or 'cuda:k'
    workers : int
        Data loader worker processes (torch backend) / threads (dali).
    loader : {'torch', 'dali'}
        'dali' decodes on the GPU (CUDA only).
    tensorboard : bool
        Write TensorBoard event files.
    keep : int or None
        Keep only the newest `keep` snapshots (best.pt is separate); None keeps all.
    progress : bool
        tqdm bar over kimg on stderr.
    cond : bool
        Class-conditional training on the labels of ``dataset.json`` (0 normal, 1 ERM from
        `retina-fast prepare`), as StyleGAN2-ADA's ``--cond``: one-hot labels embedded in G's
        mapping network and a projection discriminator, ``c_dim = max label + 1``; generated labels
        are drawn from the training set's labels, so classes come in their dataset proportions. A
        resumed or fine-tuned conditional snapshot stays conditional whatever this says.
    """
    data: str
    outdir: str
    preset: str = "32"
    batch: int | None = None
    batch_gpu: int | None = None
    kimg: float = 25000.0
    lr: float = 0.002
    gamma: float | None = None
    augment: str = "ada"
    p: float = 0.0
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0
    augpipe: str = "bgc"
    mirror: bool = True
    tick: float = 4.0
    snap: int = 50
    image_snap: int | None = None
    fid_every: int | None = None
    fid_images: int = 50000
    fid_real_images: int | None = None
    realism_every: int | None = None
    realism_images: int | None = None
    max_minutes: float | None = None
    inception: Any = None
    metrics: Any = ("fid",)
    resume: str | None = None
    init: str | None = None
    freeze_d: int = 0
    seed: int = 0
    deterministic: bool = False
    impl: str | None = None
    device: str = "auto"
    workers: int = 3
    loader: str = "torch"
    tensorboard: bool = True
    keep: int | None = None
    progress: bool = True
    cond: bool = False
    # StyleGAN2-ADA constants, exposed for experiments:
    style_mixing: float = 0.9
    pl_weight: float = 2.0
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    G_reg_interval: int = 4
    D_reg_interval: int = 16
    ema_kimg: float | None = None
    ema_rampup: float | None = None   # None: the preset's; 0: no ramp-up
    allow_tf32: bool = False

    def as_dict(self):
        d = dataclasses.asdict(self)
        if d["inception"] is not None and not isinstance(d["inception"], (str, os.PathLike)):
            d["inception"] = f"<{type(self.inception).__name__}>"
        for k in ("data", "outdir", "resume", "init", "inception"):
            if d[k] is not None:
                d[k] = os.fspath(d[k])
        return d


def _check_config(cfg):
    """`cfg` checked (each bad option named), with numpy numbers made Python numbers."""
    from .networks import PRESETS

    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if cfg.preset not in PRESETS:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {cfg.preset!r}")
    if cfg.augment not in AUGMENT_MODES:
        raise ValueError(f"augment must be one of {AUGMENT_MODES}, got {cfg.augment!r}")
    if cfg.loader not in LOADER_BACKENDS:
        raise ValueError(f"loader must be one of {LOADER_BACKENDS}, got {cfg.loader!r}")
    checked = {name: check_number(name, getattr(cfg, name), minimum=0, min_open=True)
               for name in ("kimg", "lr", "tick", "ada_kimg")}
    checked.update((name, check_int(name, getattr(cfg, name), minimum=1, allow_none=True))
                   for name in ("batch", "batch_gpu", "keep"))
    checked.update((name, check_int(name, getattr(cfg, name), minimum=0))
                   for name in ("snap", "freeze_d", "seed", "workers", "G_reg_interval", "D_reg_interval",
                                "fid_images"))
    checked["ada_interval"] = check_int("ada_interval", cfg.ada_interval, minimum=1)
    checked.update((name, check_int(name, getattr(cfg, name), minimum=0, allow_none=True))
                   for name in ("image_snap", "fid_every", "fid_real_images", "realism_every"))
    checked["realism_images"] = check_int("realism_images", cfg.realism_images, minimum=2, allow_none=True)
    checked["max_minutes"] = check_number("max_minutes", cfg.max_minutes, minimum=0, min_open=True,
                                          allow_none=True)
    checked["p"] = check_number("p", cfg.p, minimum=0, maximum=1)
    checked["gamma"] = check_number("gamma", cfg.gamma, minimum=0, allow_none=True)
    if cfg.impl not in (None, "native", "ref"):
        raise ValueError(f"impl must be None, 'native' or 'ref', got {cfg.impl!r}")
    if not os.path.exists(os.fspath(cfg.data)):
        raise ValueError(f"data {os.fspath(cfg.data)!r} does not exist")
    for name in ("resume", "init"):
        v = getattr(cfg, name)
        if v is not None and not os.path.exists(os.fspath(v)):
            raise ValueError(f"{name} {os.fspath(v)!r} does not exist")
    if isinstance(cfg.inception, (str, os.PathLike)) and not os.path.isfile(os.fspath(cfg.inception)):
        raise ValueError(f"inception file {os.fspath(cfg.inception)!r} does not exist")
    from retina_fast.metrics.evaluate import parse_metrics
    parse_metrics(cfg.metrics, name="metrics")
    # Python numbers stay as given; numpy ones become Python's (training_options.json is JSON).
    numpy_numbers = {name: v for name, v in checked.items()
                     if getattr(cfg, name) is not None and not isinstance(getattr(cfg, name), (int, float))}
    return dataclasses.replace(cfg, **numpy_numbers) if numpy_numbers else cfg


# ---------------------------------------------------------------------------------------------
# One training iteration


def _flat_all_reduce_mean(params, world_size):
    """Average the gradients of `params` over processes with one all_reduce (StyleGAN3's loop)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p)
        offset += n


class Trainer:
    """One StyleGAN2-ADA iteration (every phase, G_ema, ADA) on one process; no data or files.

    Parameters
    ----------
    G, D : Generator, Discriminator
        Trained in place (moved to `device`); `G_ema` is a deep copy of G.
    batch : int
        Global batch (over all processes); this process handles ``batch // world_size``.
    batch_gpu : int or None
        Images per forward pass (None: the per-process batch).
    lr, gamma, ema_kimg, ema_rampup : float
        See `TrainConfig`; ``ema_rampup`` None or 0 for none.
    augment_pipe : AugmentPipe or None
    ada : AdaController or None
        Its `update` is called every `ada_interval` iterations.
    class_labels : sequence of int or None
        For a conditional G (``G.c_dim > 0``): the training set's labels, from which the labels of
        generated images are drawn uniformly (StyleGAN2-ADA's sampling, so classes come in their
        dataset proportions). Required when G is conditional.
    """

    def __init__(self, G, D, *, batch, batch_gpu=None, lr=0.002, gamma=10.0, ema_kimg=10.0, ema_rampup=None,
                 augment_pipe=None, ada=None, ada_interval=4, style_mixing=0.9, pl_weight=2.0,
                 pl_batch_shrink=2, pl_decay=0.01, G_reg_interval=4, D_reg_interval=16, device="cpu",
                 rank=0, world_size=1, class_labels=None):
        self.device = torch.device(device)
        self.c_dim = int(getattr(G, "c_dim", 0))
        self.class_labels = None
        if self.c_dim > 0:
            labels = torch.as_tensor(list(class_labels if class_labels is not None else []), dtype=torch.int64)
            if labels.numel() == 0 or int(labels.min()) < 0 or int(labels.max()) >= self.c_dim:
                raise ValueError(f"G is conditional (c_dim={self.c_dim}): class_labels must be the training "
                                 f"set's labels in [0, {self.c_dim - 1}]")
            self.class_labels = labels
        self.rank, self.world_size = int(rank), int(world_size)
        if batch % world_size:
            raise ValueError(f"batch {batch} is not divisible by the number of processes {world_size}")
        self.batch = int(batch)
        self.batch_local = self.batch // self.world_size
        self.batch_gpu = self.batch_local if batch_gpu is None else int(batch_gpu)
        if self.batch_local % self.batch_gpu:
            raise ValueError(f"batch_gpu {self.batch_gpu} does not divide the per-process batch {self.batch_local}")
        self.G = G.train().requires_grad_(False).to(self.device)
        self.D = D.train().requires_grad_(False).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.augment_pipe = augment_pipe
        self.ada, self.ada_interval = ada, int(ada_interval)
        self.ema_kimg = float(ema_kimg)
        self.ema_rampup = ema_rampup if ema_rampup else None
        self.loss = StyleGAN2Loss(self.G, self.D, augment_pipe, r1_gamma=gamma, style_mixing_prob=style_mixing,
                                  pl_weight=pl_weight, pl_batch_shrink=pl_batch_shrink, pl_decay=pl_decay,
                                  ada=ada)
        self.G_params = list(self.G.parameters())
        self.D_params = list(self.D.parameters())   # Freeze-D layers are buffers, not parameters
        self.phases = []
        self.opts = {}
        for name, params, reg_interval in (("G", self.G_params, G_reg_interval), ("D", self.D_params, D_reg_interval)):
            if reg_interval:
                mb_ratio = reg_interval / (reg_interval + 1)
            else:
                mb_ratio = 1.0
            opt = torch.optim.Adam(params, lr=lr * mb_ratio, betas=(0 ** mb_ratio, 0.99 ** mb_ratio), eps=1e-8)
            self.opts[name] = opt
            if reg_interval:
                self.phases += [(name + "main", params, opt, 1), (name + "reg", params, opt, int(reg_interval))]
            else:
                self.phases += [(name + "both", params, opt, 1)]
        self.lr = float(lr)
        self.reg_intervals = {"G": G_reg_interval, "D": D_reg_interval}
        self.cur_nimg = 0
        self.batch_idx = 0

    def set_lr(self, lr):
        """Set the learning rate (with the lazy-regularisation correction) and betas of both optimisers."""
        self.lr = float(lr)
        for name, opt in self.opts.items():
            k = self.reg_intervals[name]
            mb_ratio = k / (k + 1) if k else 1.0
            for group in opt.param_groups:
                group["lr"] = self.lr * mb_ratio
                group["betas"] = (0 ** mb_ratio, 0.99 ** mb_ratio)

    def one_hot(self, labels):
        """float32 one-hot [N, c_dim] on the device for int labels [N] (None for an unconditional G)."""
        if self.c_dim == 0:
            return None
        labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.c_dim):
            raise ValueError(f"labels must be in [0, {self.c_dim - 1}] for this conditional G; got "
                             f"{sorted(set(labels.tolist()))}")
        return torch.nn.functional.one_hot(labels, self.c_dim).to(torch.float32)

    def step(self, real_img, real_labels=None):
        """One iteration on this process's real images [batch_local, C, R, R] in [-1, 1].

        For a conditional G, `real_labels` are the images' int labels [batch_local]; the generated
        images' labels are drawn from `class_labels` (global torch RNG, after the latents).

        Returns a dict name -> scalar tensor (detached, on the device) of the losses computed in
        this iteration (see `StyleGAN2Loss.accumulate_gradients`), plus 'ada_rt' when ADA updated.
        """
        if real_img.shape[0] != self.batch_local:
            raise ValueError(f"real_img has {real_img.shape[0]} images, expected {self.batch_local}")
        real_img = real_img.to(self.device, torch.float32)
        rounds = real_img.split(self.batch_gpu)
        all_z = torch.randn([len(self.phases) * self.batch_local, self.G.z_dim], device=self.device)
        all_z = [z.split(self.batch_gpu) for z in all_z.split(self.batch_local)]
        real_cs, all_c = [None] * len(rounds), [[None] * len(rounds)] * len(self.phases)
        if self.c_dim > 0:
            if real_labels is None:
                raise ValueError(f"G is conditional (c_dim={self.c_dim}): pass real_labels")
            real_cs = self.one_hot(real_labels).split(self.batch_gpu)
            pick = torch.randint(len(self.class_labels), [len(self.phases) * self.batch_local])
            all_c = [c.split(self.batch_gpu) for c in self.one_hot(self.class_labels[pick]).split(self.batch_local)]
        terms = {}
        for (name, params, opt, interval), phase_z, phase_c in zip(self.phases, all_z, all_c):
            if self.batch_idx % interval != 0:
                continue
            opt.zero_grad(set_to_none=True)
            for p in params:
                p.requires_grad_(True)
            for real, real_c, z, c in zip(rounds, real_cs, phase_z, phase_c):
                out = self.loss.accumulate_gradients(name, real, real_c, z, c, gain=interval)
                for k, v in out.items():
                    terms.setdefault(k, []).append(v)
            for p in params:
                p.requires_grad_(False)
            if self.world_size > 1:
                _flat_all_reduce_mean(params, self.world_size)
            for p in params:
                if p.grad is not None:
                    torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
            opt.step()

        with torch.no_grad():
            ema_nimg = self.ema_kimg * 1000
            if self.ema_rampup is not None:
                ema_nimg = min(ema_nimg, self.cur_nimg * self.ema_rampup)
            ema_beta = 0.5 ** (self.batch / max(ema_nimg, 1e-8))
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.lerp(p_ema, ema_beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

        self.cur_nimg += self.batch
        self.batch_idx += 1
        result = {k: torch.cat(v).mean() for k, v in terms.items()}
        if self.ada is not None and self.batch_idx % self.ada_interval == 0:
            rt = self.ada.update()
            if rt is not None:
                result["ada_rt"] = torch.tensor(rt, dtype=torch.float64)
        return result

    @property
    def augment_p(self):
        return float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0

    def state_dict(self):
        """Networks, optimisers, counters and loss state (this process's ADA/loss sums included)."""
        cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}
        return {"G": cpu(self.G.state_dict()), "D": cpu(self.D.state_dict()), "G_ema": cpu(self.G_ema.state_dict()),
                "opt_G": _opt_state_cpu(self.opts["G"]), "opt_D": _opt_state_cpu(self.opts["D"]),
                "augment_p": self.augment_p, "cur_nimg": int(self.cur_nimg), "batch_idx": int(self.batch_idx)}

    def load_networks(self, data):
        self.G.load_state_dict(data["G"])
        self.D.load_state_dict(data["D"])
        self.G_ema.load_state_dict(data["G_ema"])

    def load_state_dict(self, data):
        self.load_networks(data)
        self.opts["G"].load_state_dict(data["opt_G"])
        self.opts["D"].load_state_dict(data["opt_D"])
        self.cur_nimg = int(data["cur_nimg"])
        self.batch_idx = int(data["batch_idx"])
        if self.augment_pipe is not None:
            with torch.no_grad():
                self.augment_pipe.p.fill_(float(data["augment_p"]))


def _opt_state_cpu(opt):
    sd = opt.state_dict()
    state = {k: {n: (t.detach().cpu().clone() if isinstance(t, torch.Tensor) else t) for n, t in v.items()}
             for k, v in sd["state"].items()}
    groups = [dict(g, betas=list(g["betas"])) if "betas" in g else dict(g) for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------------------------
# Helpers of the loop


@contextlib.contextmanager
def _preserve_rng(device):
    """Run maintenance (grids, FID, loader start) without moving any global RNG stream."""
    import random
    py = random.getstate()
    npst = np.random.get_state()
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npst)


class _Batches:
    """Endless batches from a loader with a resumable (epoch, position) cursor."""

    def __init__(self, loader, device, epoch=0, position=0):
        self.loader, self.device = loader, device
        self.epoch, self.position = int(epoch), int(position)
        self._it = None

    def next(self):
        while True:
            if self._it is None:
                self.loader.set_epoch(self.epoch)
                # The loader's iterator is created at its first batch and draws a base seed from the
                # global torch RNG: keep that off the training's random streams.
                with _preserve_rng(self.device):
                    self._it = iter(self.loader)
                    # Resuming mid-epoch: the skipped batches are decoded and dropped.
                    for _ in range(self.position):
                        next(self._it)
                    batch = next(self._it, None)
            else:
                batch = next(self._it, None)
            if batch is None:
                self._it = None
                self.epoch, self.position = self.epoch + 1, 0
                continue
            self.position += 1
            return batch

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position}


def _grid_shape(resolution):
    return int(np.clip(3840 // resolution, 4, 16)), int(np.clip(2160 // resolution, 2, 9))


def save_image_grid(images, path, grid):
    """Tile float images [N, C, H, W] in [-1, 1] into a (cols, rows) grid PNG (atomic write)."""
    from retina_fast.data.dataset import write_png

    gw, gh = grid
    x = (images.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    n, c, h, w = x.shape
    if n < gw * gh:
        x = torch.cat([x, torch.zeros([gw * gh - n, c, h, w], dtype=torch.uint8)])
    x = x[:gw * gh].reshape(gh, gw, c, h, w).permute(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)
    a = x.numpy()
    if c == 1:
        a = a[:, :, 0]
    write_png(path, np.ascontiguousarray(a))
    return path


def _generate_grid(G_ema, grid, batch, device):
    """The grid's images (fixed seeds); a conditional G shows class ``row % c_dim`` on each row."""
    from .networks import z_from_seeds

    n = grid[0] * grid[1]
    z = z_from_seeds(range(n), G_ema.z_dim, device=device)
    c = [None] * len(z.split(batch))
    if G_ema.c_dim > 0:
        rows = (torch.arange(n, device=device) // grid[0]) % G_ema.c_dim
        c = torch.nn.functional.one_hot(rows, G_ema.c_dim).to(torch.float32).split(batch)
    with torch.no_grad():
        return torch.cat([G_ema(zz, cc, noise_mode="const").cpu() for zz, cc in zip(z.split(batch), c)])


def write_fid_curve(history, csv_path, png_path, extractor_label, metric_history=None):
    """Write the FID-vs-kimg curve as CSV (kimg, fid, extractor) and a PNG plot (atomic writes).

    `metric_history` ([kimg, {column: value}] per evaluation, e.g. kid, precision, recall) adds
    columns between fid and extractor (empty where a point lacks one) and panels to the plot.
    """
    from retina_fast.metrics.evaluate import METRICS
    from retina_fast.report.plots import pyplot, save_figure

    by_nimg = {round(k * 1000): v for k, v in (metric_history or [])}
    present = set().union(*by_nimg.values()) if by_nimg else set()
    extra = [c for cols in METRICS.values() for c in cols if c in present and c != "fid"]
    realism = ["realism_pass", "realism_vessel_d", "realism_snr_d"]  # all three, or none: a NaN d is left empty
    realism = realism if present & set(realism) else []
    extra += realism
    fids = {round(k * 1000): f for k, f in history}
    header = ",".join(["kimg", "fid", *extra, "extractor"])
    # a realism audit may fall on a tick without FID: its row has an empty fid
    lines = [header] + [",".join([f"{n / 1000:.3f}", f"{fids[n]:.6f}" if n in fids else "",
                                  *(f"{by_nimg.get(n, {})[c]:.6g}" if c in by_nimg.get(n, {}) else ""
                                    for c in extra),
                                  json.dumps(extractor_label)]) for n in sorted(set(fids) | set(by_nimg))]
    write_text_atomic(csv_path, "\n".join(lines) + "\n")
    plt = pyplot()
    panels = [["kid"]] if "kid" in extra else []
    fractions = [c for c in extra if c != "kid" and c not in realism]
    panels += [fractions] if fractions else []
    panels += [realism] if realism else []
    # A run that audits realism without FIDs (fid_every=0) gets no empty FID panel.
    show_fid = bool(history) or not panels
    fig, axes = plt.subplots(1, int(show_fid) + len(panels), figsize=(6 * show_fid + 5 * len(panels), 4), dpi=100,
                             squeeze=False)
    for pax, cols in zip(axes[0, int(show_fid):], panels):
        for c in cols:
            pts = sorted((n / 1000, v[c]) for n, v in by_nimg.items() if c in v)
            if pts:  # a realism d may have no measurable point yet
                pax.plot(*zip(*pts), "o-", label=c)
        pax.set_xlabel("kimg")
        pax.set_ylabel("KID vs training set" if cols == ["kid"] else
                       "realism: share passing, Cohen's d" if cols == realism else "vs training set")
        pax.legend()
    if show_fid:
        ax = axes[0, 0]
        if history:
            k, f = zip(*history)
            ax.plot(k, f, "o-")
            best = int(np.argmin(f))
            ax.plot([k[best]], [f[best]], "r*", ms=12, label=f"best {f[best]:.2f} at {k[best]:.3f} kimg")
            ax.legend()
        ax.set_xlabel("kimg")
        ax.set_ylabel("FID vs training set")
        ax.set_title(f"FID curve ({extractor_label})", fontsize=8)
    fig.tight_layout()
    save_figure(fig, png_path, dpi=100)
    return csv_path, png_path


RANDOM_LABEL = "InceptionV3FID RANDOM weights, resize {}: FID only comparable within this run"


def extractor_label(inception):
    """How the FID curve names its feature extractor (random weights are said so)."""
    from retina_fast.metrics.inception import InceptionV3FID

    if inception is None:
        return RANDOM_LABEL.format(299) + " (no --inception file)"
    if isinstance(inception, (str, os.PathLike)):
        return f"Inception-v3 {os.path.basename(os.fspath(inception))}"
    if isinstance(inception, InceptionV3FID) and inception.weights_id is None:
        return RANDOM_LABEL.format(inception.resize)
    return type(inception).__name__


def _make_extractor(inception, device):
    """(extractor, label) for the FID: a local Inception file, a given module, or random weights."""
    from retina_fast.metrics.inception import InceptionV3FID, load_inception

    if inception is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = InceptionV3FID()
    elif isinstance(inception, (str, os.PathLike)):
        net = load_inception(os.fspath(inception), device=device)
    else:
        net = inception
    return net, extractor_label(inception)


def _image_size(source):
    from retina_fast.data.dataset import read_image
    from retina_fast.data.loaders import list_source
    return read_image(source, list_source(source)[0][0]).shape[:2]


def _real_stats(cfg, extractor, resolution, batch, device, cache_dir, keep_features=False):
    """Reference statistics of the training set at the generator's resolution (with its features
    for KID and precision/recall when `keep_features`)."""
    from retina_fast.data.loaders import make_loader
    from retina_fast.metrics.fid import compute_stats, dataset_stats

    if _image_size(cfg.data) == (resolution, resolution):
        return dataset_stats(cfg.data, extractor, max_items=cfg.fid_real_images, batch_size=batch,
                             device=device, cache_dir=cache_dir, keep_features=keep_features)
    # Stored at another size: measure the images as G learns them (the loader's resize, no flips).
    loader = make_loader(cfg.data, batch_size=batch, resolution=resolution, device="cpu")
    batches = (((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8) for x, _ in loader)
    return compute_stats(batches, extractor, device=device, max_items=cfg.fid_real_images,
                         keep_features=keep_features)


def _distributed_env():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return world, rank, local


def _process_device(device, local_rank, world):
    """`resolve_device`, then one GPU per process: 'cuda' means GPU `local_rank` under DDP."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    return dev


def _fmt_time(s):
    s = int(s)
    return f"{s // 3600}h {s // 60 % 60:02d}m {s % 60:02d}s" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class TrainResult:
    """What a run wrote and where it ended."""
    outdir: str
    cur_nimg: int
    snapshots: list = field(default_factory=list)
    last_snapshot: str | None = None
    best: str | None = None
    best_fid: float | None = None
    fid_history: list = field(default_factory=list)
    metric_history: list = field(default_factory=list)
    fid_csv: str | None = None
    fid_png: str | None = None
    grids: list = field(default_factory=list)
    stats: str | None = None
    augment_p: float = 0.0
    trainer: Any = None
    rank: int = 0


def class_labels_for(data, c_dim=None, *, name="data"):
    """The labels of a dataset for conditional training, checked: list of int, one per image.

    Parameters
    ----------
    data : path
        Dataset folder or .zip whose ``dataset.json`` labels every image.
    c_dim : int or None
        The network's label dimensionality, when it is fixed already (resume, fine-tuning):
        every label must be below it. None: at least two classes must be present.
    name : str
        Argument name used in error messages.

    Raises
    ------
    ValueError
        No labels, an unlabelled image, a single class, or a label the network cannot take.
    """
    from retina_fast.data.dataset import list_images

    items = list_images(data)
    unlabelled = [n for n, lab in items if lab is None]
    if not items or len(unlabelled) == len(items):
        raise ValueError(f"conditional training (--cond) needs class labels: {name} {os.fspath(data)!r} has no "
                         "dataset.json labels (a `retina-fast prepare` dataset has them)")
    if unlabelled:
        raise ValueError(f"conditional training (--cond): {len(unlabelled)} image(s) of {name} "
                         f"{os.fspath(data)!r} have no label, e.g. {unlabelled[0]}")
    labels = [lab for _, lab in items]
    if c_dim is None and len(set(labels)) < 2:
        raise ValueError(f"conditional training (--cond) needs at least two classes; {name} "
                         f"{os.fspath(data)!r} has only class {labels[0]}")
    if c_dim is not None and max(labels) >= c_dim:
        raise ValueError(f"{name} {os.fspath(data)!r} has label {max(labels)}, but the network takes "
                         f"c_dim={c_dim} classes")
    return labels


def _build_networks(cfg, source, batch_gpu, c_dim=0):
    """(G, D) for the run: from a snapshot's kwargs (resume/init) or from the preset."""
    from .networks import PRESETS, Discriminator, Generator, make_networks

    if source is not None:
        g_kw = dict(source["G_kwargs"], impl=cfg.impl)
        d_kw = dict(source["D_kwargs"], impl=cfg.impl)
    else:
        mbstd = min(PRESETS[cfg.preset]["mbstd_group"], batch_gpu)
        G, D = make_networks(cfg.preset, c_dim=c_dim, impl=cfg.impl, mbstd_group=mbstd)
        g_kw, d_kw = dict(G.init_kwargs), dict(D.init_kwargs)
    if cfg.freeze_d:
        d_kw["block_kwargs"] = dict(d_kw.get("block_kwargs") or {}, freeze_layers=int(cfg.freeze_d))
    if d_kw.get("mbstd_group_size") and batch_gpu % min(d_kw["mbstd_group_size"], batch_gpu):
        raise ValueError(f"batch_gpu {batch_gpu} is not divisible by the minibatch-std group "
                         f"{d_kw['mbstd_group_size']}")
    return Generator(**g_kw), Discriminator(**d_kw)


def train(cfg):
    """Train (or resume, or fine-tune) a StyleGAN2-ADA generator; see the module docstring.

    Returns
    -------
    TrainResult
        Paths written and the final state (``trainer`` holds G, D, G_ema on this process).

    Raises
    ------
    ValueError
        Bad configuration (the option is named), unreadable data or snapshot.
    NonFiniteLossError
        A loss became NaN/inf: the message names the loss and the kimg; snapshots already
        written (the last good one included) are kept.
    """
    cfg = _check_config(cfg)
    world, rank, local_rank = _distributed_env()
    device = _process_device(cfg.device, local_rank, world)
    if cfg.loader == "dali" and device.type != "cuda":
        raise ValueError("loader='dali' is for CUDA devices; use loader='torch' on the CPU")
    own_pg = False
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        own_pg = True
    saved_flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                   torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                   torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        else:
            torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = cfg.allow_tf32
        torch.backends.cudnn.allow_tf32 = cfg.allow_tf32
        return _train(cfg, device, rank, world)
    finally:
        torch.use_deterministic_algorithms(saved_flags[0], warn_only=saved_flags[1])
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
         torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved_flags[2:]
        if own_pg:
            torch.distributed.destroy_process_group()


def _train(cfg, device, rank, world):
    """The run on this process, step by step (StyleGAN2-ADA's ``training_loop`` order)."""
    start_time = time.time()
    seed = _seed_process(cfg.seed, rank, world)
    sources = _read_sources(cfg)
    hp = _resolve_hyperparameters(cfg, sources.resume, world)
    class_labels, c_dim = _resolve_classes(cfg, sources)
    hp["cond"] = c_dim > 0
    trainer, loader, ada = _build_trainer(cfg, hp, sources, class_labels, c_dim, seed, device, rank, world)
    run = _Run(cfg=cfg, device=device, rank=rank, world=world, hp=hp, sources=sources, trainer=trainer,
               ada=ada, batches=_Batches(loader, device), class_labels=class_labels, start_time=start_time)
    _restore(run, loader)
    if world > 1:
        _broadcast_networks(trainer)
    _open_outputs(run)
    if sources.resume is not None and trainer.cur_nimg >= run.total_nimg:
        if rank == 0:
            print(f"{sources.resume_path} is at {trainer.cur_nimg / 1000:.3f} kimg, already >= kimg {cfg.kimg}: "
                  "nothing to do")
        run.close_outputs()
        run.result.last_snapshot = sources.resume_path
        return run.result
    try:
        _training_loop(run)
    finally:
        run.close_outputs()
    return _final_result(run)


# ---------------------------------------------------------------------------------------------
# Steps of the run, in order


@dataclass
class _Sources:
    """Where a run starts: a snapshot to continue exactly (`resume`), weights to start from
    (`init`: a snapshot or an NVlabs pickle, fresh optimisers and counters), or neither."""
    resume_path: str | None = None
    resume: dict | None = None
    init_path: str | None = None
    init: dict | None = None

    @property
    def networks(self):
        """The snapshot whose networks the run takes (resume, else init), or None."""
        return self.resume if self.resume is not None else self.init


@dataclass
class _Run:
    """What the steps of one run share: its setup, counters, histories and open outputs."""
    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    hp: dict                # the resolved options (training_options.json, snapshots' ``config``)
    sources: _Sources
    trainer: Trainer
    ada: Any
    batches: _Batches
    class_labels: list | None
    start_time: float
    cur_tick: int = 0
    fid_history: list = field(default_factory=list)     # [kimg, fid]
    metric_history: list = field(default_factory=list)  # [kimg, {column: value}] of the metrics beside FID
    best_fid: float | None = None
    outdir: str = ""
    result: TrainResult | None = None
    grid: tuple = (0, 0)
    image_snap: int = 0
    fid_every: int = 0
    realism_every: int = 0
    extra_metrics: tuple = ()
    total_nimg: int = 0
    realism: Any = None     # retina_fast.audit.realism.RealismMonitor, made at the first audit
    extractor: Any = None
    fid_label: str | None = None
    real_stats: Any = None  # the training set's FID statistics, measured at the first FID
    stats_jsonl: Any = None
    tb: Any = None
    bar: Any = None
    tick_start_nimg: int = 0
    tick_start_time: float = 0.0
    maintenance_time: float = 0.0
    tick_steps: list = field(default_factory=list)  # (cur_nimg, losses) of each step of this tick

    def log(self, line):
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line)

    def close_outputs(self):
        for handle in (self.bar, self.stats_jsonl, self.tb):
            if handle is not None:
                handle.close()


def _seed_process(seed, rank, world):
    """Seed every global RNG of this process with ``seed * world + rank``; returns that seed."""
    import random

    seed = seed * world + rank
    np.random.seed(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    return seed


def _read_sources(cfg):
    """Read ``cfg.resume`` / ``cfg.init`` (an outdir that holds a run needs ``resume``)."""
    from .nvlabs import is_network_pickle, read_snapshot

    resume_path, resume = (None, None)
    init_path = cfg.init
    if cfg.resume is not None and not is_network_pickle(cfg.resume):
        resume_path, resume = snap.resolve_resume(cfg.resume)
        if "opt_G" not in resume:   # converted from an NVlabs pickle: weights only, as below
            init_path, resume_path, resume = resume_path, None, None
    elif cfg.resume is not None:
        # An NVlabs pickle holds G, D, G_ema and ADA p only: start from them with fresh optimisers
        # and counters (as NVlabs' own --resume).
        init_path = cfg.resume
    if resume is None and os.path.isdir(os.fspath(cfg.outdir)) and snap.list_snapshots(os.fspath(cfg.outdir)):
        raise ValueError(f"outdir {os.fspath(cfg.outdir)!r} already holds snapshots of a run: pass resume= (--resume) "
                         "to continue it, or choose another outdir")
    init = read_snapshot(init_path) if (init_path is not None and resume is None) else None
    return _Sources(resume_path, resume, init_path, init)


def _resolve_hyperparameters(cfg, resume, world):
    """The run's options (``cfg.as_dict()`` completed): explicit options, else the resumed run's,
    else the preset's; with ``batch_gpu`` and ``world_size``."""
    from .networks import PRESETS

    prev = (resume or {}).get("config", {})
    preset = prev.get("preset", cfg.preset) if resume is not None else cfg.preset
    spec = PRESETS[preset]
    batch = cfg.batch or prev.get("batch") or spec["batch"]
    gamma = cfg.gamma if cfg.gamma is not None else prev.get("gamma", spec["gamma"])
    ema_kimg = cfg.ema_kimg if cfg.ema_kimg is not None else prev.get("ema_kimg", spec["ema_kimg"])
    ema_rampup = cfg.ema_rampup if cfg.ema_rampup is not None else prev.get("ema_rampup", spec["ema_rampup"])
    if batch % world:
        raise ValueError(f"batch {batch} is not divisible by the number of processes {world}")
    batch_gpu = cfg.batch_gpu or batch // world
    return dict(cfg.as_dict(), preset=preset, batch=batch, batch_gpu=batch_gpu, gamma=gamma,
                ema_kimg=ema_kimg, ema_rampup=ema_rampup, world_size=world)


def _resolve_classes(cfg, sources):
    """(class_labels or None, c_dim): a snapshot's networks decide; a fresh run follows ``cfg.cond``."""
    source = sources.networks
    source_c_dim = int((source or {}).get("G_kwargs", {}).get("c_dim", 0) or 0)
    if source is not None and cfg.cond and source_c_dim == 0:
        raise ValueError(f"cond: {cfg.resume or cfg.init} holds an unconditional generator; conditional training "
                         "must start from scratch or from a conditional snapshot")
    class_labels = None
    if source_c_dim or cfg.cond:
        class_labels = class_labels_for(cfg.data, source_c_dim or None)
    return class_labels, source_c_dim or (max(class_labels) + 1 if class_labels else 0)


def _make_augment(cfg, batch, device):
    """(AugmentPipe, AdaController) for ``cfg.augment``: (None, None) for 'noaug', no controller
    for 'fixed'."""
    if cfg.augment == "noaug":
        return None, None
    from .augment import AUGPIPE_SPECS, AdaController, AugmentPipe

    if cfg.augpipe not in AUGPIPE_SPECS:
        raise ValueError(f"augpipe must be one of {list(AUGPIPE_SPECS)}, got {cfg.augpipe!r}")
    augment_pipe = AugmentPipe(**AUGPIPE_SPECS[cfg.augpipe]).train().requires_grad_(False).to(device)
    augment_pipe.p.fill_(float(cfg.p))
    ada = None
    if cfg.augment == "ada":
        ada = AdaController(augment_pipe, target=cfg.ada_target, interval=cfg.ada_interval, kimg=cfg.ada_kimg,
                            batch_size=batch)
    return augment_pipe, ada


def _build_trainer(cfg, hp, sources, class_labels, c_dim, seed, device, rank, world):
    """(Trainer, data loader, AdaController or None): networks, data and augmentation of the run."""
    from retina_fast.data.loaders import check_images, make_loader

    batch, batch_gpu = hp["batch"], hp["batch_gpu"]
    G, D = _build_networks(cfg, sources.networks, batch_gpu, c_dim=c_dim)
    loader = make_loader(cfg.data, backend=cfg.loader, batch_size=batch // world, resolution=G.img_resolution,
                         xflip=cfg.mirror, shuffle=True, seed=seed, drop_last=True, num_workers=cfg.workers,
                         device=device)
    if len(loader) == 0:
        raise ValueError(f"data {cfg.data!r} has {len(loader.names)} images, fewer than the per-process "
                         f"batch {batch // world}")
    check_images(cfg.data)   # a truncated image stops the run here, before it has written anything
    augment_pipe, ada = _make_augment(cfg, batch, device)
    trainer = Trainer(G, D, batch=batch, batch_gpu=batch_gpu, lr=cfg.lr, gamma=hp["gamma"], ema_kimg=hp["ema_kimg"],
                      ema_rampup=hp["ema_rampup"], augment_pipe=augment_pipe, ada=ada, ada_interval=cfg.ada_interval,
                      style_mixing=cfg.style_mixing, pl_weight=cfg.pl_weight, pl_batch_shrink=cfg.pl_batch_shrink,
                      pl_decay=cfg.pl_decay, G_reg_interval=cfg.G_reg_interval, D_reg_interval=cfg.D_reg_interval,
                      device=device, rank=rank, world_size=world, class_labels=class_labels)
    return trainer, loader, ada


def _restore(run, loader):
    """Continue the resumed snapshot exactly (state, counters, histories, loader, RNG streams), or
    start from the init snapshot's weights."""
    trainer, ada, resume, init = run.trainer, run.ada, run.sources.resume, run.sources.init
    if resume is not None:
        trainer.load_state_dict(resume)
        trainer.set_lr(run.cfg.lr)
        run.cur_tick = int(resume["cur_tick"])
        run.fid_history = [list(x) for x in resume.get("fid_history", [])]
        run.metric_history = [list(x) for x in resume.get("metric_history", [])]
        run.best_fid = resume.get("best_fid")
        run.batches = _Batches(loader, run.device, **resume["loader"])
        ranks = resume["rng"].get("ranks", [])
        if len(ranks) == run.world:
            mine = ranks[run.rank]
            snap.set_rng_state(mine["rng"])
            trainer.loss.load_state_dict(mine["loss"])
            if ada is not None and mine.get("ada") is not None:
                ada.load_state_dict(mine["ada"])
        else:
            if run.rank == 0:
                print(f"warning: {run.sources.resume_path} was written by {len(ranks)} process(es), this run has "
                      f"{run.world}: RNG streams are reseeded, so the continuation is not bit-identical",
                      file=sys.stderr)
            if ada is not None and resume.get("ada_stats"):
                ada.load_state_dict(dict(resume["ada_stats"][0], sum=0.0, count=0.0))
    elif init is not None:
        trainer.load_networks(init)
        if ada is not None and init.get("nvlabs"):
            # NVlabs' augment_pipe.p travels with its weights: ADA goes on from it.
            trainer.augment_pipe.p.fill_(float(init["augment_p"]))


def _broadcast_networks(trainer):
    """Every process starts from rank 0's G, D and G_ema."""
    for t in [*trainer.G.parameters(), *trainer.G.buffers(), *trainer.D.parameters(), *trainer.D.buffers(),
              *trainer.G_ema.parameters(), *trainer.G_ema.buffers()]:
        torch.distributed.broadcast(t.data, src=0)


def _open_outputs(run):
    """Settle the output schedule and, on rank 0, open the outputs: options, stats, TensorBoard,
    the FID curve of a resumed run, the first grids, the progress bar and the start line."""
    from retina_fast.data.loaders import make_loader
    from retina_fast.metrics.evaluate import parse_metrics

    cfg, trainer, device, resume = run.cfg, run.trainer, run.device, run.sources.resume
    run.outdir = outdir = os.path.abspath(os.fspath(cfg.outdir))
    run.result = result = TrainResult(outdir=outdir, cur_nimg=trainer.cur_nimg, fid_history=run.fid_history,
                                      best_fid=run.best_fid, metric_history=run.metric_history, trainer=trainer,
                                      rank=run.rank)
    run.grid = _grid_shape(trainer.G.img_resolution)
    run.image_snap = cfg.snap if cfg.image_snap is None else cfg.image_snap
    run.fid_every = cfg.snap if cfg.fid_every is None else cfg.fid_every
    run.realism_every = run.fid_every if cfg.realism_every is None else cfg.realism_every
    run.extra_metrics = tuple(m for m in parse_metrics(cfg.metrics) if m != "fid")
    run.total_nimg = round(cfg.kimg * 1000)
    if run.rank != 0:
        return
    # The Inception file is read before anything is written, so a bad one leaves no outputs.
    if run.fid_every:
        run.extractor, run.fid_label = _make_extractor(cfg.inception, device)
    os.makedirs(outdir, exist_ok=True)
    write_text_atomic(os.path.join(outdir, "training_options.json"), json.dumps(run.hp, indent=2) + "\n")
    stats_path = os.path.join(outdir, "stats.jsonl")
    _truncate_stats(stats_path, trainer.cur_nimg if resume is not None else -1)
    run.stats_jsonl = open(stats_path, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)
    result.stats = stats_path
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        # A resumed run hides the interrupted run's points past its snapshot; the snapshot's
        # own tick (step cur_nimg) was logged before it was written, and stays.
        run.tb = SummaryWriter(outdir, purge_step=trainer.cur_nimg + 1 if resume is not None else None)
    if run.fid_every or run.realism_every:
        result.fid_csv, result.fid_png = os.path.join(outdir, "fid.csv"), os.path.join(outdir, "fid.png")
    if resume is not None and run.fid_history:
        # Points past the resumed snapshot (from the interrupted run) are dropped; if the run died
        # between writing its newest snapshot and copying it to best.pt, finish that copy.
        write_fid_curve(run.fid_history, os.path.join(outdir, "fid.csv"), os.path.join(outdir, "fid.png"),
                        extractor_label(cfg.inception), run.metric_history)
        if round(run.fid_history[-1][0] * 1000) == trainer.cur_nimg and run.fid_history[-1][1] == run.best_fid:
            result.best = copy_atomic(run.sources.resume_path, os.path.join(outdir, "best.pt"))
    if resume is None:
        with _preserve_rng(device):
            reals = make_loader(cfg.data, batch_size=run.grid[0] * run.grid[1], resolution=trainer.G.img_resolution)
            save_image_grid(next(iter(reals))[0], os.path.join(outdir, "reals.png"), run.grid)
            result.grids.append(save_image_grid(_generate_grid(trainer.G_ema, run.grid, run.hp["batch_gpu"], device),
                                                os.path.join(outdir, "fakes_init.png"), run.grid))
    if cfg.progress:
        from tqdm import tqdm
        run.bar = tqdm(total=run.total_nimg / 1000, initial=min(trainer.cur_nimg, run.total_nimg) / 1000, unit="kimg",
                       desc="train", file=sys.stderr, dynamic_ncols=True,
                       bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} kimg [{elapsed}<{remaining}, {rate_fmt}]")
    print(_start_line(run), file=sys.stderr)


def _start_line(run):
    """What the run starts from and with which options (the stderr line before the first step)."""
    cfg, hp, sources = run.cfg, run.hp, run.sources
    if sources.resume is not None:
        start = f"Resuming from {sources.resume_path}"
    elif sources.init is not None:
        start = f"Fine-tuning from {sources.init_path}" + (
            " (NVlabs weights and ADA p; optimiser states start fresh)" if sources.init.get("nvlabs") else "")
    else:
        start = "Training"
    return (f"{start}: preset {hp['preset']}, {run.trainer.G.img_resolution}px, batch {hp['batch']} "
            f"({run.world} process(es) x {hp['batch'] // run.world}), kimg {cfg.kimg}, lr {cfg.lr}, "
            f"gamma {hp['gamma']}, augment {cfg.augment}, device {run.device}, impl {cfg.impl or 'auto'}")


def _training_loop(run):
    """Train until ``kimg`` (or ``max_minutes``), with maintenance at the end of every tick."""
    cfg, trainer = run.cfg, run.trainer
    run.tick_start_nimg, run.tick_start_time = trainer.cur_nimg, time.time()
    run.maintenance_time = run.tick_start_time - run.start_time
    run.tick_steps = []
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    while True:
        images, labels = run.batches.next()
        losses = trainer.step(images, labels if trainer.c_dim else None)
        run.tick_steps.append((trainer.cur_nimg, losses))
        if run.bar is not None:
            run.bar.update(min(trainer.cur_nimg, run.total_nimg) / 1000 - run.bar.n)
        done = trainer.cur_nimg >= run.total_nimg or (
            cfg.max_minutes is not None and time.time() - run.start_time >= 60 * cfg.max_minutes)
        if not done and run.cur_tick != 0 and trainer.cur_nimg < run.tick_start_nimg + cfg.tick * 1000:
            continue
        _tick_maintenance(run, done)
        if done:
            return


def _tick_maintenance(run, done):
    """End of a tick: check the losses, log the tick, and write what is due (grid, FID, realism,
    snapshot) without moving the training's RNG streams."""
    cfg, trainer, rank, cur_tick = run.cfg, run.trainer, run.rank, run.cur_tick
    tick_end_time = time.time()
    _check_finite(run.tick_steps, rank, run.world, run.device, run.result.last_snapshot or _newest(run.outdir))
    means = _tick_means(run.tick_steps, run.world, run.device)
    run.tick_steps = []
    fields = _tick_fields(run, means, tick_end_time)
    if rank == 0:
        run.log(_status_line(fields, means))
    grid_due = run.image_snap and (done or cur_tick % run.image_snap == 0)
    fid_due = run.fid_every and (done or cur_tick % run.fid_every == 0)
    realism_due = run.realism_every and (done or cur_tick % run.realism_every == 0)
    # An FID tick also writes a snapshot, so best.pt is always one of the run's snapshots and
    # a resumed run's best FID matches the files on disk.
    snap_due = done or fid_due or (cfg.snap and cur_tick % cfg.snap == 0)
    if snap_due or fid_due:
        # Captured before any maintenance work, which runs with the RNG streams forked.
        rank_state = {"rng": snap.rng_state(), "loss": trainer.loss.state_dict(),
                      "ada": run.ada.state_dict() if run.ada is not None else None}
    with _preserve_rng(run.device):
        if rank == 0 and grid_due:
            run.result.grids.append(save_image_grid(
                _generate_grid(trainer.G_ema, run.grid, run.hp["batch_gpu"], run.device),
                os.path.join(run.outdir, f"fakes{trainer.cur_nimg / 1000:010.3f}kimg.png"), run.grid))
        improved = False
        if rank == 0 and fid_due:
            improved = _evaluate_fid(run, fields)
        if rank == 0 and realism_due:
            _audit_realism(run, fields)
        fields["timestamp"] = time.time()
        if rank == 0:
            _write_tick_logs(run, fields)
        if snap_due or fid_due:
            _write_snapshot(run, rank_state, snap_due, best=fid_due and improved)
    run.cur_tick += 1
    run.tick_start_nimg = trainer.cur_nimg
    run.tick_start_time = time.time()
    run.maintenance_time = run.tick_start_time - tick_end_time


def _tick_fields(run, means, tick_end_time):
    """The tick's stats.jsonl record: timing, memory, ADA p, mean losses."""
    trainer, nimg = run.trainer, run.trainer.cur_nimg
    dt = tick_end_time - run.tick_start_time
    n_tick = max(nimg - run.tick_start_nimg, 1)
    fields = {"tick": run.cur_tick, "kimg": nimg / 1000, "nimg": nimg,
              "total_sec": tick_end_time - run.start_time, "sec_per_tick": dt,
              "sec_per_kimg": dt / n_tick * 1000, "images_per_sec": n_tick / max(dt, 1e-9),
              "maintenance_sec": run.maintenance_time, "augment_p": trainer.augment_p}
    if run.device.type == "cuda":
        fields["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(run.device) / 2 ** 30
        torch.cuda.reset_peak_memory_stats(run.device)
    try:
        import resource
        fields["peak_cpu_mem_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    except ImportError:
        pass
    fields.update({f"Loss/{k}": v for k, v in means.items()})
    return fields


def _status_line(fields, means):
    """The tick's line on stdout."""
    parts = [f"tick {fields['tick']:<5d}", f"kimg {fields['kimg']:<8.3f}",
             f"time {_fmt_time(fields['total_sec']):<12s}", f"sec/tick {fields['sec_per_tick']:<7.1f}", f"sec/kimg {fields['sec_per_kimg']:<7.2f}",
             f"img/s {fields['images_per_sec']:<7.1f}"]
    if "peak_gpu_mem_gb" in fields:
        parts.append(f"gpumem {fields['peak_gpu_mem_gb']:<6.2f}")
    parts.append(f"augment {fields['augment_p']:.3f}")
    for k in ("G_loss", "D_loss", "r1_penalty", "pl_penalty"):
        if k in means:
            parts.append(f"{k} {means[k]:.4f}")
    return " ".join(parts)


def _evaluate_fid(run, fields):
    """FID (and ``cfg.metrics``) of G_ema against the training set, into the histories, `fields`
    and the FID curve; True when it is the run's best FID."""
    from retina_fast.metrics.fid import fid as fid_value
    from retina_fast.metrics.fid import generator_stats

    cfg, kimg, batch_gpu, keep = run.cfg, run.trainer.cur_nimg / 1000, run.hp["batch_gpu"], bool(run.extra_metrics)
    if run.real_stats is None:
        run.real_stats = _real_stats(cfg, run.extractor, run.trainer.G.img_resolution, batch_gpu, run.device,
                                     os.path.join(run.outdir, "fid-cache"), keep)
    gen_stats = generator_stats(run.trainer.G_ema, run.extractor, num_images=cfg.fid_images,
                                class_labels=run.class_labels, batch_size=batch_gpu, device=run.device,
                                keep_features=keep)
    value = float(fid_value(run.real_stats, gen_stats))
    run.fid_history.append([kimg, value])
    improved = run.best_fid is None or value < run.best_fid
    if improved:
        run.best_fid = value
    fields["Metrics/fid"] = value
    extra_line = ""
    if run.extra_metrics:
        from retina_fast.metrics.evaluate import evaluate_metrics
        extra = evaluate_metrics(run.real_stats, gen_stats, run.extra_metrics, device=run.device)
        run.metric_history.append([kimg, extra])
        fields.update({f"Metrics/{k}": v for k, v in extra.items()})
        extra_line = "".join(f", {k} {v:.4g}" for k, v in extra.items())
    write_fid_curve(run.fid_history, run.result.fid_csv, run.result.fid_png, run.fid_label, run.metric_history)
    run.log(f"FID {value:.4f} at kimg {kimg:.3f}{' (best)' if improved else ''}{extra_line}")
    return improved


def _audit_realism(run, fields):
    """Realism audit of G_ema (`retina_fast.audit.realism`) into the metric history, `fields` and
    the FID curve."""
    from retina_fast.audit.realism import RealismMonitor, add_metric_point

    cfg, kimg = run.cfg, run.trainer.cur_nimg / 1000
    if run.realism is None:
        n = cfg.realism_images or max(2, min(64, cfg.fid_images))
        run.realism = RealismMonitor(cfg.data, run.trainer.G.img_resolution, num_images=n,
                                     cache=os.path.join(run.outdir, "fid-cache", "realism-real.csv"))
    headline = run.realism(run.trainer.G_ema, device=run.device, batch_size=run.hp["batch_gpu"]).headline
    values = add_metric_point(run.metric_history, kimg, headline)
    fields.update({f"Metrics/{k}": v for k, v in values.items()})
    write_fid_curve(run.fid_history, run.result.fid_csv, run.result.fid_png, run.fid_label or "",
                    run.metric_history)
    run.log("realism at kimg {:.3f}: pass {:.2f}, vessel d {:.2f}, SNR d {:.2f}".format(kimg, *headline.values()))


def _write_tick_logs(run, fields):
    """The tick's stats.jsonl line and TensorBoard scalars (rank 0).

    The tick's logs go out before its snapshot: a run killed between the two resumes from the
    previous snapshot, which drops them (stats lines truncated, TensorBoard purged) and writes them
    again. The other order would lose them.
    """
    run.stats_jsonl.write(json.dumps(fields) + "\n")
    run.stats_jsonl.flush()
    if run.tb is not None:
        for k, v in fields.items():
            if k not in ("tick", "nimg", "timestamp"):
                run.tb.add_scalar(k, v, global_step=fields["nimg"], walltime=fields["timestamp"])
        run.tb.flush()


def _write_snapshot(run, rank_state, snap_due, best):
    """Gather every process's RNG/loss/ADA state; rank 0 writes the snapshot (when `snap_due`),
    prunes old ones and copies it to best.pt (when `best`)."""
    trainer, world = run.trainer, run.world
    ranks = _gather(rank_state, world)
    if run.rank != 0:
        return
    data = dict(trainer.state_dict(), format=snap.FORMAT, G_kwargs=trainer.G.init_kwargs,
                D_kwargs=trainer.D.init_kwargs, cur_tick=run.cur_tick + 1,
                ada_stats=[r["ada"] for r in ranks] if run.ada is not None else None,
                loader=run.batches.state_dict(), rng={"world_size": world, "ranks": ranks},
                config=run.hp, fid_history=run.fid_history, best_fid=run.best_fid,
                metric_history=run.metric_history)
    written = None
    if snap_due:
        written = snap.save_snapshot(os.path.join(run.outdir, snap.snapshot_name(trainer.cur_nimg)), data)
        run.result.snapshots.append(written)
        run.result.last_snapshot = written
        _prune(run.outdir, run.cfg.keep)
    if best:
        run.result.best = copy_atomic(written, os.path.join(run.outdir, "best.pt"))


def _final_result(run):
    """The TrainResult of a finished run."""
    result = run.result
    result.cur_nimg = run.trainer.cur_nimg
    result.fid_history, result.best_fid = run.fid_history, run.best_fid
    result.metric_history = run.metric_history
    result.augment_p = run.trainer.augment_p
    if result.best is None and run.rank == 0 and os.path.exists(os.path.join(run.outdir, "best.pt")):
        result.best = os.path.join(run.outdir, "best.pt")
    return result


def _gather(obj, world):
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def _newest(outdir):
    found = snap.list_snapshots(outdir) if os.path.isdir(outdir) else []
    return found[-1] if found else None


def _prune(outdir, keep):
    if keep:
        for p in snap.list_snapshots(outdir)[:-keep]:
            os.remove(p)


def _truncate_stats(path, nimg):
    """Drop stats lines past `nimg` (written by a run that died after its last snapshot)."""
    if not os.path.exists(path):
        return
    if nimg < 0:
        os.remove(path)
        return
    keep = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                if json.loads(line)["nimg"] <= nimg:
                    keep.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError):
                continue   # a torn last line
    write_text_atomic(path, "".join(keep))


def _tick_means(tick_steps, world=1, device=None):
    """Mean of each loss over the tick's steps (and over processes: the same keys on every one)."""
    acc = {}
    for _, losses in tick_steps:
        for k, v in losses.items():
            acc.setdefault(k, []).append(v.detach().double().reshape(1).cpu())
    keys = sorted(acc)
    means = torch.stack([torch.cat(acc[k]).mean() for k in keys]) if keys else torch.zeros(0, dtype=torch.float64)
    if world > 1 and keys:
        means = means.to(device if device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(means)
        means = (means / world).cpu()
    return {k: float(v) for k, v in zip(keys, means)}


def _check_finite(tick_steps, rank, world, device, last_good):
    """Raise NonFiniteLossError naming the first non-finite loss of the tick (on every process)."""
    bad = None
    for nimg, losses in tick_steps:
        for k, v in losses.items():
            if k != "ada_rt" and not bool(torch.isfinite(v).all()):
                bad = (nimg, k, float(v))
                break
        if bad:
            break
    if world > 1:
        flag = torch.tensor([0 if bad is None else 1], device=device if device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and bad is None:
            raise NonFiniteLossError(f"training stopped: another process (rank != {rank}) met a non-finite loss; "
                                     f"the last good snapshot is {last_good}")
    if bad is not None:
        nimg, name, value = bad
        raise NonFiniteLossError(
            f"training stopped: loss '{name}' is {value} at kimg {nimg / 1000:.3f} (rank {rank}); "
            f"no snapshot was written after it, the last good snapshot is {last_good}. "
            "Try a lower --lr or a higher --gamma, or check the data.")


# ---------------------------------------------------------------------------------------------
# Transfer learning


def finetune(snapshot, data, outdir, *, lr=1e-4, ada_kimg=100.0, freeze_d=0, augment="ada", resume=None, **kwargs):
    """Fine-tune a trained snapshot on new images (the paper's ERM transfer learning).

    Starts from the snapshot's G, D and G_ema weights (architecture from the snapshot; an NVlabs
    ``.pkl`` also gives its ADA p as the start of ADA) with fresh optimisers at ``lr`` (paper:
    1e-4), ADA on with ``ada_kimg`` 100 (StyleGAN2-ADA's value when resuming) and optional
    Freeze-D of the first `freeze_d` D layers. Other keyword arguments go to `TrainConfig`
    (kimg, batch, snap, inception, ...). ``resume`` continues an interrupted fine-tuning run (a
    snapshot of it, or its folder) exactly as `train` resumes.

    Returns
    -------
    TrainResult
    """
    if snapshot is None or not os.path.isfile(os.fspath(snapshot)):
        raise ValueError(f"snapshot {snapshot!r} is not a file")
    from .nvlabs import read_snapshot
    src = read_snapshot(snapshot)   # ours, or an NVlabs .pkl (weights and ADA p)
    preset = (src.get("config") or {}).get("preset", kwargs.pop("preset", "32"))
    kwargs.pop("preset", None)
    cfg = TrainConfig(data=data, outdir=outdir, preset=preset, init=os.fspath(snapshot), lr=lr, ada_kimg=ada_kimg,
                      freeze_d=freeze_d, augment=augment, resume=resume, **kwargs)
    return train(cfg)
