"""Several distribution metrics from one feature pass: FID, KID, precision/recall, density/coverage.

    metrics = parse_metrics("fid,kid,pr")
    real = dataset_stats("OUT/dataset.zip", net, keep_features=needs_features(metrics))
    fake = generator_stats(G_ema, net, num_images=50000, keep_features=needs_features(metrics))
    print(evaluate_metrics(real, fake, metrics))
    # {'fid': ..., 'kid': ..., 'precision': ..., 'recall': ...}

FID comes from the statistics' mean and covariance exactly as `retina_fast.metrics.fid.fid`; the
others from the kept features (`FeatureStats(keep_features=True)`) of the same extractor.
"""
from .fid import FeatureStats, fid
from .kid import kid
from .precision_recall import prdc

# Metric name -> the columns it yields, in table order.
METRICS = {"fid": ("fid",), "kid": ("kid",), "pr": ("precision", "recall"), "dc": ("density", "coverage")}


def parse_metrics(spec, name="metrics"):
    """Metric names from ``'fid,kid,pr'`` (or a sequence of names), checked, in `METRICS` order.

    Raises ValueError naming `name` for an unknown or empty selection.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [str(s).strip().lower() for s in items if str(s).strip()]
    unknown = [s for s in items if s not in METRICS]
    if unknown or not items:
        raise ValueError(f"{name} must be a comma-separated list of {', '.join(METRICS)}; got {spec!r}")
    return tuple(m for m in METRICS if m in items)


def metric_columns(metrics):
    """Column names of the selected metrics, e.g. ('fid', 'kid', 'precision', 'recall')."""
    return tuple(c for m in parse_metrics(metrics) for c in METRICS[m])


def needs_features(metrics):
    """Whether the selection needs the feature vectors themselves (anything but FID does)."""
    return any(m != "fid" for m in parse_metrics(metrics))


def evaluate_metrics(real, fake, metrics=("fid",), *, k=3, kid_subsets=100, kid_subset_size=1000, seed=0,
                     device="cpu"):
    """The selected metrics of `fake` against `real`.

    Parameters
    ----------
    real, fake : FeatureStats
        Statistics of one extractor; with their features kept (``keep_features=True``) for
        anything but FID.
    metrics : str or sequence of str
        Names of `METRICS`: 'fid', 'kid', 'pr' (precision and recall), 'dc' (density and coverage).
    k : int
        Neighbourhood size of precision/recall and density/coverage (pr50k3_full: 3).
    kid_subsets, kid_subset_size : int
        KID subsets and their largest size (kid50k_full: 100 and 1000).
    seed : int
        Seed of KID's subset draws.
    device : str or torch.device
        Where KID's kernels and the nearest-neighbour distances are computed.

    Returns
    -------
    dict
        Column name (`metric_columns`) -> float, in table order.
    """
    metrics = parse_metrics(metrics)
    for name, s in (("real", real), ("fake", fake)):
        if not isinstance(s, FeatureStats):
            raise TypeError(f"{name} must be FeatureStats, got {type(s).__name__}")
        if needs_features(metrics) and not s.has_features:
            raise ValueError(f"{name}: {', '.join(m for m in metrics if m != 'fid')} need the features: "
                             "compute the statistics with keep_features=True")
    out = {}
    if "fid" in metrics:
        out["fid"] = fid(real, fake)
    if "kid" in metrics:
        out["kid"] = kid(real.features, fake.features, num_subsets=kid_subsets, max_subset_size=kid_subset_size,
                         seed=seed, device=device)
    if "pr" in metrics or "dc" in metrics:
        values = prdc(real.features, fake.features, k, device=device)
        for m in ("pr", "dc"):
            if m in metrics:
                out.update({c: values[c] for c in METRICS[m]})
    return out
