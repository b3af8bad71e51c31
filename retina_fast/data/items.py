"""Image lists: an `Item` is one image (root, name, label), read from a dataset or staged as one.

    items = items_from_source("prepared/dataset")   # [Item(root, name, label), ...]
    items = as_items(user_list, "train_items")      # checked: Items, tuples or file paths
    stage_items(items, "staged/")                   # a dataset folder `make_loader` reads

`root` is a dataset folder, a dataset .zip or a plain folder of images; `name` is the image's name
inside it as `retina_fast.data.dataset.list_images` lists it.
"""
import json
import os
import shutil
from collections import namedtuple

from retina_fast.fileio import write_text_atomic

from .dataset import DatasetReader, image_name, list_images

__all__ = ["Item", "items_from_source", "as_items", "stage_items"]

Item = namedtuple("Item", ["root", "name", "label"])
Item.__doc__ = """One image: `name` (as `list_images` lists it) inside `root` (a folder or a .zip); `label`
0 (normal), 1 (ERM) or None (unlabelled)."""


def items_from_source(source):
    """Items of a dataset folder/zip (dataset.json labels) or of a folder of images (labels None)."""
    path = os.fspath(source)
    return [Item(path, name, label) for name, label in list_images(path)]


def as_items(items, what):
    """A checked, non-empty list of `Item` from whatever callers pass as an image list.

    `items` is a dataset folder/zip or image folder (`items_from_source`), or a sequence of `Item`,
    (root, name, label) tuples or image file paths (label None). `what` names the argument in errors:
    TypeError for an entry of another kind, ValueError for a label other than 0, 1 or None or an empty list.
    """
    if isinstance(items, (str, os.PathLike)):
        return items_from_source(items)
    out = []
    for i, it in enumerate(items):
        if isinstance(it, (str, os.PathLike)):  # a plain image file path
            p = os.path.abspath(os.fspath(it))
            it = Item(os.path.dirname(p), os.path.basename(p), None)
        elif not isinstance(it, Item):
            try:
                it = Item(*it)
            except TypeError:
                raise TypeError(f"{what}[{i}] must be an Item (root, name, label) or a file path, "
                                f"got {it!r}") from None
        if it.label is not None and (isinstance(it.label, bool) or int(it.label) not in (0, 1)
                                     or int(it.label) != it.label):
            raise ValueError(f"{what}[{i}] ({it.name!r}) has label {it.label!r}; expected 0, 1 or None")
        out.append(it)
    if not out:
        raise ValueError(f"{what} is empty")
    return out


def stage_items(items, folder):
    """Write `items` as a dataset folder for `make_loader`: links (or copies) + dataset.json.

    Image k becomes ``image_name(k)`` (extension of the source kept); repeated items (oversampling)
    get one entry each. Folder items are symbolic links (copies where links are not allowed), zip
    members are copied out. Returns `folder`.
    """
    os.makedirs(folder, exist_ok=True)
    entries = []
    readers = {}  # one per source, so a zip is opened once, not once per item
    try:
        for k, it in enumerate(items):
            ext = os.path.splitext(it.name)[1].lower() or ".png"
            rel = image_name(k)[:-4] + ext
            dst = os.path.join(folder, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            reader = readers.get(it.root)
            if reader is None:
                try:
                    reader = readers[it.root] = DatasetReader(it.root)
                except ValueError:
                    raise ValueError(f"{it.root}: no image named {it.name!r} (no such folder or zip)") from None
            if reader.is_zip:
                with open(dst, "wb") as f:
                    f.write(reader.read_bytes(it.name))
            else:
                src = os.path.abspath(reader.file_path(it.name))
                try:
                    os.symlink(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
            entries.append((rel, it.label))
    finally:
        for reader in readers.values():
            reader.close()
    # labels None -> -1 in dataset.json (read back as None); an all-unlabelled list still gets labels
    write_text_atomic(os.path.join(folder, "dataset.json"),
                      json.dumps({"labels": [[n, -1 if lab is None else int(lab)]
                                                           for n, lab in entries]}) + "\n")
    return folder
