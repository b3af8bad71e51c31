"""Image-set metrics: Frechet Inception Distance (`fid`) with an offline Inception-v3 (`inception`)."""
from .fid import (FeatureStats, compute_stats, dataset_fingerprint, dataset_stats, extractor_identity, fid,
                  frechet_distance, generator_stats, images_to_uint8)
from .inception import InceptionV3FID, load_inception

__all__ = ["FeatureStats", "InceptionV3FID", "compute_stats", "dataset_fingerprint", "dataset_stats",
           "extractor_identity", "fid", "frechet_distance", "generator_stats", "images_to_uint8", "load_inception"]
