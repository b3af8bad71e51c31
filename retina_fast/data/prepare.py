"""Ingest: fundus DICOMs / PNGs / JPEGs -> anonymised, quality-filtered, centred 1024 x 1024 dataset.

`prepare(src, out)` writes

    OUT/dataset/00000/img00000000.png ...   StyleGAN2-ADA layout (see `retina_fast.data.dataset`)
    OUT/dataset/dataset.json                labels (0 normal, 1 ERM) when `labels` are given, else null
    OUT/dataset.zip                         the same, zipped (with zip=True)
    OUT/manifest.csv                        one row per source file (MANIFEST_COLUMNS)
    OUT/salt                                the generated salt of the pseudonymous keys (when none given)
    OUT/prepare.json                        the settings, checked on a rerun
    OUT/.journal.jsonl                      one line per finished source: what makes a rerun resume

Image number i is the position of the source in sorted source order (relative paths), so excluded
sources leave gaps and the numbering does not depend on worker count or on resuming.

Per source, in order (the first failing check gives the exclusion reason, see `reasons.REASONS`):
header pass (all files, before any pixel is decoded): readable? pixel data? colour? burned-in
annotation? second visit (per pseudonymous key, only the earliest study -- by StudyDate, StudyTime,
StudyInstanceUID -- is kept)? Then per image: decode, colour (three identical channels count as grey),
dark, saturated, field of view (zoomed when it leaves the frame at left/right), crop + resize, optic
disc on the output image. Accepted images are written as PNG (temp name, then rename); every result
goes to the journal, from which the manifest and dataset.json are rebuilt at the end.

Nothing from a header reaches an output except age (whole years), sex and the salted key. The
sources' relative paths (file and folder names) go to manifest.csv and the journal, unless
`source_names=False` replaces them with a salted hash (`source_key`).
"""
import csv
import io
import json
import os
import secrets
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context

import numpy as np
from PIL import Image

from ..checks import check_int
from ..fileio import remove_stale_temp_files, write_text_atomic
from . import dataset as ds_mod
from .dicom import anonymise, patient_key, read_dicom_header, read_dicom_pil
from .disc import detect_disc
from .fov import (
    RESAMPLE,
    FOVNotFoundError,
    crop_to_fov_pil,
    fov_from_working_copy,
    retina_mask,
    working_copy,
)

MANIFEST_COLUMNS = ("source", "key", "age", "sex", "label", "status", "reason", "fov_row", "fov_col",
                    "fov_radius", "disc_row", "disc_col", "disc_radius", "output")
SOURCE_EXTENSIONS = (".dcm", ".dicom", ".dic", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", "")
JOURNAL = ".journal.jsonl"
# Smallest output side: the smallest StyleGAN2 preset ('32'); below it the optic disc is a few pixels.
MIN_SIZE = 32

# Exposure thresholds on the working copy, inside the retina: luminance 0.299 R + 0.587 G + 0.114 B.
# Median FOV luminance measured on phantoms (3 seeds each) by exposure: 0.25 -> 25-28, 0.35 -> 34-39,
# 0.45 -> 44-50, 1.0 -> 99-112, 2.0 -> 160-186, 2.5 -> 181-213, 3.2 -> 211-244; skimage's real retina
# photograph 115. The phantom calls < 0.35 dark and > 2.5 saturated.
DARK_LEVEL = 40.0
# Saturated: median FOV luminance over SATURATED_LEVEL (red is clipped everywhere and green nearly so),
# or more than SATURATED_FRACTION of the FOV with green clipped (>= 250). Red alone clips in many good
# photographs (phantoms at exposure 1.5: ~90 % of the FOV), so it is not a criterion.
SATURATED_LEVEL = 200.0
SATURATED_FRACTION = 0.2
GREY_LEVELS = 1.0  # mean |R - G| + |G - B| under this: a grey image stored as RGB


@dataclass(frozen=True)
class PrepareSettings:
    """What determines the output pixels and decisions; stored in OUT/prepare.json."""

    size: int = 1024
    resample: str = "box"
    detector: str = "classical"
    dark_level: float = DARK_LEVEL
    saturated_level: float = SATURATED_LEVEL
    saturated_fraction: float = SATURATED_FRACTION
    salt_check: str = ""


@dataclass
class PrepareResult:
    """Summary of a `prepare` run: counts, paths, `reused` sources taken from the journal, manifest rows."""

    accepted: int
    excluded: Counter
    manifest: str
    dataset: str
    zip: str | None = None
    reused: int = 0
    rows: list = field(default_factory=list, repr=False)


def list_sources(src):
    """Sorted relative paths (posix) of candidate files under folder `src` (hidden files skipped).

    Candidates: extensions in SOURCE_EXTENSIONS (no extension too: DICOM files often have none),
    except 'DICOMDIR'.
    """
    if not os.path.isdir(src):
        raise ValueError(f"src must be a folder, got {src!r}")
    out = []
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if f.startswith(".") or f.upper() == "DICOMDIR":
                continue
            if os.path.splitext(f)[1].lower() in SOURCE_EXTENSIONS:
                out.append(os.path.relpath(os.path.join(root, f), src).replace(os.sep, "/"))
    return sorted(out)


# ----------------------------------------------------------------------------------------- header pass
def _scan(args):
    """Header pass of one source: kind, header-level reason, anonymised fields, visit key (memory only)."""
    path, salt = args
    try:
        h = read_dicom_header(path)
    except Exception:  # noqa: BLE001 -- any failure means "not DICOM": try it as an image next
        try:
            with Image.open(path) as im:
                im.size  # noqa: B018 -- identifies the format without decoding
            return {"kind": "image", "reason": None, "key": "", "age": None, "sex": "", "visit": None}
        except Exception:  # noqa: BLE001 -- not an image either: a DICOM dataset without file meta?
            try:
                # tried last: pydicom's forced reading parses any bytes into (junk) elements
                h = read_dicom_header(path, force=True)
            except Exception:  # noqa: BLE001 -- neither DICOM nor image: recorded, the batch goes on
                return {"kind": "unknown", "reason": "unreadable", "key": "", "age": None, "sex": "",
                        "visit": None}
    anon = anonymise(h, salt)
    reason = None
    if not h.has_pixels:
        reason = "no_pixel_data"
    elif not h.is_colour:
        reason = "not_colour"
    elif h.burned_in_annotation:
        reason = "burned_in_annotation"
    # study identity stays in this process's memory; it never reaches a file
    visit = (h.study_date, h.study_time, h.study_uid) if anon["key"] else None
    return {"kind": "dicom", "reason": reason, **anon, "visit": visit}


def _mark_second_visits(scans):
    """Set reason 'second_visit' on every DICOM of a patient outside its earliest study."""
    first = {}
    for s in scans:
        if s["visit"] is not None and s["reason"] in (None, "burned_in_annotation", "not_colour"):
            k = s["key"]
            first[k] = min(first.get(k, s["visit"]), s["visit"])
    for s in scans:
        if s["visit"] is not None and s["key"] in first and s["visit"] != first[s["key"]] \
                and s["reason"] is None:
            s["reason"] = "second_visit"


# ------------------------------------------------------------------------------------------ image pass
def exposure_reason(small, mask, dark_level=DARK_LEVEL, saturated_level=SATURATED_LEVEL,
                    saturated_fraction=SATURATED_FRACTION):
    """'dark', 'saturated' or None for a working copy `small` (h, w, 3 uint8) and its retina `mask`.

    Dark: retina under 2 % of the frame, or median luminance under `dark_level`. Saturated: median
    luminance over `saturated_level`, or green clipped (>= 250) on more than `saturated_fraction`.
    """
    if mask.sum() < 0.02 * mask.size:
        return "dark"
    px = small[::2, ::2][mask[::2, ::2]]  # a quarter of the pixels pins the median and fraction
    lum = px[:, 0] * 0.299 + px[:, 1] * 0.587 + px[:, 2] * 0.114
    med = np.median(lum)
    if med < dark_level:
        return "dark"
    if med > saturated_level or np.mean(px[:, 1] >= 250) > saturated_fraction:
        return "saturated"
    return None


def _load(path, kind):
    """Decoded source as a PIL image (RGB, or 'L' for grey)."""
    if kind == "dicom":
        img, _ = read_dicom_pil(path, force=True)  # the header pass found it to be DICOM
        return img
    img = Image.open(path)
    img.load()
    if img.mode in ("L", "LA", "I", "I;16", "I;16B", "F", "1"):
        return img.convert("L") if img.mode != "L" else img
    return img if img.mode == "RGB" else img.convert("RGB")


def _round(v, nd=3):
    return None if v is None else round(float(v), nd)


def process_image(img, settings):
    """Quality checks, crop and disc detection of one decoded RGB PIL image.

    Returns (reason or None, fields dict, output PIL image or None). Fields: fov_* in source pixels,
    disc_* in output pixels.
    """
    small, factor = working_copy(img)
    d = small[::2, ::2].astype(np.int16)
    if np.mean(np.abs(d[..., 0] - d[..., 1]) + np.abs(d[..., 1] - d[..., 2])) < GREY_LEVELS:
        return "not_colour", {}, None
    mask = retina_mask(small)
    reason = exposure_reason(small, mask[0], settings.dark_level, settings.saturated_level,
                             settings.saturated_fraction)
    if reason:
        return reason, {}, None
    try:
        fov = fov_from_working_copy(small, factor, (img.size[1], img.size[0]), mask)
    except FOVNotFoundError:
        # bright enough, yet no circular edge inside the frame: the retina fills the frame
        return "zoomed", {}, None
    fields = {"fov_row": _round(fov.center[0]), "fov_col": _round(fov.center[1]),
              "fov_radius": _round(fov.radius)}
    if fov.zoomed:
        return "zoomed", fields, None
    square, geom = crop_to_fov_pil(img, fov, settings.size, settings.resample)
    try:
        disc = detect_disc(square, geom.output_fov(fov), detector=settings.detector)
    except ValueError:  # the FOV holds too few lit pixels to search
        return "disc_not_found", fields, None
    fields.update(disc_row=_round(disc.center[0]), disc_col=_round(disc.center[1]),
                  disc_radius=_round(disc.radius))
    if not disc.found:
        return "disc_not_found", fields, None
    return None, fields, square


def _work(task):
    """Worker: one source -> journal row (dict). Never raises: a failure is an exclusion."""
    index, source_id, path, scan, settings, dataset_dir, compress_level = task
    row = {"source": source_id, "index": index, "key": scan["key"], "age": scan["age"], "sex": scan["sex"],
           "pre": scan["reason"], "stamp": _stamp(path)}
    if scan["reason"]:
        return {**row, "status": "excluded", "reason": scan["reason"]}
    try:
        img = _load(path, scan["kind"])
    except ValueError as e:  # a DICOM without pixel data that the header pass missed
        reason = "no_pixel_data" if "without pixel data" in str(e) else "unreadable"
        return {**row, "status": "excluded", "reason": reason}
    except Exception:  # noqa: BLE001 -- decoders raise many types; one bad file never stops the batch
        return {**row, "status": "excluded", "reason": "unreadable"}
    if img.mode != "RGB":
        return {**row, "status": "excluded", "reason": "not_colour"}
    try:
        reason, fields, square = process_image(img, settings)
    except Exception as e:  # noqa: BLE001 -- one bad file never stops the batch
        return {**row, "status": "excluded", "reason": "unreadable", "error": type(e).__name__}
    row.update(fields)
    if reason:
        return {**row, "status": "excluded", "reason": reason}
    name = ds_mod.image_name(index)
    ds_mod.write_png(os.path.join(dataset_dir, name), square, compress_level)
    return {**row, "status": "accepted", "reason": "", "output": name}


def _stamp(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


# --------------------------------------------------------------------------------------------- driver
def _resolve_salt(out, salt):
    """(salt, whether it was generated now and must be stored in OUT/salt)."""
    path = os.path.join(out, "salt")
    stored = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            stored = f.read().strip()
    if salt is None:
        return (secrets.token_hex(16), True) if stored is None else (stored, False)
    if not isinstance(salt, str) or not salt:
        raise ValueError("salt must be a non-empty string")
    if stored is not None and stored != salt:
        raise ValueError(f"salt differs from the one stored in {path}: use that salt or a new OUT")
    return salt, False


def _read_labels(labels):
    """{relative source path: class} from a dict or a CSV with columns file (or source) and label."""
    if labels is None:
        return {}
    if isinstance(labels, dict):
        return {str(k): ds_mod.label_code(v) for k, v in labels.items()}
    labels = os.fspath(labels)
    if not os.path.isfile(labels):
        raise ValueError(f"labels must be a dict or a CSV file, got {labels!r}")
    try:
        with open(labels, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            col = "file" if "file" in (reader.fieldnames or []) else "source"
            if col not in (reader.fieldnames or []) or "label" not in reader.fieldnames:
                raise ValueError(f"labels CSV {labels} needs columns 'file' (or 'source') and 'label'")
            out = {}
            for r in reader:
                try:
                    out[(r[col] or "").replace(os.sep, "/")] = ds_mod.label_code(r["label"])
                except ValueError as e:
                    raise ValueError(f"labels CSV {labels}, line {reader.line_num}: {e}") from None
            return out
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"labels CSV {labels} cannot be read: {e}") from None


def _read_journal(path):
    rows = {}
    if not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
                rows[r["source"]] = r
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by a kill: that source is simply redone
    return rows


def _journal_valid(row, index, scan, stamp, dataset_dir):
    if row.get("index") != index or row.get("pre") != scan["reason"] or row.get("stamp") != stamp:
        return False
    if row.get("key") != scan["key"]:
        return False
    if row["status"] == "accepted":
        return os.path.isfile(os.path.join(dataset_dir, row.get("output", "")))
    return True


def _cell(v):
    return "" if v is None else v


def source_key(rel, salt):
    """Salted pseudonymous name of a source file (relative path `rel`), for `source_names=False`.

    HMAC-SHA256 like `patient_key`, on a separate domain ('source:' prefix), so a path never yields a
    patient's key.
    """
    return "src-" + patient_key("source:" + rel, salt)


def prepare(src, out, *, size=1024, workers=None, zip=False, salt=None, png_compress_level=1,
            labels=None, resample="box", detector="classical", source_names=True, progress=True):
    """Ingest a folder of fundus photographs (DICOM, PNG, JPEG) into a StyleGAN2-ADA-style dataset.

    Parameters
    ----------
    src : str or PathLike
        Folder searched recursively (see `list_sources`).
    out : str or PathLike
        Output folder (created). A rerun into the same folder resumes: finished sources are skipped.
    size : int
        Output side, px (default 1024; at least `MIN_SIZE`).
    workers : int, optional
        Worker processes (default os.cpu_count()); 1 runs in this process. Results do not depend on it.
    zip : bool
        Also write OUT/dataset.zip.
    salt : str, optional
        Secret salt of the pseudonymous keys; generated and stored in OUT/salt when None.
    png_compress_level : int
        zlib level 0-9 of the PNGs (default 1: fast).
    labels : dict or str, optional
        {relative source path: 'normal' | 'erm' | int} or a CSV with columns file/source and label
        (make_cohort's cohort_truth.csv works). dataset.json labels are null without it.
    resample : {'box', 'lanczos', 'bicubic'}
        Antialiased resize filter. Default 'box': Pillow's BOX, area averaging (OpenCV's INTER_AREA),
        ~3x faster than LANCZOS (StyleGAN2-ADA dataset_tool's choice, slightly sharper).
    detector : str
        Optic-disc detector name (see `retina_fast.data.disc.DETECTORS`).
    source_names : bool
        Write the source files' relative paths to manifest.csv and the journal (default). False
        writes `source_key` instead (a salted hash), for sources whose file or folder names carry
        identifying data; the manifest then links images to sources only for the salt's holder.
    progress : bool
        Show tqdm progress bars on stderr.

    Returns
    -------
    PrepareResult

    Raises
    ------
    ValueError
        A bad argument, `src` not a folder or without source files, unreadable `labels`, a salt or
        settings that differ from those of an earlier run into `out`. Checked before `out` is touched.
    """
    src, out = os.fspath(src), os.fspath(out)
    if workers is None:
        workers = os.cpu_count() or 1
    workers = check_int("workers", workers, 1)
    check_int("size", size, MIN_SIZE)
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
    png_compress_level = check_int("png_compress_level", png_compress_level, 0, 9)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out must be a folder, got the file {out!r}")
    # every input is checked before OUT is created or changed
    sources = list_sources(src)
    if not sources:
        raise ValueError(f"src {src!r} holds no source files (DICOM, PNG, JPEG, TIFF, BMP)")
    label_map = _read_labels(labels)
    salt, new_salt = _resolve_salt(out, salt)
    settings = PrepareSettings(size=int(size), resample=resample, detector=detector,
                               salt_check=patient_key("retina_fast salt check", salt))
    dataset_dir = _open_output(out, settings, salt if new_salt else None)

    paths = [os.path.join(src, r) for r in sources]
    ids = sources if source_names else [source_key(r, salt) for r in sources]
    rows, reused = _process_sources(paths, ids, salt, settings, out, dataset_dir, workers, png_compress_level,
                                    progress)
    for i, r in enumerate(rows):  # by position: the row's source may be a hash (`source_names`)
        r["label"] = label_map.get(sources[i])
    return _write_outputs(out, dataset_dir, rows, zip, reused)


def _open_output(out, settings, new_salt):
    """Create OUT (or check its settings, on a rerun) and its dataset folder; return the latter.

    `new_salt` is the generated salt to store, None when the caller gave one or OUT already holds it.
    """
    settings_path = os.path.join(out, "prepare.json")
    old = None
    if os.path.exists(settings_path):
        with open(settings_path, encoding="utf-8") as f:
            old = json.load(f)
        if old != asdict(settings):
            raise ValueError(f"{out} was prepared with other settings ({old}); use a new OUT folder")
    os.makedirs(out, exist_ok=True)
    remove_stale_temp_files(out)  # e.g. the zip of a killed run
    if old is None:
        write_text_atomic(settings_path, json.dumps(asdict(settings), indent=1) + "\n")
    if new_salt is not None:
        write_text_atomic(os.path.join(out, "salt"), new_salt + "\n", mode=0o600)
    dataset_dir = os.path.join(out, "dataset")
    os.makedirs(dataset_dir, exist_ok=True)
    remove_stale_temp_files(dataset_dir, recursive=True)
    return dataset_dir


def _process_sources(paths, ids, salt, settings, out, dataset_dir, workers, png_compress_level, progress):
    """Header pass over all sources, then every source the journal does not hold already.

    Returns (one journal row per source in source order, how many rows came from the journal). The
    journal ends compacted to those rows.
    """
    from tqdm import tqdm

    ctx = get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ctx.Pool(workers) if workers > 1 else None
    journal_path = os.path.join(out, JOURNAL)
    try:
        imap = pool.imap if pool else map
        scans = list(tqdm(imap(_scan, [(p, salt) for p in paths], *([64] if pool else [])),
                          total=len(paths), desc="headers", unit="file", disable=not progress,
                          file=sys.stderr))
        _mark_second_visits(scans)
        rows, todo = _reuse_journal(journal_path, paths, ids, scans, dataset_dir)
        todo = [(i, ids[i], paths[i], scans[i], settings, dataset_dir, png_compress_level) for i in todo]
        with open(journal_path, "a", encoding="utf-8") as jf, \
                tqdm(total=len(paths), initial=len(paths) - len(todo), desc="images", unit="img",
                     disable=not progress, file=sys.stderr) as bar:
            results = pool.imap_unordered(_work, todo, chunksize=1) if pool else map(_work, todo)
            for r in results:
                # one write + flush per line: a kill leaves at most one cut line, which is ignored
                jf.write(json.dumps(r, separators=(",", ":")) + "\n")
                jf.flush()
                rows[r["index"]] = r
                bar.update()
    except BaseException:
        if pool:  # interrupted: stop the workers now (finished files are in the journal)
            pool.terminate()
        raise
    finally:
        if pool:
            pool.close()
            pool.join()

    # compact the journal to one line per source (reruns append; the last line of a source wins)
    write_text_atomic(journal_path, "".join(
        json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
    return rows, len(paths) - len(todo)


def _reuse_journal(journal_path, paths, ids, scans, dataset_dir):
    """(rows with the still-valid journal rows filled in and None elsewhere, indices left to do)."""
    done = _read_journal(journal_path)
    rows = [None] * len(paths)
    todo = []
    for i, sid in enumerate(ids):
        r = done.get(sid)
        if r is not None and _journal_valid(r, i, scans[i], _stamp(paths[i]), dataset_dir):
            rows[i] = r
        else:
            todo.append(i)
    return rows, todo


def _write_outputs(out, dataset_dir, rows, zip, reused):
    """Manifest, dataset.json (and the zip) from the finished rows; stale images removed."""
    _write_manifest(os.path.join(out, "manifest.csv"), rows)
    accepted = [(r["output"], r["label"]) for r in rows if r["status"] == "accepted"]
    _remove_stale_images(dataset_dir, {name for name, _ in accepted})
    ds_mod.write_dataset_json(dataset_dir, accepted)
    zip_path = None
    if zip:
        zip_path = os.path.join(out, "dataset.zip")
        ds_mod.zip_dataset(dataset_dir, zip_path)
    excluded = Counter(r["reason"] for r in rows if r["status"] == "excluded")
    return PrepareResult(accepted=len(accepted), excluded=excluded,
                         manifest=os.path.join(out, "manifest.csv"), dataset=dataset_dir, zip=zip_path,
                         reused=reused, rows=rows)


def _remove_stale_images(dataset_dir, keep):
    """Delete PNGs a previous run accepted that this run did not (sources removed or now excluded)."""
    for root, _, files in os.walk(dataset_dir):
        for f in files:
            if f.endswith(".png"):
                rel = os.path.relpath(os.path.join(root, f), dataset_dir).replace(os.sep, "/")
                if rel not in keep:
                    os.remove(os.path.join(root, f))


def _write_manifest(path, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in MANIFEST_COLUMNS])
    write_text_atomic(path, buf.getvalue())


def read_manifest(path):
    """Rows of OUT/manifest.csv as a list of dicts (strings; empty cells as '')."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))

