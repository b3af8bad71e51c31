"""`retina-fast demo` runs the data, vessel and Turing-test stages end to end."""
import re
import subprocess
import sys


def test_demo_data_and_vessels_stages(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "retina_fast.cli", "demo", "--stages", "data", "vessels", "turing",
                           "--quick", "--patients", "6", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = proc.stdout
    # every outcome row shows the prepared count beside the count the cohort's truth expects
    rows = re.findall(r"^\| (accepted|excluded: \w+)[^|]*\| (\d+) \| (\d+) \|$", text, flags=re.M)
    assert len(rows) >= 8, text
    assert all(got == want for _, got, want in rows), rows
    assert "| vessel amount (px) |" in text and "| zone-B SNR |" in text, text
    assert (out / "prepared" / "manifest.csv").exists() and (out / "vessel_metrics.csv").exists()
    assert "SIMULATED readers" in text and "| retina >=5y |" in text, text
    assert (out / "turing" / "figure4.png").exists() and (out / "turing" / "gee.csv").exists()


def test_demo_gan_and_classify_stages(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "retina_fast.cli", "demo", "--stages", "data", "gan", "classify",
                           "--quick", "--patients", "6", "--out", str(out), "--device", "cpu"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = proc.stdout
    gan = out / "gan"
    for path in ("samples.png", "erm_samples.png", "train/fid.csv", "train/fid.png", "train/best.pt", "erm/best.pt"):
        assert (gan / path).exists(), path
    fid_rows = (gan / "train" / "fid.csv").read_text().strip().splitlines()
    assert fid_rows[0] == "kimg,fid,extractor" and len(fid_rows) >= 3, fid_rows  # an FID point per interval
    # the paper's Table 4 shape: the 1:0.1 row trained on real images only and topped up with synthetic ERM
    assert "| 1:0.1 | real only |" in text and "+ synthetic ERM" in text, text
    study = out / "classify" / "study"
    assert (study / "table.md").exists() and (study / "roc.png").exists()
    assert len(list(study.glob("runs/*/gradcam/*.png"))) >= 2
