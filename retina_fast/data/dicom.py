"""DICOM files of fundus photographs: writer (cohort maker) and reader/anonymiser (ingest)."""


# ---------------------------------------------------------------------------------------------------
# Writing (owner: phantom / cohort maker). Self-contained: writes Ophthalmic Photography 8 Bit Image
# Storage files with planted identifying data, so the ingest's anonymisation can be tested.
# ---------------------------------------------------------------------------------------------------
import datetime as _dt
import io as _io
import os as _os

import numpy as _np
from PIL import Image as _Image

from retina_fast.fileio import atomic_write as _atomic_write

OPHTHALMIC_PHOTOGRAPHY_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
TRANSFER_SYNTAXES = {
    "explicit": "1.2.840.10008.1.2.1",   # Explicit VR Little Endian, uncompressed
    "jpeg": "1.2.840.10008.1.2.4.50",    # JPEG Baseline (Process 1), Pillow-encoded, encapsulated
    "rle": "1.2.840.10008.1.2.5",        # RLE Lossless, pydicom's native encoder
}
PRIVATE_GROUP = 0x0029
PRIVATE_CREATOR = "RETINA_FAST_TEST"


def _dicom_date(value, name):
    """'YYYYMMDD' from a date/datetime or an 8-digit string; ValueError naming `name` otherwise."""
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.strftime("%Y%m%d")
    text = str(value)
    try:
        ok = len(text) == 8 and text.isdigit() and _dt.datetime.strptime(text, "%Y%m%d") is not None
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a date or a 'YYYYMMDD' string, got {value!r}")
    return text


def _dicom_age(age):
    if isinstance(age, str):
        if len(age) != 4 or not age[:3].isdigit() or age[3] not in "DWMY":
            raise ValueError(f"age must be years (0-999) or a DICOM age string like '063Y', got {age!r}")
        return age
    if not (0 <= int(age) <= 999):
        raise ValueError(f"age must be in 0-999 years, got {age!r}")
    return f"{int(age):03d}Y"


def _encode_jpeg(image, quality):
    buf = _io.BytesIO()
    mode = "RGB" if image.ndim == 3 else "L"
    # subsampling=1 is 4:2:2, what YBR_FULL_422 declares
    kwargs = {"subsampling": 1} if mode == "RGB" else {}
    _Image.fromarray(image, mode).save(buf, format="JPEG", quality=quality, **kwargs)
    return buf.getvalue()


def write_dicom(path, image, *, patient_name, patient_id, birth_date, sex, age, study_date, institution,
                transfer_syntax="jpeg", study_uid=None, series_uid=None, sop_uid=None,
                burned_in_annotation=False, private_text=None, extra=None, jpeg_quality=95):
    """Write a fundus photograph as an Ophthalmic Photography 8 Bit Image Storage DICOM file.

    The file is written to a temporary name in the same folder and renamed, so `path` is never
    half-written.

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    image : (H, W, 3) uint8 RGB, (H, W) uint8, or None
        Pixels. A 2-D array is written as MONOCHROME2; None writes a header without Pixel Data.
    patient_name, patient_id, institution : str
        Identifying values planted in PatientName, PatientID, InstitutionName.
    birth_date, study_date : datetime.date or 'YYYYMMDD' str
        PatientBirthDate; StudyDate (also SeriesDate, ContentDate, AcquisitionDateTime's date).
    sex : {'M', 'F', 'O'}
    age : int or str
        Years, written as PatientAge '063Y' (a ready DICOM age string is kept as is).
    transfer_syntax : {'jpeg', 'explicit', 'rle'}
        JPEG Baseline (Pillow quality `jpeg_quality`, YBR_FULL_422), Explicit VR Little Endian, or
        RLE Lossless.
    study_uid, series_uid, sop_uid : str, optional
        Instance UIDs; fresh random UIDs when None.
    burned_in_annotation : bool
        BurnedInAnnotation 'YES' / 'NO'.
    private_text : str, optional
        Text of a private element (0029,xx01) under private creator 'RETINA_FAST_TEST'.
    extra : dict, optional
        Further elements by DICOM keyword (e.g. InstitutionAddress, ReferringPhysicianName,
        OperatorsName, AccessionNumber, StudyID, StudyTime, Laterality); they override defaults.

    Returns
    -------
    str
        `path`.
    """
    from pydicom.uid import generate_uid

    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax must be one of {sorted(TRANSFER_SYNTAXES)}, "
                         f"got {transfer_syntax!r}")
    if image is not None:
        image = _np.asarray(image)
        if image.dtype != _np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(f"image must be (H, W, 3) or (H, W) uint8, got {image.dtype} {image.shape}")
    if sex not in ("M", "F", "O"):
        raise ValueError(f"sex must be 'M', 'F' or 'O', got {sex!r}")
    birth = _dicom_date(birth_date, "birth_date")
    study = _dicom_date(study_date, "study_date")
    sop_uid = sop_uid or generate_uid()
    ds = _header(transfer_syntax, sop_uid, study_uid or generate_uid(), series_uid or generate_uid())
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.PatientAge = _dicom_age(age)
    ds.StudyDate = study
    ds.SeriesDate = study
    ds.ContentDate = study
    ds.StudyTime = "093000"
    ds.AcquisitionDateTime = study + "093000"
    ds.InstitutionName = institution
    ds.ReferringPhysicianName = ""
    ds.AccessionNumber = ""
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "retina_fast phantom"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BurnedInAnnotation = "YES" if burned_in_annotation else "NO"
    _add_extra(ds, private_text, extra)
    if image is not None:
        _add_pixels(ds, image, transfer_syntax, jpeg_quality)

    path = _os.fspath(path)
    with _atomic_write(path) as f:
        ds.save_as(f, enforce_file_format=True)
    return path


def _header(transfer_syntax, sop_uid, study_uid, series_uid):
    """A dataset with its file meta, SOP class and instance UIDs; the rest is the caller's."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = OPHTHALMIC_PHOTOGRAPHY_8BIT
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = UID(TRANSFER_SYNTAXES[transfer_syntax])
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = OPHTHALMIC_PHOTOGRAPHY_8BIT
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "OP"
    return ds


def _add_extra(ds, private_text, extra):
    """The private text element and the `extra` elements by keyword (these override defaults)."""
    from pydicom.datadict import tag_for_keyword

    if private_text is not None:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        block.add_new(0x01, "LT", str(private_text))
    for keyword, value in (extra or {}).items():
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"extra: {keyword!r} is not a DICOM keyword")
        setattr(ds, keyword, value)


def _add_pixels(ds, image, transfer_syntax, jpeg_quality):
    """Image pixel module and Pixel Data of `image` in `transfer_syntax` (RLE: compressed here)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    colour = image.ndim == 3
    ds.Rows, ds.Columns = int(image.shape[0]), int(image.shape[1])
    ds.SamplesPerPixel = 3 if colour else 1
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if colour:
        ds.PlanarConfiguration = 0
    if transfer_syntax == "jpeg":
        ds.PhotometricInterpretation = "YBR_FULL_422" if colour else "MONOCHROME2"
        ds.PixelData = encapsulate([_encode_jpeg(image, jpeg_quality)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    else:
        ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
        ds.PixelData = _np.ascontiguousarray(image).tobytes()
        ds["PixelData"].VR = "OB"
        if transfer_syntax == "rle":
            ds.file_meta.TransferSyntaxUID = UID(TRANSFER_SYNTAXES["explicit"])
            ds.compress(UID(TRANSFER_SYNTAXES["rle"]), encoding_plugin="pydicom",
                        generate_instance_uid=False)


# ---------------------------------------------------------------------------------------------------
# Reading and anonymising (owner: ingest). Only `patient_key`, `age` and `sex` ever leave this module
# towards an output; every other header value stays in memory.
# ---------------------------------------------------------------------------------------------------
# (_dt, _io, _np and _Image are imported at the top of the module)
import hashlib as _hashlib
import hmac as _hmac
import warnings as _warnings
from dataclasses import dataclass as _dataclass

import pydicom as _pydicom
from pydicom.errors import InvalidDicomError as _InvalidDicomError

_JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
# JPEG Baseline frames with these photometric interpretations are plain JFIF-style YCbCr: Pillow
# decodes them straight to RGB (libjpeg-turbo's colour conversion), the same pixels pydicom's Pillow
# plugin returns, without pydicom's array copies.
_PILLOW_YBR = ("YBR_FULL_422", "YBR_FULL")
KEY_HEX = 16


@_dataclass(frozen=True)
class DicomHeader:
    """What the ingest needs from a DICOM header. Holds identifying values: never write it out.

    Attributes
    ----------
    patient_id, study_uid, study_date, study_time : str
        As in the file ('' when absent). Used only to group visits and to derive the pseudonymous key.
    age : float or None
        Years: PatientAge when present, else from PatientBirthDate and the study date.
    sex : str
        'M', 'F', 'O' or ''.
    burned_in_annotation : bool
        BurnedInAnnotation == 'YES'.
    has_pixels : bool
        Whether the file has a Pixel Data element.
    samples_per_pixel : int
    photometric : str
        PhotometricInterpretation ('' when absent).
    transfer_syntax : str
        Transfer syntax UID.
    """

    patient_id: str
    study_uid: str
    study_date: str
    study_time: str
    age: float | None
    sex: str
    burned_in_annotation: bool
    has_pixels: bool
    samples_per_pixel: int
    photometric: str
    transfer_syntax: str

    @property
    def is_colour(self):
        """Three samples per pixel and a colour photometric interpretation."""
        return self.samples_per_pixel == 3 and not self.photometric.startswith("MONOCHROME")


def _str(ds, keyword):
    v = ds.get(keyword, "")
    return "" if v is None else str(v).strip()


def _date(text):
    try:
        return _dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8])) if len(text) >= 8 else None
    except ValueError:
        return None


def parse_age_string(text):
    """DICOM Age String ('063Y', '006M', '012W', '030D') in years, or None when malformed."""
    text = (text or "").strip().upper()
    if len(text) < 2 or not text[:-1].isdigit() or text[-1] not in "YMWD":
        return None
    n = int(text[:-1])
    return n / {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.2425}[text[-1]]


def age_from_dates(birth_date, on_date):
    """Whole years between two DICOM dates ('YYYYMMDD'), or None when either is missing or malformed."""
    b, d = _date(birth_date or ""), _date(on_date or "")
    if b is None or d is None or d < b:
        return None
    return float(d.year - b.year - ((d.month, d.day) < (b.month, b.day)))


def header_from_dataset(ds):
    """`DicomHeader` of a pydicom Dataset."""
    study_date = _str(ds, "StudyDate") or _str(ds, "AcquisitionDate") or _str(ds, "ContentDate")
    age = parse_age_string(_str(ds, "PatientAge"))
    if age is None:
        age = age_from_dates(_str(ds, "PatientBirthDate"), study_date)
    sex = _str(ds, "PatientSex").upper()
    meta = getattr(ds, "file_meta", None)
    return DicomHeader(
        patient_id=_str(ds, "PatientID"),
        study_uid=_str(ds, "StudyInstanceUID"),
        study_date=study_date,
        study_time=_str(ds, "StudyTime"),
        age=age,
        sex=sex if sex in ("M", "F", "O") else "",
        burned_in_annotation=_str(ds, "BurnedInAnnotation").upper() == "YES",
        has_pixels="PixelData" in ds,
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
        photometric=_str(ds, "PhotometricInterpretation").upper(),
        transfer_syntax=str(meta.get("TransferSyntaxUID", "")) if meta is not None else "",
    )


def read_dicom_header(path, force=False):
    """Read the header of a DICOM file without loading its pixel data.

    With `force`, a file without the 128-byte preamble and file meta header (written by older or
    hand-made software) is read too, when its dataset holds standard DICOM elements.

    Raises
    ------
    pydicom.errors.InvalidDicomError, OSError
        When `path` is not a readable DICOM file.
    """
    return header_from_dataset(_dcmread(path, force=force, defer_size="64 KB"))


# Transfer syntax of a dataset read without file meta, from the encoding pydicom found:
# (implicit VR, little endian) -> UID. Implicit VR big endian is no DICOM transfer syntax.
_GUESSED_SYNTAX = {(True, True): "1.2.840.10008.1.2", (False, True): "1.2.840.10008.1.2.1",
                   (False, False): "1.2.840.10008.1.2.2"}


def _dcmread(path, force=False, **kwargs):
    """pydicom.dcmread that treats a truncated file as an error, not as a warning.

    With `force`, a file that lacks the preamble and file meta is read with pydicom's force=True when
    the result holds at least one standard element (any other file parses into junk tags), and its
    transfer syntax is set from the encoding pydicom detected, so its pixels can be decoded.
    """
    from pydicom.datadict import dictionary_has_tag

    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        try:
            ds = _pydicom.dcmread(path, **kwargs)
        except _InvalidDicomError:
            if not force:
                raise
            ds = _pydicom.dcmread(path, force=True, **kwargs)
            if not any(t.group > 0x0002 and dictionary_has_tag(t) for t in ds.keys()):
                raise _InvalidDicomError(f"{path}: not DICOM (no standard element)") from None
            meta = getattr(ds, "file_meta", None)
            syntax = _GUESSED_SYNTAX.get(tuple(getattr(ds, "original_encoding", ()) or ()))
            if syntax is not None and (meta is None or "TransferSyntaxUID" not in meta):
                from pydicom.dataset import FileMetaDataset
                from pydicom.uid import UID
                if meta is None:
                    ds.file_meta = meta = FileMetaDataset()
                meta.TransferSyntaxUID = UID(syntax)
    for w in caught:
        if "End of file" in str(w.message):
            raise _InvalidDicomError(f"{path}: truncated DICOM file")
    # pydicom's lenient reader returns an empty dataset for a file cut inside encapsulated pixel data
    if len(ds) == 0:
        raise _InvalidDicomError(f"{path}: empty or truncated DICOM dataset")
    return ds


def _to_uint8_rgb(a, bits_stored):
    if a.ndim == 4:  # multi-frame: ophthalmic photographs are single frames; take the first
        a = a[0]
    if a.dtype != _np.uint8:
        a = _np.clip(a.astype(_np.float32) * (255.0 / (2 ** int(bits_stored) - 1)) + 0.5, 0, 255).astype(_np.uint8)
    return a


def read_dicom_pil(path, force=False):
    """Read a DICOM file: (pixels as a PIL image, DicomHeader).

    The image is RGB when the file holds colour pixels, else mode 'L'. JPEG Baseline YCbCr frames are
    decoded by Pillow directly; every other transfer syntax goes through pydicom's `pixel_array`
    (uncompressed and RLE natively; others need pydicom's optional decoders). `force` also reads a
    file without preamble and file meta (see `read_dicom_header`).

    Raises
    ------
    ValueError
        When the file has no pixel data.
    pydicom.errors.InvalidDicomError, OSError, RuntimeError, NotImplementedError
        When it is not DICOM, is truncated, or its pixels cannot be decoded.
    """
    ds = _dcmread(path, force=force)
    header = header_from_dataset(ds)
    if not header.has_pixels:
        raise ValueError(f"{path}: DICOM without pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if header.transfer_syntax == _JPEG_BASELINE and header.photometric in _PILLOW_YBR \
            and header.samples_per_pixel == 3:
        frame = _pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=frames)
        img = _Image.open(_io.BytesIO(frame))
        img.load()
        return (img if img.mode == "RGB" else img.convert("RGB")), header
    a = _to_uint8_rgb(_np.asarray(ds.pixel_array), ds.get("BitsStored", 8))
    if a.ndim == 2:
        return _Image.fromarray(a, "L"), header
    if a.ndim == 3 and a.shape[2] == 1:
        return _Image.fromarray(a[..., 0], "L"), header
    if a.ndim == 3 and frames > 1 and a.shape[-1] != 3:
        a = a[0]
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{path}: unexpected pixel array shape {a.shape}")
    return _Image.fromarray(_np.ascontiguousarray(a), "RGB"), header


def read_dicom(path):
    """Read a DICOM file: (image as (H, W, 3) uint8 RGB or (H, W) uint8 array, DicomHeader).

    See `read_dicom_pil` for decoding and errors.
    """
    img, header = read_dicom_pil(path)
    return _np.asarray(img), header


def patient_key(patient_id, salt):
    """Salted pseudonymous key of a patient: HMAC-SHA256(salt, PatientID), first `KEY_HEX` hex digits.

    Returns '' for an empty PatientID (such images cannot be grouped into visits).
    """
    if not isinstance(salt, (str, bytes)) or len(salt) == 0:
        raise ValueError("salt must be a non-empty str or bytes")
    if not patient_id:
        return ""
    s = salt.encode() if isinstance(salt, str) else salt
    return _hmac.new(s, patient_id.encode("utf-8"), _hashlib.sha256).hexdigest()[:KEY_HEX]


def anonymise(header, salt):
    """The only header values an output may keep: {'key', 'age' (whole years or None), 'sex'}."""
    age = None if header.age is None else int(_np.floor(header.age))
    return {"key": patient_key(header.patient_id, salt), "age": age, "sex": header.sex}
