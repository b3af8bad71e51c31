"""`retina-fast demo` runs every stage end to end, each stage reading what the one before wrote."""
import csv
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One quick demo run of the data, gan, vessels, turing and classify stages: (out folder, stdout)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    proc = subprocess.run([sys.executable, "-m", "retina_fast.cli", "demo", "--stages", "data", "gan", "vessels",
                           "turing", "classify", "--quick", "--patients", "6", "--out", str(out), "--device", "cpu"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout


def _generated(text, key):
    """The folder of generated images the gan stage reports under `key` ('generated', 'generated_erm')."""
    (folder,) = re.findall(rf"^{key}: \d+ images of .* -> (.+)$", text, flags=re.M)
    return folder


def test_demo_data_and_vessels_stages(demo):
    out, text = demo
    # every outcome row shows the prepared count beside the count the cohort's truth expects
    rows = re.findall(r"^\| (accepted|excluded: \w+)[^|]*\| (\d+) \| (\d+) \|$", text, flags=re.M)
    assert len(rows) >= 8, text
    assert all(got == want for _, got, want in rows), rows
    assert "| vessel amount (px) |" in text and "| zone-B SNR |" in text, text
    assert (out / "prepared" / "manifest.csv").exists() and (out / "vessel_metrics.csv").exists()


def test_demo_gan_stage(demo):
    out, text = demo
    gan = out / "gan"
    for path in ("samples.png", "erm_samples.png", "train/fid.csv", "train/fid.png", "train/best.pt", "erm/best.pt"):
        assert (gan / path).exists(), path
    fid_rows = (gan / "train" / "fid.csv").read_text().strip().splitlines()
    assert fid_rows[0].startswith("kimg,fid,") and len(fid_rows) >= 3, fid_rows  # an FID point per interval
    # the realism audit's headline at each FID, and its table on the trained generator's images
    assert "realism_pass,realism_vessel_d,realism_snr_d" in fid_rows[0], fid_rows[0]
    assert (gan / "realism" / "realism.md").exists() and "Realism audit" in text, text
    # the generated images: written once, by the trained and the ERM fine-tuned generators
    for key, ckpt in (("generated", "train"), ("generated_erm", "erm")):
        folder = _generated(text, key)
        assert folder.startswith(str(gan / "generated")) and os.path.isdir(folder)
        assert os.listdir(folder) and all(re.fullmatch(r"seed\d{6}\.png", f) for f in os.listdir(folder))


def test_later_stages_read_the_generated_images(demo):
    """Vessels, Turing test and classifier study take the very files the demo's generators wrote."""
    out, text = demo
    generated, generated_erm = _generated(text, "generated"), _generated(text, "generated_erm")
    names = sorted(os.listdir(generated))
    # vessels: the synthetic CSV measured the generated folder, image by image
    with open(out / "vessel_metrics_synthetic.csv", newline="") as f:
        assert sorted(r["image"] for r in csv.DictReader(f)) == names
    assert f"measured from {generated} " in text, text
    # Turing test: the simulated export's synthetic sources are the generated files
    with open(out / "turing" / "simulated_export.csv", newline="") as f:
        sources = {r["source"] for r in csv.DictReader(f) if r["truth"] == "synthetic"}
    assert sources == set(names)
    assert "SIMULATED readers" in text and "| retina >=5y |" in text, text
    assert (out / "turing" / "figure4.png").exists() and (out / "turing" / "gee.csv").exists()
    # classifier study: its synthetic ERM images are the ERM generator's files
    study = out / "classify" / "study"
    with open(study / "synthetic.csv", newline="") as f:
        used = list(csv.DictReader(f))
    assert used and all(r["root"] == generated_erm and os.path.isfile(os.path.join(r["root"], r["name"]))
                        for r in used)
    # the paper's Table 4 shape: the 1:0.1 row trained on real images only and topped up with synthetic ERM
    assert "| 1:0.1 | real only |" in text and "+ synthetic ERM" in text, text
    assert (study / "table.md").exists() and (study / "roc.png").exists()
    assert len(list(study.glob("runs/*/gradcam/*.png"))) >= 2
