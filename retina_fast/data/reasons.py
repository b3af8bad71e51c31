"""Machine-readable exclusion reasons of the ingest (`prepare`).

A source file gets the first reason that applies. The header pass comes first (no pixel decoding):
unreadable file, no pixel data, not colour (header), burned-in annotation, second visit. Then the
pixels: undecodable pixels (unreadable), not colour (identical channels), dark, saturated, zoomed,
disc not found. A patient's visits are ranked among their DICOMs that hold pixel data.
"""

REASONS = (
    "unreadable",            # truncated/corrupt file: neither DICOM nor an image Pillow can open, or pixels fail to decode
    "no_pixel_data",         # a DICOM without a Pixel Data element (e.g. a report or structured document)
    "not_colour",            # one sample per pixel, MONOCHROME photometric, or three identical channels
    "burned_in_annotation",  # DICOM BurnedInAnnotation == 'YES': text burned into the pixels may identify
    "second_visit",          # a later visit (study) of a patient already seen: only the earliest visit is kept
    "dark",                  # too little light inside the field of view
    "saturated",             # too much of the field of view clipped at white
    "zoomed",                # field of view leaves the frame at left or right (arcade periphery missing)
    "disc_not_found",        # no optic-disc-like peak (classical detector score under its threshold)
)

DESCRIPTIONS = {
    "unreadable": "neither a readable DICOM nor an image file, or its pixels could not be decoded",
    "no_pixel_data": "DICOM without pixel data",
    "not_colour": "grayscale / monochrome image",
    "burned_in_annotation": "DICOM BurnedInAnnotation is YES",
    "second_visit": "second or later visit of a patient (the earliest visit is kept)",
    "dark": "field of view too dark",
    "saturated": "field of view saturated",
    "zoomed": "field of view not wholly inside the frame at left/right (zoomed)",
    "disc_not_found": "optic disc not detected",
}


def check_reason(reason):
    """Return `reason` if it is in `REASONS`, else raise ValueError naming it."""
    if reason not in REASONS:
        raise ValueError(f"reason {reason!r} is not one of {REASONS}")
    return reason
