"""ERM-vs-normal classification: metrics with CIs, patient-level split, Grad-CAM (issue 6).

- `binary_metrics`, `auc_ci`, `wilson_ci`, `roc_curve_points`, `paired_delong`, `bootstrap_aucs`,
  `delong_variance`, `BinaryMetrics` -- `retina_fast.classify.metrics`
- `patient_split`, `check_no_leakage`, `split_summary` -- `retina_fast.classify.split`
- `grad_cam`, `overlay`, `save_overlays`, `default_target_layer` -- `retina_fast.classify.cam`
  (pytorch-grad-cam is imported on first use)
- `make_classifier`, `load_weights` -- `retina_fast.classify.model`; `TrainConfig`, `train_classifier`,
  `predict`, `load_classifier`, `augment_batch` -- `.train`; `Item`, `items_from_source` --
  `retina_fast.data.items`; `read_pool` -- `retina_fast.data.pool`; `run_study`, `report_study`,
  `compare_modes` -- `.study`; `train_on_pool`, `label_pool`, `choose_thresholds` --
  `.labelling`; `demo_stage`, `make_phantom_pool` -- `.stage` (these import torchvision, ~2 s, so they
  load on first use)
"""
from .cam import default_target_layer, grad_cam, overlay, save_overlays
from .metrics import (BinaryMetrics, auc_ci, binary_metrics, bootstrap_aucs, delong_variance, paired_delong,
                      roc_curve_points, wilson_ci)
from .split import SPLITS, check_no_leakage, patient_split, split_summary

__all__ = ["BinaryMetrics", "binary_metrics", "auc_ci", "wilson_ci", "roc_curve_points", "paired_delong",
           "bootstrap_aucs", "delong_variance", "patient_split", "check_no_leakage", "split_summary", "SPLITS",
           "grad_cam", "overlay", "save_overlays", "default_target_layer"]

# C2's names: imported on first access (torchvision's import is slow), see the docstring.
_LAZY = {"make_classifier": "model", "load_weights": "model", "TrainConfig": "train", "TrainResult": "train",
         "train_classifier": "train", "predict": "train", "load_classifier": "train",
         "items_from_source": "retina_fast.data.items", "augment_batch": "train",
         "Item": "retina_fast.data.items", "read_pool": "retina_fast.data.pool", "run_study": "study",
         "report_study": "study", "compare_modes": "study", "StudyResult": "study",
         "train_on_pool": "labelling", "label_pool": "labelling", "choose_thresholds": "labelling",
         "demo_stage": "stage", "make_phantom_pool": "stage"}
__all__ += list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module = _LAZY[name]
        return getattr(importlib.import_module(module if "." in module else f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
