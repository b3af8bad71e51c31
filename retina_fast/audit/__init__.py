"""Synthetic-data audit: is a generated set realistic in the fundus's own terms (`realism`), and does
it copy training patients (`privacy`)?"""
from .privacy import PrivacyReport, audit_privacy, authenticity, data_copying_statistic, pixel_features
from .knn import exact_knn, faiss_available
from .realism import RealismMonitor, RealismReport, measure_image_realism, measure_realism, realism_report

__all__ = ["PrivacyReport", "audit_privacy", "authenticity", "data_copying_statistic", "exact_knn",
           "faiss_available", "pixel_features", "measure_realism", "measure_image_realism", "realism_report",
           "RealismReport", "RealismMonitor"]
