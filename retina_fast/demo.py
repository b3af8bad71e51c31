"""`retina-fast demo`: every stage, end to end, on data generated here, each stage feeding the next.

1. ops: native-vs-reference self-check and timing table (the StyleGAN kernels; `ops.stage`);
2. data: a phantom DICOM cohort (bad files included) -> `prepare` -> accepted/excluded counts
   (`data.stage`);
3. gan: the tiny StyleGAN2-ADA preset trained briefly on the prepared images (sample grid, FID
   curve), fine-tuned on their ERM images (the paper's transfer learning, lr 1e-4), then both
   generators' images written once through `retina_fast.synthetic.SyntheticSource`, and the realism
   and privacy audits of those images (`gan.stage`);
4. vessels: vessel amount and zone-B SNR of the prepared images (normal vs ERM) and of the generated
   ones (real vs synthetic), in the paper's table (`vessels.stage`);
5. turing: a simulated reader panel (the paper's 12/14/14 readers) judging the prepared images
   against the generated ones, analysed like the paper (Tables 2-3, Figure 4; `turing.stage`);
6. classify: a tiny ERM-vs-normal imbalance study (real only, + synthetic ERM from the fine-tuned
   generator, oversampling, class weights) with its Table-4-shaped table, ROC plot and Grad-CAM
   overlays (`classify.stage`).

Stages 4-6 read the images the demo's generator wrote, so asking for any of them runs the gan
stage too. The tiny generator of a short CPU run is far from realistic, and the tables say what
its images are; only real data is stood in for by phantoms (the cohort, and the classifier's
patient pool, which a demo cohort is too small to fill).
"""
import os

LATER_STAGES = ("vessels", "turing", "classify")   # the stages that read the generated images


def run_demo(args):
    """Run the stages the arguments ask for; return the process exit code."""
    from .data.stage import demo_stage as data_stage
    from .ops.stage import demo_stage as ops_stage

    failed = []
    stages = set(args.stages)
    if "ops" in stages:
        failed = ops_stage(args.device, args.quick, args.repeats)
    if stages & {"data", "gan", *LATER_STAGES}:
        out = os.path.abspath(args.out)
        os.makedirs(out, exist_ok=True)
        frame, size = ((768, 1024), 512) if args.quick else ((1536, 2048), 1024)
        res = data_stage(out, n_patients=args.patients, frame_size=frame, size=size)
        if "gan" in stages or stages & set(LATER_STAGES):
            if "gan" not in stages:
                print("\n(the gan stage runs too: the later stages read the images its generators write)")
            gan = gan_stage(out, res.dataset, quick=args.quick, device=args.device)
            later_stages(out, res.dataset, gan, stages, size=size, quick=args.quick, device=args.device)
    if failed:
        print(f"\nSELF-CHECK FAILED: {failed}")
        return 1
    return 0


def gan_stage(out, dataset, quick=False, device="auto"):
    """Train the tiny preset, fine-tune on ERM, generate the demo's synthetic images; return the paths."""
    from .gan.stage import demo_stage

    print("\n## 3. StyleGAN2-ADA: tiny preset on the prepared phantoms, then ERM transfer learning\n")
    return demo_stage(out, dataset, None, quick=quick, device=device)


def later_stages(out, dataset, gan, stages, *, size, quick=False, device="auto"):
    """Vessels, Turing test and classifier study on the generated images of `gan` (`gan_stage`'s paths)."""
    if "vessels" in stages:
        from .vessels.stage import demo_stage
        demo_stage(out, dataset, gan["generated"], size=size)
    if "turing" in stages:
        from .turing.stage import demo_stage
        demo_stage(out, dataset, gan["generated"])
    if "classify" in stages:
        from .classify.stage import demo_stage
        print("\n## 6. Utility: ERM-vs-normal classifiers under class imbalance (phantoms)\n")
        demo_stage(out, os.path.dirname(dataset), synthetic=gan["generated_erm"], quick=quick, device=device)
