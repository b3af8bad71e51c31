"""One source of synthetic images for every stage that reads them.

    src = SyntheticSource.from_arg("runs/erm/best.pt", num=60, class_idx=1, truncation_psi=0.7)
    paths = src.resolve("study_out/synthetic")   # generated once, reused by a rerun
    src = SyntheticSource.from_arg("generated/")  # a folder (or dataset .zip) of images

A source is a folder of images, a dataset (folder or ``.zip`` in StyleGAN2-ADA's layout), or a
generator checkpoint (a ``retina_fast.gan/1`` snapshot ``.pt`` or an NVlabs ``.pkl``) with the seeds,
class and truncation to draw. `resolve` turns it into image files once: a checkpoint's images go to
a cache folder named by the source's parameters (checkpoint name, size and time, seeds, class,
truncation, noise mode), one ``seed%06d.png`` per seed, each written to a temporary name and renamed, so a rerun
(or another stage) with the same source reuses them, and an interrupted one generates only the seeds
it had not yet written.

`classify study`, `turing create-study`, `audit realism|privacy`, `fid`/`metrics` and the demo
take their synthetic images through this module; it imports `retina_fast.gan` only when a
generator is asked for, so the stages that read images (metrics among them) do not depend on it.
"""
import hashlib
import json
import os
from dataclasses import dataclass, replace

from retina_fast.checks import check_int, check_number

__all__ = ["GENERATOR_SUFFIXES", "SyntheticSource"]

GENERATOR_SUFFIXES = (".pt", ".pkl", ".pth")
NOISE_MODES = ("const", "none")   # per-seed reproducible images only: a cache must not depend on the batch


@dataclass(frozen=True)
class SyntheticSource:
    """Synthetic images: a folder / dataset of images, or a generator checkpoint to sample.

    Attributes
    ----------
    path : str
        Absolute path of the folder, dataset ``.zip`` or checkpoint.
    kind : {'folder', 'zip', 'generator'}
    seeds : tuple of int or None
        Generator: the seeds drawn (one image each, in this order). Folder: None.
    class_idx : int or None
        Generator: class of a conditional generator (None: unconditional).
    truncation_psi : float
        Generator: truncation toward the mean latent (1 = none).
    noise_mode : {'const', 'none'}
        Generator: per-layer noise; both make each image a function of its seed alone.
    limit : int or None
        Folder: use only the first `limit` images in sorted order (None: all).
    """
    path: str
    kind: str
    seeds: tuple = None
    class_idx: int = None
    truncation_psi: float = 1.0
    noise_mode: str = "const"
    limit: int = None

    @classmethod
    def from_arg(cls, text_or_path, *, seeds=None, num=None, class_idx=None, truncation_psi=1.0,
                 noise_mode="const", name="synthetic"):
        """The source a command-line argument (or a path) names.

        Parameters
        ----------
        text_or_path : str, os.PathLike or SyntheticSource
            A folder of images, a dataset ``.zip``, or a generator checkpoint file (``.pt``, ``.pth``,
            ``.pkl``). A
            SyntheticSource is returned as it is.
        seeds : str, int or sequence of int, optional
            Generator: seeds, e.g. ``'0-99,200'`` (`retina_fast.gan.generate.parse_seeds`).
        num : int, optional
            Generator without `seeds`: seeds 0..num-1 (default 100). Generator parameters are
            ignored for a folder or dataset, whose images are all used (see `with_seeds`).
        class_idx : int, optional
            Generator: class of a conditional generator.
        truncation_psi : float
            Generator: truncation psi (finite; 1 = none).
        noise_mode : {'const', 'none'}
        name : str
            The argument's name in error messages (e.g. '--synthetic').

        Raises
        ------
        ValueError
            The path does not exist, or a parameter is out of range (one line naming `name`).
        """
        if isinstance(text_or_path, SyntheticSource):
            return text_or_path
        if text_or_path is None or not str(os.fspath(text_or_path)).strip():
            raise ValueError(f"{name}: give a folder of images, a dataset .zip or a generator checkpoint")
        path = os.path.abspath(os.fspath(text_or_path))
        if not os.path.exists(path):
            raise ValueError(f"{name} {os.fspath(text_or_path)!r}: no such folder or file (a folder of images, a "
                             f"dataset .zip or a generator checkpoint)")
        if os.path.isdir(path) or path.lower().endswith(".zip"):
            return cls(path, "folder" if os.path.isdir(path) else "zip")
        if not path.lower().endswith(GENERATOR_SUFFIXES):
            raise ValueError(f"{name} {os.fspath(text_or_path)!r}: not a folder, dataset .zip or generator "
                             f"checkpoint ({', '.join(GENERATOR_SUFFIXES)})")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"{name}: noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        psi = check_number(f"{name} truncation_psi", truncation_psi)
        class_idx = check_int(f"{name} class", class_idx, minimum=0, allow_none=True)
        num = check_int(f"{name} num", num, minimum=1, allow_none=True)
        if seeds is None:
            seeds = range(100 if num is None else num)
        elif num is not None:
            raise ValueError(f"{name}: give seeds or num, not both")
        from retina_fast.gan.generate import parse_seeds

        return cls(path, "generator", tuple(parse_seeds(seeds)), class_idx, float(psi), noise_mode)

    def __fspath__(self):
        return self.path

    @property
    def is_generator(self):
        """True for a checkpoint to sample, False for a folder or dataset of images."""
        return self.kind == "generator"

    def with_seeds(self, seeds):
        """The same generator with other seeds (a folder source: the first ``len(seeds)`` images)."""
        seeds = tuple(int(s) for s in seeds)
        if self.is_generator:
            return replace(self, seeds=seeds)
        return replace(self, limit=len(seeds))

    def cache_name(self):
        """Folder name of a generator's images: checkpoint stem, class, psi, noise mode and a short hash
        of those, the seeds and the checkpoint's path, size and modification time, so that the folder
        holds exactly this source's images (a rewritten checkpoint gets a new folder)."""
        if not self.is_generator:
            raise ValueError(f"synthetic {self.path!r} is a {self.kind} of images, not a generator")
        st = os.stat(self.path)
        key = json.dumps([self.path, st.st_size, st.st_mtime_ns, self.class_idx, self.truncation_psi,
                          self.noise_mode, self.seeds])
        stem = os.path.splitext(os.path.basename(self.path))[0]
        cls = "" if self.class_idx is None else f"-class{self.class_idx}"
        return f"{stem}{cls}-psi{self.truncation_psi:g}-{self.noise_mode}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"

    def root(self, cache_dir=None, name=None):
        """Folder the resolved images lie under: the folder itself, or ``cache_dir/name`` (default
        name: `cache_name` for a generator, the stem of a ``.zip``)."""
        if self.kind == "folder":
            return self.path
        if cache_dir is None:
            raise ValueError(f"synthetic {self.path!r}: a cache folder is needed to hold its images")
        if name is None:
            name = self.cache_name() if self.is_generator else os.path.splitext(os.path.basename(self.path))[0] + "-zip"
        return os.path.join(os.path.abspath(os.fspath(cache_dir)), name)

    def resolve(self, cache_dir=None, *, name=None, device="auto", progress=False):
        """The source's images as files: a list of paths (seed order, or sorted names for a folder).

        Parameters
        ----------
        cache_dir : path, optional
            Where a generator's images (and a dataset ``.zip``'s members) are written, in a subfolder
            `cache_name`; existing files of the same seed are reused. Not needed for a folder.
        name : str, optional
            The subfolder instead of `cache_name` (a caller that pins the source's parameters itself,
            as the classifier study's study.json does).
        device : str
            Generator: 'cpu', 'cuda' or 'auto'.
        progress : bool
            Generator: a tqdm bar over the seeds still to generate.

        Raises
        ------
        ValueError
            A folder or dataset without images, or fewer than `limit`.
        """
        from retina_fast.data.dataset import list_images

        root = self.root(cache_dir, name)
        if not self.is_generator:
            names = [n for n, _ in list_images(self.path)]
            if not names:
                raise ValueError(f"synthetic {self.path!r} holds no images")
            if self.limit is not None:
                if len(names) < self.limit:
                    raise ValueError(f"synthetic {self.path!r} holds {len(names)} images; {self.limit} are needed")
                names = names[:self.limit]
            if self.kind == "zip":
                self._extract(names, root)
            return [os.path.join(root, n) for n in names]
        paths = [os.path.join(root, f"seed{s:06d}.png") for s in self.seeds]
        missing = [s for s, p in zip(self.seeds, paths) if not os.path.isfile(p)]
        if missing:
            from retina_fast.gan.generate import generate_images

            generate_images(self.path, missing, root, truncation_psi=self.truncation_psi, noise_mode=self.noise_mode,
                            device=device, class_idx=self.class_idx, progress=progress)
        return paths

    def _extract(self, names, root):
        from retina_fast.data.dataset import DatasetReader
        from retina_fast.fileio import write_bytes_atomic

        with DatasetReader(self.path) as reader:
            for n in names:
                dst = os.path.join(root, n)
                if not os.path.isfile(dst):
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    write_bytes_atomic(dst, reader.read_bytes(n))

    def load_generator(self, device="cpu"):
        """The checkpoint's ``G_ema`` in eval mode (for metrics that sample on the fly)."""
        if not self.is_generator:
            raise ValueError(f"synthetic {self.path!r} is a {self.kind} of images, not a generator")
        from retina_fast.gan.networks import Generator

        return Generator.from_checkpoint(self.path, key="G_ema", device=device).eval()

    def describe(self):
        """One line for tables and logs, e.g. 'best.pt (seeds 0-59, class 1, psi 0.7)'."""
        if not self.is_generator:
            return self.path + ("" if self.limit is None else f" (first {self.limit} images)")
        s = self.seeds
        contiguous = len(s) > 1 and s == tuple(range(s[0], s[0] + len(s)))
        seeds = f"seeds {s[0]}-{s[-1]}" if contiguous else f"seeds {','.join(map(str, s[:5]))}" + (
            ",..." if len(s) > 5 else "")
        cls = "" if self.class_idx is None else f", class {self.class_idx}"
        return f"{self.path} ({seeds}{cls}, psi {self.truncation_psi:g})"
