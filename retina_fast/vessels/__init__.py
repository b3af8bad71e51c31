"""Vessel analysis: segmentation, skeleton, vessel amount, zone-B SNR, statistics.

Plain functions on numpy arrays, (row, col) pixel coordinates:

- `segment(image)` -- vessel segmentation (`retina_fast.vessels.segment`); `pixel_auc` scores it
  (`.auc`); `estimate_fov_mask` (`.image`) is the field of view it uses
- `skeletonize(mask)` -- scikit-image's Zhang-Suen skeleton, identical output, bit-parallel (64 pixels a word)
- `vessel_amount(mask, fov_mask=None)` -- vessel pixels and skeleton length, absolute and per FOV
- `zone_b_snr(image, vessel_mask, disc_center, disc_radius)` -- perpendicular-profile SNR in zone B
- `compare(real, synthetic)` -- unpaired t-tests, mean difference, Cohen's d
- `measure_image`, `measure_folder` -- all metrics of one image / a folder or dataset to CSV
"""
from .amount import VesselAmount, skeleton_length, vessel_amount
from .auc import pixel_auc
from .batch import measure_folder, measure_image
from .compare import Comparison, cohens_d, compare, comparison_table
from .segment import SegmentationResult, segment
from .skeleton import skeletonize
from .snr import ZONES, ProfilePoint, ZoneBSNR, zone_b_mask, zone_b_snr

__all__ = ["segment", "SegmentationResult", "pixel_auc", "skeletonize", "vessel_amount", "VesselAmount",
           "skeleton_length", "zone_b_snr", "ZoneBSNR", "ProfilePoint", "ZONES", "zone_b_mask", "compare",
           "Comparison", "cohens_d", "comparison_table", "measure_image", "measure_folder"]
