"""Bad arguments over the command line's sub-commands: one line naming the argument, exit status 2,
nothing left behind.

Each row calls `retina_fast.cli.main` as a user would; the command stops before it creates its output,
so the row's output path must not exist afterwards. The loaders' checks of file contents (hostile
snapshots, corrupt .pt files) and the Turing test's commands are tested beside those loaders.
"""
import numpy as np
import pytest
from PIL import Image

from retina_fast.cli import main

# (row id, argv with {in} for the inputs folder and {out} for the output path, text the error line names)
ROWS = [
    # prepare
    ("prepare-size-0", ["prepare", "{in}/src", "{out}", "--size", "0"], "--size"),
    ("prepare-size-negative", ["prepare", "{in}/src", "{out}", "--size", "-5"], "--size"),
    ("prepare-size-text", ["prepare", "{in}/src", "{out}", "--size", "big"], "--size"),
    ("prepare-workers-0", ["prepare", "{in}/src", "{out}", "--workers", "0"], "--workers"),
    ("prepare-png-level", ["prepare", "{in}/src", "{out}", "--png-compress-level", "10"], "--png-compress-level"),
    ("prepare-src-missing", ["prepare", "{in}/nope", "{out}"], "nope"),
    ("prepare-src-empty", ["prepare", "{in}/empty", "{out}"], "no source files"),
    ("prepare-labels-missing", ["prepare", "{in}/src", "{out}", "--labels", "{in}/nope.csv"], "labels"),
    ("prepare-labels-columns", ["prepare", "{in}/src", "{out}", "--labels", "{in}/labels_bad.csv"], "labels_bad.csv"),
    ("prepare-labels-value", ["prepare", "{in}/src", "{out}", "--labels", "{in}/labels_value.csv"],
     "labels_value.csv"),
    ("prepare-salt-file-missing", ["prepare", "{in}/src", "{out}", "--salt-file", "{in}/nope.txt"], "--salt-file"),
    # vessels
    ("measure-limit-negative", ["vessels", "measure", "{in}/images", "--out", "{out}", "--limit", "-1"], "--limit"),
    ("measure-limit-0", ["vessels", "measure", "{in}/images", "--out", "{out}", "--limit", "0"], "--limit"),
    ("measure-workers-0", ["vessels", "measure", "{in}/images", "--out", "{out}", "--workers", "0"], "--workers"),
    ("measure-dir-missing", ["vessels", "measure", "{in}/nope", "--out", "{out}"], "nope"),
    ("measure-dir-empty", ["vessels", "measure", "{in}/empty", "--out", "{out}"], "no images"),
    ("measure-fpn-no-checkpoint", ["vessels", "measure", "{in}/images", "--out", "{out}", "--method", "fpn"],
     "--checkpoint"),
    ("measure-checkpoint-missing", ["vessels", "measure", "{in}/images", "--out", "{out}", "--method", "fpn",
                                    "--checkpoint", "{in}/nope.pt"], "--checkpoint"),
    ("compare-csv-missing", ["vessels", "compare", "{in}/nope.csv", "{in}/metrics.csv", "--out", "{out}"], "nope.csv"),
    ("compare-image-size-0", ["vessels", "compare", "{in}/metrics.csv", "{in}/metrics.csv", "--out", "{out}",
                              "--image-size", "0"], "--image-size"),
    ("compare-image-size-nan", ["vessels", "compare", "{in}/metrics.csv", "{in}/metrics.csv", "--out", "{out}",
                                "--image-size", "nan"], "--image-size"),
    ("compare-nothing-comparable", ["vessels", "compare", "{in}/metrics.csv", "{in}/metrics.csv", "--out", "{out}"],
     "nothing to compare"),
    ("train-seg-epochs-0", ["vessels", "train-seg", "--out", "{out}", "--epochs", "0"], "--epochs"),
    ("train-seg-batch-0", ["vessels", "train-seg", "--out", "{out}", "--batch-size", "0"], "--batch-size"),
    ("train-seg-lr-negative", ["vessels", "train-seg", "--out", "{out}", "--lr", "-1"], "--lr"),
    ("train-seg-phantoms-0", ["vessels", "train-seg", "--out", "{out}", "--phantoms", "0"], "--phantoms"),
    ("train-seg-crop-0", ["vessels", "train-seg", "--out", "{out}", "--crop", "0"], "--crop"),
    ("train-seg-crop-not-32", ["vessels", "train-seg", "--out", "{out}", "--crop", "100"], "crop"),
    ("train-seg-threads-0", ["vessels", "train-seg", "--out", "{out}", "--threads", "0"], "--threads"),
    ("train-seg-max-steps-0", ["vessels", "train-seg", "--out", "{out}", "--max-steps", "0"], "--max-steps"),
    ("train-seg-eval-negative", ["vessels", "train-seg", "--out", "{out}", "--eval-phantoms", "-1"],
     "--eval-phantoms"),
    ("train-seg-data-missing", ["vessels", "train-seg", "--out", "{out}", "--data", "{in}/nope"], "nope"),
    # fid
    ("fid-batch-0", ["fid", "--real", "{in}/images", "--fake", "{in}/images", "--inception", "{in}/nope.pth",
                     "--cache-dir", "{out}", "--batch", "0"], "--batch"),
    ("fid-num-0", ["fid", "--real", "{in}/images", "--checkpoint", "{in}/nope.pt", "--inception", "{in}/nope.pth",
                   "--cache-dir", "{out}", "--num", "0"], "--num"),
    ("fid-max-items-0", ["fid", "--real", "{in}/images", "--fake", "{in}/images", "--inception", "{in}/nope.pth",
                         "--cache-dir", "{out}", "--max-items", "0"], "--max-items"),
    ("fid-workers-negative", ["fid", "--real", "{in}/images", "--fake", "{in}/images", "--inception",
                              "{in}/nope.pth", "--cache-dir", "{out}", "--workers", "-1"], "--workers"),
    ("fid-trunc-inf", ["fid", "--real", "{in}/images", "--fake", "{in}/images", "--inception", "{in}/nope.pth",
                       "--cache-dir", "{out}", "--trunc", "inf"], "--trunc"),
    ("fid-seed-negative", ["fid", "--real", "{in}/images", "--fake", "{in}/images", "--inception", "{in}/nope.pth",
                           "--cache-dir", "{out}", "--seed", "-1"], "--seed"),
    ("fid-neither-fake-nor-checkpoint", ["fid", "--real", "{in}/images", "--inception", "{in}/nope.pth",
                                         "--cache-dir", "{out}"], "--fake"),
    ("fid-real-missing", ["fid", "--real", "{in}/nope", "--fake", "{in}/images", "--inception", "{in}/nope.pth",
                          "--cache-dir", "{out}"], "--real"),
    ("fid-inception-missing", ["fid", "--real", "{in}/images", "--fake", "{in}/images", "--inception",
                               "{in}/nope.pth", "--cache-dir", "{out}"], "--inception"),
    # classify
    ("classify-train-epochs-0", ["classify", "train", "--data", "{in}/images", "--out", "{out}", "--epochs", "0"],
     "--epochs"),
    ("classify-train-batch-0", ["classify", "train", "--data", "{in}/images", "--out", "{out}", "--batch", "0"],
     "--batch"),
    ("classify-train-lr-0", ["classify", "train", "--data", "{in}/images", "--out", "{out}", "--lr", "0"], "--lr"),
    ("classify-train-size-8", ["classify", "train", "--data", "{in}/images", "--out", "{out}", "--size", "8"],
     "--size"),
    ("classify-train-patience-0", ["classify", "train", "--data", "{in}/images", "--out", "{out}",
                                   "--patience", "0"], "--patience"),
    ("classify-train-workers-negative", ["classify", "train", "--data", "{in}/images", "--out", "{out}",
                                         "--workers", "-2"], "--workers"),
    ("classify-train-data-missing", ["classify", "train", "--data", "{in}/nope", "--out", "{out}"], "--data"),
    ("classify-train-labels-missing", ["classify", "train", "--data", "{in}/images", "--out", "{out}",
                                       "--labels-csv", "{in}/nope.csv"], "--labels-csv"),
    ("classify-train-weights-missing", ["classify", "train", "--data", "{in}/images", "--out", "{out}",
                                        "--weights", "{in}/nope.pth"], "--weights"),
    ("classify-predict-threshold", ["classify", "predict", "--checkpoint", "{in}/nope.pt", "--images", "{in}/images",
                                    "--out", "{out}", "--threshold", "1.5"], "--threshold"),
    ("classify-predict-batch-0", ["classify", "predict", "--checkpoint", "{in}/nope.pt", "--images", "{in}/images",
                                  "--out", "{out}", "--batch", "0"], "--batch"),
    ("classify-predict-checkpoint-missing", ["classify", "predict", "--checkpoint", "{in}/nope.pt", "--images",
                                             "{in}/images", "--out", "{out}"], "--checkpoint"),
    ("classify-predict-images-missing", ["classify", "predict", "--checkpoint", "{in}/metrics.csv", "--images",
                                         "{in}/nope", "--out", "{out}"], "--images"),
    ("classify-label-sensitivity-0", ["classify", "label", "--labelled", "{in}/images", "--unlabelled", "{in}/images",
                                      "--out", "{out}", "--sensitivities", "0"], "--sensitivities"),
    ("classify-label-sensitivity-above-1", ["classify", "label", "--labelled", "{in}/images", "--unlabelled",
                                            "{in}/images", "--out", "{out}", "--sensitivities", "0.9", "1.2"],
     "--sensitivities"),
    ("classify-label-unlabelled-missing", ["classify", "label", "--labelled", "{in}/images", "--unlabelled",
                                           "{in}/nope", "--out", "{out}"], "--unlabelled"),
    ("classify-study-seeds-negative", ["classify", "study", "--pool", "{in}/images", "--out", "{out}",
                                       "--seeds", "0", "-1"], "--seeds"),
    ("classify-study-n-cam-negative", ["classify", "study", "--pool", "{in}/images", "--out", "{out}",
                                       "--n-cam", "-1"], "--n-cam"),
    ("classify-study-threshold", ["classify", "study", "--pool", "{in}/images", "--out", "{out}",
                                  "--threshold", "2"], "--threshold"),
    ("classify-study-psi-nan", ["classify", "study", "--pool", "{in}/images", "--out", "{out}",
                                "--truncation-psi", "nan"], "--truncation-psi"),
    ("classify-study-pool-missing", ["classify", "study", "--pool", "{in}/nope", "--out", "{out}"], "--pool"),
    ("classify-study-synthetic-missing", ["classify", "study", "--pool", "{in}/images", "--out", "{out}",
                                          "--synthetic", "{in}/nope"], "--synthetic"),
    # GAN: numbers and missing paths (the snapshot loaders' content checks are tested beside them)
    *[(f"train-{flag[2:]}-{value}", ["train", "--data", "{in}/images", "--outdir", "{out}", flag, value], flag)
      for flag, value in (("--batch", "0"), ("--batch-gpu", "0"), ("--kimg", "0"), ("--lr", "0"), ("--lr", "nan"),
                          ("--gamma", "-1"), ("--p", "1.5"), ("--target", "2"), ("--ada-kimg", "0"),
                          ("--tick", "0"), ("--snap", "-1"), ("--img-snap", "-1"), ("--fid-every", "-2"),
                          ("--fid-images", "0"), ("--fid-real-images", "0"), ("--freeze-d", "-1"),
                          ("--seed", "-1"), ("--workers", "-1"), ("--keep", "0"))],
    ("train-data-missing", ["train", "--data", "{in}/nope", "--outdir", "{out}"], "nope"),
    ("finetune-lr-0", ["finetune", "--resume", "{in}/nope.pt", "--data", "{in}/images", "--outdir", "{out}",
                       "--lr", "0"], "--lr"),
    ("finetune-resume-missing", ["finetune", "--resume", "{in}/nope.pt", "--data", "{in}/images",
                                 "--outdir", "{out}"], "nope.pt"),
    ("generate-batch-0", ["generate", "--network", "{in}/nope.pt", "--seeds", "0-3", "--outdir", "{out}",
                          "--batch", "0"], "--batch"),
    ("generate-trunc-nan", ["generate", "--network", "{in}/nope.pt", "--seeds", "0-3", "--outdir", "{out}",
                            "--trunc", "nan"], "--trunc"),
    ("generate-trunc-cutoff-negative", ["generate", "--network", "{in}/nope.pt", "--seeds", "0-3", "--outdir",
                                        "{out}", "--trunc-cutoff", "-1"], "--trunc-cutoff"),
    ("generate-class-negative", ["generate", "--network", "{in}/nope.pt", "--seeds", "0-3", "--outdir", "{out}",
                                 "--class", "-1"], "--class"),
    ("generate-seeds-bad", ["generate", "--network", "{in}/nope.pt", "--seeds", "3-x", "--outdir", "{out}"], "seeds"),
    ("generate-network-missing", ["generate", "--network", "{in}/nope.pt", "--seeds", "0-3", "--outdir", "{out}"],
     "nope.pt"),
    # demo
    ("demo-repeats-negative", ["demo", "--out", "{out}", "--stages", "ops", "--repeats", "-1"], "--repeats"),
    ("demo-repeats-0", ["demo", "--out", "{out}", "--repeats", "0"], "--repeats"),
    ("demo-patients-0", ["demo", "--out", "{out}", "--patients", "0"], "--patients"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder of inputs the rows point to: sources, images, an empty folder, bad CSVs."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "src").mkdir()
    (d / "src" / "a.png").write_bytes(b"a source file (never decoded: the command stops before)")
    (d / "empty").mkdir()
    (d / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / "images" / f"{i}.png")
    (d / "labels_bad.csv").write_text("name,class\na.png,1\n")
    (d / "labels_value.csv").write_text("file,label\na.png,glaucoma\n")
    (d / "metrics.csv").write_text("image,vessel_pixels,snr\na.png,,\nb.png,,\n")
    return d


@pytest.mark.parametrize("argv,names", [pytest.param(argv, names, id=rid) for rid, argv, names in ROWS])
def test_bad_argument_is_one_line_exit_2_nothing_left(argv, names, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RETINA_FAST_TRACEBACK", raising=False)
    out = tmp_path / "out"
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in argv]
    before = sorted(p.name for p in inputs.rglob("*"))
    with pytest.raises(SystemExit) as e:
        main(argv)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert e.value.code == 2, captured.err
    assert "Traceback" not in captured.err
    assert len(errors) == 1, captured.err
    assert errors[0].startswith("retina-fast ") and names in errors[0], errors[0]
    assert not out.exists(), f"{argv[0]} left {out} behind"
    assert sorted(p.name for p in inputs.rglob("*")) == before  # nor anything beside its inputs


def test_argument_types_accept_their_boundaries():
    import argparse

    from retina_fast.cli_types import (
        finite_float,
        float_range,
        int_range,
        nonnegative_int,
        optional,
        positive_float,
        positive_int,
        probability,
    )

    assert positive_int("1") == 1 and nonnegative_int("0") == 0 and int_range(0, 9)("9") == 9
    assert probability("0") == 0.0 and probability("1") == 1.0 and positive_float("1e-9") == 1e-9
    assert finite_float("-2.5") == -2.5 and optional(nonnegative_int)("None") is None
    assert optional(nonnegative_int)("3") == 3
    for kind, text in ((positive_int, "0"), (positive_int, "1.5"), (int_range(0, 9), "-1"), (probability, "1.01"),
                       (positive_float, "0"), (finite_float, "-inf"), (finite_float, "nan"),
                       (float_range(0, 1, min_open=True, max_open=True), "1"), (optional(nonnegative_int), "-1")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"got '{text}'"):
            kind(text)
