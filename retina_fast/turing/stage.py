"""Demo stage of `retina-fast demo`: the image Turing test's analysis on a simulated reader panel.

The demo has no human readers: `demo_tables` simulates the paper's panel (12/14/14 readers, planted
group effects, `retina_fast.turing.simulate`) on the prepared images against the images the demo's
generator wrote, and analyses the simulated export exactly as a real one (Tables 2-3, Figure 4).
"""
import os

__all__ = ["demo_stage", "demo_tables"]


def demo_tables(real_images, synthetic_images, out_dir=None, *, seed=0, verbose=True, **kwargs):
    """Simulate the paper's reader panel on the given images, analyse it, print the tables.

    Parameters
    ----------
    real_images, synthetic_images : str, os.PathLike or sequence
        As ``retina_fast.turing.simulate.simulate_panel_on_images``.
    out_dir : str or os.PathLike, optional
        Write the simulated export (``simulated_export.csv``) and every analysis output here.
    seed : int
        Seed of the simulation.
    verbose : bool
        Print the Markdown tables (and say that the readers are simulated).
    **kwargs
        Passed to ``simulate_readers``.

    Returns
    -------
    TuringAnalysis
        The result of ``retina_fast.turing.analyze.analyze`` on the simulated export.
    """
    from .analyze import analyze
    from .simulate import simulate_panel_on_images

    path = None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "simulated_export.csv")
    export = simulate_panel_on_images(real_images, synthetic_images, seed=seed, path=path, **kwargs)
    result = analyze(export, out_dir=out_dir)
    if verbose:
        print("## Image Turing test on SIMULATED readers (demo: known planted effects, not real answers)\n")
        print(result.markdown)
    return result


def demo_stage(out, dataset, synthetic, *, seed=0):
    """The simulated panel on the prepared images (`dataset`) vs the generated ones (`synthetic`).

    Parameters
    ----------
    out : path
        Demo folder; the analysis goes to ``out/turing``.
    dataset : path
        Prepared dataset (its images are the real arm).
    synthetic : path or SyntheticSource
        The demo generator's images (`retina_fast.synthetic.SyntheticSource` or its folder).
    seed : int

    Returns
    -------
    TuringAnalysis
    """
    from retina_fast.data.dataset import list_images
    from retina_fast.synthetic import SyntheticSource

    print("\n## 5. Image Turing test: reader panel SIMULATED with planted group effects\n")
    real = [os.path.join(dataset, name) for name, _ in list_images(dataset)]
    source = SyntheticSource.from_arg(synthetic, name="synthetic")
    fake = source.resolve(os.path.join(out, "turing"))
    print(f"real: {len(real)} prepared images; synthetic: {len(fake)} images of {source.describe()}\n")
    return demo_tables(real, fake, out_dir=os.path.join(out, "turing"), seed=seed)
