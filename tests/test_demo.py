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
