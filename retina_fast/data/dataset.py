"""Prepared image sets on disk, in StyleGAN2-ADA's `dataset_tool` layout.

    DATASET/00000/img00000000.png ... (1000 images per folder)
    DATASET/dataset.json = {"labels": [["00000/img00000000.png", 0], ...]}   (or "labels": null)

or the same names inside a .zip. Labels are integer classes (0 = normal, 1 = ERM). Images are
(H, W, 3) uint8 RGB PNGs written without text chunks (no metadata to leak).

`list_images` lists a dataset; `DatasetReader` reads its images (encoded bytes or RGB arrays), keeping
a zip open across reads; `read_image` reads one image.
"""
import io
import json
import os
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

# write_text_atomic lives in retina_fast.fileio; it stays importable from here for the callers that
# take it with the dataset helpers.
from retina_fast.fileio import atomic_write, write_bytes_atomic, write_text_atomic  # noqa: F401

IMAGES_PER_FOLDER = 1000
# What `list_images` lists in a folder without dataset.json.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABELS = {"normal": 0, "erm": 1}


def image_name(index):
    """Relative name of image number `index`: '00000/img00000000.png' (1000 per folder)."""
    if int(index) < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    index = int(index)
    return f"{index // IMAGES_PER_FOLDER:05d}/img{index:08d}.png"


def label_code(label):
    """Integer class of a label: 'normal'/'erm' (any case), an int, or None/'' for unlabelled."""
    if label is None or (isinstance(label, str) and label.strip() == ""):
        return None
    if isinstance(label, (int, np.integer)):
        return int(label)
    key = str(label).strip().lower()
    if key.isdigit():
        return int(key)
    if key not in LABELS:
        raise ValueError(f"label must be one of {sorted(LABELS)} or an integer, got {label!r}")
    return LABELS[key]


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(image, compress_level=1):
    """PNG bytes of an (H, W, 3) uint8 RGB or (H, W) uint8 grey array: IHDR, IDAT, IEND only.

    Every row uses PNG's 'Up' filter (difference to the row above; a numpy subtraction), then deflate:
    level 0 stores, 1 (default) is Huffman coding only (zlib's Z_HUFFMAN_ONLY), 2-9 are zlib's levels
    with its default strategy. After the Up filter a fundus photograph's residuals are small and rarely
    repeat, so LZ77 matching buys little: measured on a 1024 x 1024 phantom, level 1 took 18 ms for
    1.13 MB, zlib level 1 with matching 28 ms for 1.25 MB, Pillow's compress_level=1 (which tries all
    five filters on every row) 60 ms for 1.05 MB. No text or time chunks are written.
    """
    a = np.asarray(image)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"image must be (H, W, 3) or (H, W) uint8, got {a.dtype} {a.shape}")
    level = int(compress_level)
    if not 0 <= level <= 9:
        raise ValueError(f"compress_level must be 0..9, got {compress_level}")
    h, w = a.shape[:2]
    rows = a.reshape(h, -1)
    filtered = np.empty((h, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2  # filter type 'Up'
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 wrap-around is PNG's modulo 256
    strategy = zlib.Z_HUFFMAN_ONLY if level == 1 else zlib.Z_DEFAULT_STRATEGY
    comp = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    idat = comp.compress(memoryview(filtered).cast("B")) + comp.flush()
    colour_type = 2 if a.ndim == 3 else 0
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def write_png(path, image, compress_level=1):
    """Write an RGB image (array or PIL) with `encode_png`, atomically (temp name, then rename)."""
    data = encode_png(np.asarray(image), compress_level)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_bytes_atomic(path, data)


def write_dataset_json(dataset_dir, items):
    """Write `dataset_dir/dataset.json` from (name, label_or_None) pairs.

    When every label is None the file says ``"labels": null`` (unconditional), like dataset_tool; an
    unlabelled image among labelled ones is written with -1 (read back as None by `list_images`).
    """
    items = list(items)
    labels = None if all(lab is None for _, lab in items) else [
        [name, -1 if lab is None else int(lab)] for name, lab in items]
    write_text_atomic(os.path.join(dataset_dir, "dataset.json"), json.dumps({"labels": labels}) + "\n")


def zip_dataset(dataset_dir, zip_path):
    """Zip a dataset folder (dataset.json + the PNGs it names, else all PNGs) with the same inner names.

    PNGs are stored uncompressed (they are already deflated). The zip is byte-reproducible: members in
    sorted name order (dataset.json first), each with the same date (1980-01-01 00:00, the earliest a
    zip can hold), permissions (rw-r--r--) and creator system, so the same dataset always gives the same
    bytes. Written to a temp name, then renamed.
    """
    items = list_images(dataset_dir)
    names = sorted({name for name, _ in items})
    js = os.path.join(dataset_dir, "dataset.json")
    with atomic_write(zip_path) as out, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        for name, src in ([("dataset.json", js)] if os.path.exists(js) else []) + \
                [(n, os.path.join(dataset_dir, n)) for n in names]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3  # Unix, so that the permissions below mean the same everywhere
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_STORED
            with open(src, "rb") as f:
                z.writestr(info, f.read())


def _is_zip(path):
    return os.path.isfile(path) and zipfile.is_zipfile(path)


def list_images(path, extensions=IMAGE_EXTENSIONS):
    """Images of a dataset folder or zip, or of any folder of images: list of (name, label or None).

    With dataset.json (and non-null labels): its names and labels, in its order. Otherwise every file
    below `path` (recursively) whose name ends in one of `extensions`, sorted by relative name, with
    label None. Names are relative, '/'-separated, as `DatasetReader` and `read_image` take them.
    """
    path = os.fspath(path)
    if _is_zip(path):
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            meta = json.loads(z.read("dataset.json")) if "dataset.json" in names else None
    elif os.path.isdir(path):
        names = set()
        for root, _, files in os.walk(path):
            for f in files:
                names.add(os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/"))
        js = os.path.join(path, "dataset.json")
        meta = None
        if os.path.exists(js):
            with open(js, encoding="utf-8") as f:
                meta = json.load(f)
    else:
        raise ValueError(f"path must be a dataset folder, a .zip or a folder of images, got {path!r}")
    labels = (meta or {}).get("labels")
    if labels is not None:
        missing = [n for n, _ in labels if n not in names]
        if missing:
            raise ValueError(f"{path}: dataset.json names {len(missing)} missing images, e.g. {missing[0]}")
        return [(n, None if lab is None or lab < 0 else int(lab)) for n, lab in labels]
    return [(n, None) for n in sorted(n for n in names if n.lower().endswith(tuple(extensions)))]


class DatasetReader:
    """Images of one dataset folder or .zip, read by name (as `list_images` lists them).

    Parameters
    ----------
    path : str or path-like
        A dataset folder or .zip in StyleGAN2-ADA's layout, or any folder of images.

    Raises
    ------
    ValueError
        `path` is neither a folder nor a zip file.

    Notes
    -----
    A zip is opened at the first read and kept open: opening one parses its whole central directory,
    about 0.3 s for a 70k-image zip (measured on a shared 2-core machine), far more than decoding
    one image. The open zip belongs to the
    process that opened it; a forked child (a DataLoader or multiprocessing worker) opens its own,
    because reads through a file descriptor shared with the parent would move the parent's file
    offset. A pickled reader carries only its path, so it can be sent to spawned workers.

    Examples
    --------
    >>> with DatasetReader("OUT/dataset.zip") as reader:              # doctest: +SKIP
    ...     images = [reader.read(name) for name, _ in list_images("OUT/dataset.zip")]
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.is_zip = _is_zip(self.path)
        if not (self.is_zip or os.path.isdir(self.path)):
            raise ValueError(f"path must be a dataset folder, a .zip or a folder of images, got {self.path!r}")
        self._zip = None
        self._pid = None

    def __getstate__(self):
        # An open ZipFile cannot be pickled, and the receiving process must open its own anyway.
        return {**self.__dict__, "_zip": None, "_pid": None}

    def __repr__(self):
        return f"DatasetReader({self.path!r})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Close the zip opened by this process, if any; a later read opens it again."""
        z, pid = self._zip, self._pid
        self._zip = self._pid = None
        # A zip inherited through fork is left to the garbage collector: it is the child's copy.
        if z is not None and pid == os.getpid():
            z.close()

    def file_path(self, name):
        """Path of image `name` of a folder source, checked to lie inside the folder and to exist.

        Raises
        ------
        ValueError
            The source is a zip, `name` points outside the folder (``'../x.png'``, an absolute path),
            or no such file exists. The message names the dataset path and `name`.
        """
        if self.is_zip:
            raise ValueError(f"{self.path}: a zip has no file path for image {name!r}")
        root = os.path.normpath(self.path)
        full = os.path.normpath(os.path.join(root, name))
        # normpath, not realpath: links placed inside the folder (e.g. by classify's staging) are
        # members like any other; only the name itself may not climb out.
        if os.path.commonpath([full, root]) != root:
            raise ValueError(f"{self.path}: image name {name!r} points outside the dataset")
        if not os.path.isfile(full):
            raise ValueError(f"{self.path}: no image named {name!r}")
        return full

    def read_bytes(self, name):
        """Encoded bytes (PNG, JPEG, ...) of image `name`.

        Raises
        ------
        ValueError
            No such image, a name outside a folder source, or a member that cannot be read (a damaged
            zip entry, an I/O error); the message names the dataset path and `name`.
        """
        if self.is_zip:
            if self._zip is None or self._pid != os.getpid():
                try:
                    self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
                except (OSError, zipfile.BadZipFile) as e:
                    raise ValueError(f"{self.path}: cannot open the zip to read image {name!r}: {e}") from None
            try:
                return self._zip.read(name)
            except KeyError:
                raise ValueError(f"{self.path}: no image named {name!r}") from None
            except Exception as e:  # noqa: BLE001 - BadZipFile (CRC), zlib.error, OSError, NotImplementedError
                raise ValueError(f"{self.path}: cannot read image {name!r}: {e}") from None
        full = self.file_path(name)
        try:
            with open(full, "rb") as f:
                return f.read()
        except OSError as e:
            raise ValueError(f"{self.path}: cannot read image {name!r}: {e}") from None

    def read(self, name):
        """Image `name` decoded to an (H, W, 3) uint8 RGB array (grey, palette and RGBA converted).

        Raises
        ------
        ValueError
            As `read_bytes`, or the bytes cannot be decoded (the message names the dataset and `name`).
        """
        data = self.read_bytes(name)
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
            if img.mode != "RGB":
                img = img.convert("RGB")
            # np.array, not np.asarray: Pillow's array interface yields a read-only array, on which
            # torch.from_numpy warns and in-place augmentation fails.
            return np.array(img)
        except Exception as e:  # noqa: BLE001 - Pillow raises UnidentifiedImageError, OSError, SyntaxError...
            raise ValueError(f"{self.path}: cannot decode image {name!r}: {e}") from None


def read_image(path, name):
    """Read image `name` (as listed by `list_images`) of a dataset folder or zip: (H, W, 3) uint8 RGB.

    A one-shot convenience: it opens (and for a zip parses) the dataset on every call. To read many
    images of one dataset, keep a `DatasetReader`.
    """
    with DatasetReader(path) as reader:
        return reader.read(name)
