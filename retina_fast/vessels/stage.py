"""Demo stage of `retina-fast demo`: vessel amount and zone-B SNR, normal vs ERM and real vs synthetic."""
import os

__all__ = ["demo_stage"]


def _compare_groups(a_rows, b_rows, columns, groups):
    """`compare` of each (column, title, image size) between two row lists; prints the table."""
    from .compare import compare, comparison_table

    results = []
    for col, title, image_size in columns:
        a = [r[col] for r in a_rows]
        b = [r[col] for r in b_rows]
        try:
            results.append(compare(a, b, name=title, image_size=image_size))
        except ValueError as e:
            print(f"{title}: not compared ({e})")
    if results:
        print(comparison_table(results, groups=groups))
    return results


def demo_stage(out, dataset, synthetic, size=1024, workers=2):
    """Measure the prepared images and the generated ones; compare normal vs ERM and real vs synthetic.

    Parameters
    ----------
    out : path
        Demo folder: ``vessel_metrics.csv`` (prepared images) and ``vessel_metrics_synthetic.csv``
        (the generated images, measured at their own size) are written there.
    dataset : path
        Prepared dataset.
    synthetic : path or SyntheticSource
        The demo generator's images.
    size : int
        Side of the prepared images, px (for the vessel amount's percentage of the image).
    workers : int

    Returns
    -------
    dict
        'normal_vs_erm' and 'real_vs_synthetic': lists of comparison results; 'real_csv', 'synthetic_csv'.
    """
    from retina_fast.data.dataset import list_images
    from retina_fast.synthetic import SyntheticSource

    from .batch import measure_folder

    print("\n## 4. Vessels: Hessian segmentation, vessel amount and zone-B SNR of the prepared images\n")
    real_csv = os.path.join(out, "vessel_metrics.csv")
    rows = measure_folder(dataset, real_csv, workers=workers)
    labels = dict(list_images(dataset))
    groups = {0: [], 1: []}
    for row in rows:
        if not row["reason"] and labels.get(row["image"]) in groups:
            groups[labels[row["image"]]].append(row)
    bad = [r for r in rows if r["reason"]]
    print(f"{len(rows)} images measured ({len(bad)} with a reason), normal {len(groups[0])}, "
          f"ERM {len(groups[1])}; per-image CSV: {real_csv}\n")
    print("Normal vs ERM phantoms, in the table of the real-vs-synthetic study (`retina-fast vessels compare`):\n")
    by_label = _compare_groups(groups[0], groups[1], (("vessel_pixels", "vessel amount (px)", size * size),
                                                      ("snr", "zone-B SNR", None)), ("normal", "ERM"))

    source = SyntheticSource.from_arg(synthetic, name="synthetic")
    synthetic_csv = os.path.join(out, "vessel_metrics_synthetic.csv")
    folder = os.path.dirname(source.resolve(os.path.join(out, "synthetic"))[0])
    syn_rows = measure_folder(folder, synthetic_csv, workers=workers)
    good = [r for r in syn_rows if not r["reason"]]
    print(f"\nThe demo generator's images ({source.describe()}): {len(syn_rows)} measured from {folder} "
          f"({len(syn_rows) - len(good)} with a reason); per-image CSV: {synthetic_csv}\n")
    # sizes differ (the tiny generator draws 32 px images): the vessel amount as a fraction of the FOV
    print("Real (prepared) vs synthetic (`retina-fast vessels compare` on the two CSVs):\n")
    by_source = _compare_groups([r for r in rows if not r["reason"]], good,
                                (("vessel_fraction", "vessel fraction of the FOV", None),
                                 ("snr", "zone-B SNR", None)), ("real", "synthetic"))
    return {"normal_vs_erm": by_label, "real_vs_synthetic": by_source, "real_csv": real_csv,
            "synthetic_csv": synthetic_csv}
