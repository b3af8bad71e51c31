"""Demo stage of `retina-fast demo`: train the tiny GAN on the prepared phantoms, then fine-tune on ERM.

On the CPU in minutes: preset '32' (32 x 32 pixels, tiny channel counts) on the prepared dataset,
an image grid of the result, the FID-vs-kimg curve against the training set, then the paper's
transfer learning (lr 1e-4, ADA kimg 100) on the ERM images. The FID uses the Inception-v3
architecture with RANDOM weights (no weights are ever downloaded; pass `inception` for a local
file): its values rank snapshots within the run but are not comparable with published FIDs, and
the CSV and plot say so.
"""
import os
import shutil

import numpy as np
import torch


def _erm_subset(dataset, out, min_images=8, seed=0):
    """A dataset folder of the ERM-labelled images of `dataset` (label 1), built under `out`.

    A small demo cohort may hold fewer ERM images than one minibatch: it is topped up to
    `min_images` with ERM phantoms rendered at the dataset's size (said on stdout). These stand in
    for real ERM photographs (training data), never for generated images."""
    from retina_fast.data.dataset import (
        DatasetReader,
        image_name,
        list_images,
        write_dataset_json,
        write_png,
    )
    from retina_fast.data.phantom import make_fundus

    listed = list_images(dataset)
    if not listed:
        raise ValueError(f"dataset {dataset!r} holds no images")
    with DatasetReader(dataset) as reader:
        images = [reader.read(n) for n, lab in listed if lab == 1]
        side = reader.read(listed[0][0]).shape[0]
    rendered = max(0, min_images - len(images))
    for i in range(rendered):
        images.append(make_fundus(seed + 20_000 + i, size=(side, side), disease="erm")[0])
    if rendered:
        print(f"ERM fine-tuning set: {len(images) - rendered} ERM images of the dataset + {rendered} rendered "
              f"ERM phantoms ({side} x {side})")
    names = []
    for i, image in enumerate(images):
        write_png(os.path.join(out, image_name(i)), image)
        names.append((image_name(i), 1))
    write_dataset_json(out, names)
    return out


def _sample_grid(checkpoint, path, n_cols=8, n_rows=4, device="cpu"):
    from .networks import Generator, z_from_seeds
    from .training import save_image_grid

    G = Generator.from_checkpoint(checkpoint, key="G_ema", device=device)
    with torch.no_grad():
        img = G(z_from_seeds(range(n_cols * n_rows), G.z_dim, device=device), None, noise_mode="const")
    return save_image_grid(img, path, (n_cols, n_rows))


def generate_stage(gan, checkpoint, erm_checkpoint, *, n_images, n_erm_images):
    """Generate the demo's synthetic images once, through `retina_fast.synthetic.SyntheticSource`.

    Every later stage of the demo (audits, vessels, Turing test, classifier study) reads these files:
    ``gan/generated/<source>/seed%06d.png`` of the trained generator (seeds 0..n_images-1) and of the
    ERM fine-tuned one (seeds 0..n_erm_images-1).

    Returns
    -------
    dict
        'generated', 'generated_erm': the two image folders.
    """
    from retina_fast.synthetic import SyntheticSource

    folders = {}
    for key, ckpt, n in (("generated", checkpoint, n_images), ("generated_erm", erm_checkpoint, n_erm_images)):
        source = SyntheticSource.from_arg(ckpt, num=n, name=key)
        folders[key] = os.path.dirname(source.resolve(os.path.join(gan, "generated"), device="cpu")[0])
        print(f"{key}: {n} images of {source.describe()} -> {folders[key]}")
    return folders


def demo_stage(out, dataset, erm_dataset=None, *, quick=False, device="cpu", inception=None, seed=0,
               n_generate=32, n_generate_erm=96):
    """Train preset '32' on `dataset`, fine-tune on `erm_dataset`, generate the demo's synthetic images.

    Parameters
    ----------
    out : path
        Demo folder; the runs go to ``out/gan/train`` and ``out/gan/erm``.
    dataset : path
        Prepared dataset (`retina-fast prepare` output, StyleGAN2-ADA layout) or folder of images.
    erm_dataset : path or None
        ERM images for the transfer learning; None: the ERM-labelled images of `dataset`.
    quick : bool
        Shorter runs (0.2 + 0.08 kimg instead of 1.2 + 0.4) and a smaller FID (resize 75, 32 images).
    device : 'cpu', 'cuda' or 'auto'
    inception : path or None
        Local Inception-v3 weights for the FID; None: random weights (stated in the CSV and plot).
    n_generate, n_generate_erm : int
        Images generated from the trained and the ERM fine-tuned generator (`generate_stage`); the
        audits, vessels and Turing stages read the former, the classifier study the latter.

    Returns
    -------
    dict of str
        'train_dir', 'snapshot' (last), 'best', 'samples' (grid PNG), 'fid_csv', 'fid_png',
        'erm_data', 'erm_dir', 'erm_snapshot', 'erm_best', 'erm_samples', 'erm_fid_csv', 'erm_fid_png',
        'generated', 'generated_erm' (image folders of `generate_stage`), 'realism' (the realism
        audit's realism.md), 'privacy' (the privacy audit's summary.md).
    """
    from retina_fast.metrics.inception import InceptionV3FID

    from .training import TrainConfig, extractor_label, finetune, train

    gan = os.path.join(os.fspath(out), "gan")
    train_dir, erm_dir = os.path.join(gan, "train"), os.path.join(gan, "erm")
    for d in (train_dir, erm_dir, os.path.join(gan, "generated")):
        if os.path.isdir(d):
            shutil.rmtree(d)   # a demo starts afresh; real runs resume with `train --resume`
    if inception is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inception = InceptionV3FID(resize=75 if quick else 299)
    kimg, erm_kimg = (0.2, 0.08) if quick else (1.2, 0.4)
    tick = 0.02 if quick else 0.1
    fid_images = 32 if quick else 128
    # An FID (with its 2048 x 2048 eigendecompositions) and a snapshot every 5 / 3 ticks.
    # KID and precision/recall come from the FID's own feature pass, at no extra network cost.
    common = {"batch": 4, "tick": tick, "snap": 5 if quick else 3, "fid_images": fid_images, "inception": inception,
              "seed": seed, "device": device, "workers": 0, "metrics": "fid,kid,pr", "realism_images": 16}
    print(f"Preset '32' (32 x 32 px) for {kimg} kimg on {dataset}, then ERM fine-tuning for {erm_kimg} kimg at lr 1e-4; "
          f"FID: {extractor_label(inception)}\n")
    res = train(TrainConfig(data=os.fspath(dataset), outdir=train_dir, preset="32", kimg=kimg, **common))
    samples = _sample_grid(res.best or res.last_snapshot, os.path.join(gan, "samples.png"), device="cpu")
    if erm_dataset is None:
        erm_dataset = _erm_subset(dataset, os.path.join(gan, "erm_dataset"), seed=seed)
    start = res.best or res.last_snapshot
    erm = finetune(start, os.fspath(erm_dataset), erm_dir, kimg=erm_kimg, **common)
    erm_samples = _sample_grid(erm.best or erm.last_snapshot, os.path.join(gan, "erm_samples.png"), device="cpu")
    paths = {"train_dir": train_dir, "snapshot": res.last_snapshot, "best": res.best, "samples": samples,
             "fid_csv": res.fid_csv, "fid_png": res.fid_png, "erm_data": os.fspath(erm_dataset), "erm_dir": erm_dir,
             "erm_snapshot": erm.last_snapshot, "erm_best": erm.best, "erm_samples": erm_samples,
             "erm_fid_csv": erm.fid_csv, "erm_fid_png": erm.fid_png}
    fids = np.array([f for _, f in res.fid_history]) if res.fid_history else np.array([])
    print(f"\ntrained {res.cur_nimg / 1000:.3f} kimg; FID (random-weight Inception unless given) "
          f"{fids[0]:.4g} -> {fids[-1]:.4g}, best {res.best_fid:.4g}; ADA p {res.augment_p:.3f}" if fids.size else "")
    if res.metric_history:
        kimg_last, last = res.metric_history[-1]
        print(f"at {kimg_last:.3f} kimg: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()))
    print(f"fine-tuned {erm.cur_nimg / 1000:.3f} kimg on {erm_dataset}; best FID {erm.best_fid:.4g}"
          if erm.best_fid is not None else "")
    paths.update(generate_stage(gan, start, erm.best or erm.last_snapshot, n_images=n_generate,
                                n_erm_images=n_generate_erm))
    from retina_fast.audit.realism import realism_report

    print("\nRealism audit: the trained generator's images against its training images "
          "(`retina-fast audit realism`; 32 px images upscaled to the checks' 512 px)\n")
    realism = realism_report(dataset, paths["generated"], os.path.join(gan, "realism"), resolution=32)
    print(realism.table)
    paths["realism"] = realism.files["markdown"]
    from retina_fast.audit.privacy import audit_privacy

    print("\nPrivacy audit: the trained generator's images against its training images "
          "(`retina-fast audit privacy`; no held-out set here, so no C_T)\n")
    privacy = audit_privacy(dataset, paths["generated"], os.path.join(gan, "privacy"), extractor=inception, k=3)
    print(privacy.table())
    paths["privacy"] = privacy.files["summary_md"]
    for k in ("samples", "fid_csv", "fid_png", "erm_samples", "erm_fid_png", "generated", "generated_erm", "realism",
              "privacy"):
        print(f"{k}: {paths[k]}")
    return paths
