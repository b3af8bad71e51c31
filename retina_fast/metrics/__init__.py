"""Image-set metrics: Frechet Inception Distance (`fid`) with an offline Inception-v3 (`inception`),
KID (`kid`), precision/recall and density/coverage (`precision_recall`), several at once from one
feature pass (`evaluate`)."""
from .evaluate import METRICS, evaluate_metrics, metric_columns, needs_features, parse_metrics
from .fid import (FeatureStats, compute_stats, dataset_fingerprint, dataset_stats, extractor_identity, fid,
                  frechet_distance, generator_stats, images_to_uint8)
from .inception import InceptionV3FID, load_inception
from .kid import kid, mmd2_unbiased, polynomial_kernel
from .precision_recall import knn_radii, prdc, precision_recall

__all__ = ["METRICS", "FeatureStats", "InceptionV3FID", "compute_stats", "dataset_fingerprint", "dataset_stats",
           "evaluate_metrics", "extractor_identity", "fid", "frechet_distance", "generator_stats", "images_to_uint8",
           "kid", "knn_radii", "load_inception", "metric_columns", "mmd2_unbiased", "needs_features",
           "parse_metrics", "polynomial_kernel", "prdc", "precision_recall"]
