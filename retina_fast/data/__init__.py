"""Fundus data: phantom generator, DICOM ingest, field of view, optic disc, dataset store, loaders."""
# Imported eagerly (adds ~0.25 s: scipy.ndimage, pydicom) because a lazy `prepare` would be shadowed by
# the `prepare` submodule as soon as anything imports `retina_fast.data.prepare`.
from .prepare import prepare
from .reasons import REASONS

__all__ = ["REASONS", "prepare"]
