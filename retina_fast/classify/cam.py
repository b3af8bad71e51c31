"""Grad-CAM heatmaps of the classifier (pytorch-grad-cam's `GradCAM`, the package the paper used).

Grad-CAM (Selvaraju et al. 2017): the target layer's activation maps A_k (the last convolutional block,
``layer4[-1]`` of a ResNet) are weighted by the spatial mean of d(logit of the target class)/dA_k,
summed over k, passed through a ReLU, bilinearly resized to the input size and min-max scaled to [0, 1]
per image. For a ResNet (global average pooling, then a linear head) this equals CAM:
ReLU(sum_k fc.weight[c, k] * A_k), up to the scaling.

Input convention as the rest of `retina_fast.classify` (see `model.py`): float tensors [N, 3, H, W],
RGB, ``x / 127.5 - 1``; heatmaps are (row, col) arrays on the input's pixel grid.
"""
import os

import numpy as np
import torch

__all__ = ["grad_cam", "overlay", "save_overlays", "default_target_layer"]


def default_target_layer(model):
    """The last convolutional block of a torchvision-style ResNet: ``model.layer4[-1]``.

    Raises
    ------
    ValueError
        When `model` has no ``layer4`` (then pass ``target_layer`` explicitly).
    """
    layer4 = getattr(model, "layer4", None)
    if not isinstance(layer4, torch.nn.Module):
        raise ValueError(f"{type(model).__name__} has no 'layer4' (not a torchvision ResNet): pass "
                         f"target_layer= (a module of the model, or its name as in model.named_modules())")
    return layer4[-1] if isinstance(layer4, torch.nn.Sequential) and len(layer4) else layer4


def _resolve_layer(model, target_layer):
    if target_layer is None:
        return default_target_layer(model)
    if isinstance(target_layer, str):
        names = dict(model.named_modules())
        if target_layer not in names:
            raise ValueError(f"target_layer {target_layer!r} is not a module name of {type(model).__name__} "
                             f"(see model.named_modules())")
        return names[target_layer]
    if not isinstance(target_layer, torch.nn.Module):
        raise TypeError(f"target_layer must be None, a module name or a torch.nn.Module, got "
                        f"{type(target_layer).__name__}")
    if not any(m is target_layer for m in model.modules()):
        raise ValueError(f"target_layer ({type(target_layer).__name__}) is not a module of the model")
    return target_layer


def grad_cam(model, image_tensor, target_class, target_layer=None, *, batch_size=8):
    """Grad-CAM heatmaps of `model` for `target_class`, at the input's size.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier returning logits [N, num_classes]. Run in eval mode here (its train/eval mode and the
        parameters' requires_grad flags are restored afterwards; parameter .grad fields are cleared).
    image_tensor : torch.Tensor [N, 3, H, W] (or [3, H, W])
        Model inputs (``x / 127.5 - 1``, see `model.py`); moved to the model's device.
    target_class : int or sequence of N ints
        Class whose logit is explained (1 = ERM), one for all images or one per image.
    target_layer : None, str or torch.nn.Module
        Layer whose activations are weighted; None = `default_target_layer` (``layer4[-1]``). Must
        output a 4-D [N, C, h, w] tensor.
    batch_size : int
        Images per forward/backward pass (memory bound: ResNet152 at 512 x 512 needs about 0.5 GB per
        image on CPU).

    Returns
    -------
    (N, H, W) float32 numpy array in [0, 1]
        One map per image, each scaled so that its maximum is 1 (all 0 where the class has no
        positive evidence anywhere).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(image_tensor, torch.Tensor):
        raise TypeError(f"image_tensor must be a torch.Tensor [N, 3, H, W], got {type(image_tensor).__name__}")
    x = image_tensor[None] if image_tensor.ndim == 3 else image_tensor
    if x.ndim != 4 or x.shape[0] < 1 or not x.is_floating_point():
        raise ValueError(f"image_tensor must be a float tensor [N, 3, H, W], got {x.dtype} {tuple(image_tensor.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("image_tensor contains NaN or infinite values")
    n = x.shape[0]
    classes = np.atleast_1d(np.asarray(target_class))
    if classes.dtype.kind not in "iu" or classes.ndim != 1:
        raise ValueError(f"target_class must be an int or a sequence of ints, got {target_class!r}")
    if classes.size == 1:
        classes = np.repeat(classes, n)
    if classes.size != n:
        raise ValueError(f"target_class has {classes.size} entries for {n} images")
    if (classes < 0).any():
        raise ValueError(f"target_class must be >= 0, got {int(classes.min())}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    layer = _resolve_layer(model, target_layer)
    params = list(model.parameters())
    device = params[0].device if params else x.device

    was_training = model.training
    flags = [p.requires_grad for p in params]
    out = np.empty((n, x.shape[2], x.shape[3]), np.float32)
    cam = GradCAM(model=model, target_layers=[layer])   # puts the model in eval mode
    try:
        # only activation gradients are needed: no weight gradients (less memory, and training state untouched)
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            for start in range(0, n, int(batch_size)):
                xb = x[start:start + int(batch_size)].detach().to(device).requires_grad_(True)
                cb = classes[start:start + xb.shape[0]]
                try:
                    heat = cam(input_tensor=xb, targets=[ClassifierOutputTarget(int(c)) for c in cb])
                except IndexError:
                    n_out = cam.outputs.shape[-1]
                    raise ValueError(f"target_class {int(cb.max())} out of range for a model with {n_out} "
                                     f"outputs") from None
                except ValueError as e:
                    raise ValueError(f"target_layer {type(layer).__name__} does not give 4-D [N, C, h, w] "
                                     f"activations usable by Grad-CAM: {e}") from None
                out[start:start + xb.shape[0]] = heat
    finally:
        cam.activations_and_grads.release()
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was_training)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _resize_bilinear(heat, shape):
    t = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay(image_uint8, heat, alpha=0.5):
    """Blend a heatmap, colour-mapped with matplotlib's 'jet', over an RGB image.

    Parameters
    ----------
    image_uint8 : (H, W, 3) uint8 RGB (or (H, W) grey, shown as grey RGB)
    heat : (h, w) float array in [0, 1]
        Resized bilinearly to (H, W) when its size differs (e.g. a 512 x 512 map over a 1024 x 1024
        image). Values outside [0, 1] are clipped.
    alpha : float in [0, 1]
        Weight of the colour map: ``out = (1 - alpha) * image + alpha * jet(heat)``.

    Returns
    -------
    (H, W, 3) uint8 RGB
    """
    from matplotlib import colormaps

    img = np.asarray(image_uint8)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"image_uint8 must be (H, W, 3) or (H, W) uint8, got {img.dtype} {img.shape}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    h = np.asarray(heat)
    if h.ndim != 2 or h.dtype.kind not in "fiub":
        raise ValueError(f"heat must be a 2-D numeric array, got {h.dtype} {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("heat contains NaN or infinite values")
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if h.shape != img.shape[:2]:
        h = _resize_bilinear(h, img.shape[:2])
    rgb = colormaps["jet"](np.clip(h, 0.0, 1.0).astype(np.float32), bytes=True)[..., :3]
    out = (1.0 - a) * img.astype(np.float32) + a * rgb.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_input(images):
    """(N, H, W, 3) uint8 -> float32 tensor [N, 3, H, W] in [-1, 1] (the convention of `model.py`)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def save_overlays(model, images, names, outdir, target_class=1, *, target_layer=None, alpha=0.5,
                  batch_size=8, preprocess=None):
    """Grad-CAM overlays of `images` written as PNGs ``outdir/<name>.png`` (atomic writes).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (see `grad_cam`).
    images : (N, H, W, 3) uint8 array or sequence of (H, W, 3) uint8 arrays of one size
        RGB images as fed to the model (after any resizing).
    names : sequence of N str
        File names, '.png' appended when missing; plain names (no folders), unique.
    outdir : str or os.PathLike
        Created when missing.
    target_class : int or sequence of N ints
        Class explained (1 = ERM).
    target_layer, batch_size
        As `grad_cam`.
    alpha : float
        Colour-map weight, as `overlay`.
    preprocess : None or callable
        Maps an (n, H, W, 3) uint8 batch to the model's input tensor; None: ``x / 127.5 - 1``.

    Returns
    -------
    list of str
        Written paths, in the order of `images`.
    """
    from retina_fast.data.dataset import write_png

    if isinstance(images, np.ndarray):
        imgs = images
    else:
        imgs = list(images)
        shapes = {np.asarray(im).shape for im in imgs}
        if len(shapes) > 1:
            raise ValueError(f"images must all have one size, got {sorted(shapes)}")
        imgs = np.stack([np.asarray(im) for im in imgs]) if imgs else np.zeros((0, 1, 1, 3), np.uint8)
    if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[3] != 3 or imgs.shape[0] < 1:
        raise ValueError(f"images must be N >= 1 (H, W, 3) uint8 RGB images, got {imgs.dtype} {imgs.shape}")
    names = [str(nm) for nm in names]
    if len(names) != imgs.shape[0]:
        raise ValueError(f"names has {len(names)} entries for {imgs.shape[0]} images")
    files = [nm if nm.lower().endswith(".png") else nm + ".png" for nm in names]
    for f in files:
        if os.path.basename(f) != f or f.startswith(".") or f in (".png",):
            raise ValueError(f"names must be plain file names without folders, got {f!r}")
    if len(set(files)) != len(files):
        raise ValueError("names must be unique")
    outdir = os.fspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    prep = _to_input if preprocess is None else preprocess
    classes = np.atleast_1d(np.asarray(target_class))
    if classes.size == 1:
        classes = np.repeat(classes, imgs.shape[0])
    if classes.size != imgs.shape[0]:
        raise ValueError(f"target_class has {classes.size} entries for {imgs.shape[0]} images")
    paths = []
    # preprocess and explain batch by batch so that a large set never needs all its tensors at once
    for start in range(0, imgs.shape[0], int(batch_size)):
        chunk = imgs[start:start + int(batch_size)]
        heat = grad_cam(model, prep(chunk), classes[start:start + chunk.shape[0]], target_layer,
                        batch_size=batch_size)
        for i in range(chunk.shape[0]):
            path = os.path.join(outdir, files[start + i])
            write_png(path, overlay(chunk[i], heat[i], alpha))
            paths.append(path)
    return paths
