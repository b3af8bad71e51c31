"""Turing-test analysis: planted-effect recovery on simulated panels, agreement with hand-written
statsmodels GEE calls, hand-computed per-reader metrics, bad input, atomic outputs, CLI."""
import argparse
import json
import os

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from retina_fast.cli import main as cli_main
from retina_fast.turing import analyze as ta
from retina_fast.turing.cli import add_analyze_parser
from retina_fast.turing.simulate import (
    DEFAULT_EFFECTS,
    GroupEffect,
    simulate_panel_on_images,
    simulate_readers,
)
from retina_fast.turing.stage import demo_tables

OUTPUTS = ("per_reader.csv", "group_summary.csv", "group_summary.md", "gee.csv", "gee.md", "figure4.png",
           "top_images.md")


@pytest.fixture(scope="module")
def paper_panel():
    """The paper's panel size (12 / 14 / 14 readers, 50 + 50 images), default effects."""
    return simulate_readers(seed=3)


def _tiny_export():
    # reader 1 (retina, 4 y): real->real, real->synthetic, synth->synthetic, synth->synthetic
    # reader 2 (resident, 2 y): real->real, real->real, synth->real, synth->synthetic
    # reader 3 (retina, 5 y): real->synthetic, real->synthetic, synth->real, synth->real
    truth = ["real", "real", "synthetic", "synthetic"]
    answers = {1: ["real", "synthetic", "synthetic", "synthetic"],
               2: ["real", "real", "real", "synthetic"],
               3: ["synthetic", "synthetic", "real", "real"]}
    prof = {1: ("retina", 4), 2: ("resident", 2), 3: ("retina", 5)}
    ms = {1: [1000, 2000, 3000, 6000], 2: [500, 500, 1500, 2500], 3: [4000, 4000, 4000, 4000]}
    rows = []
    for r, ans in answers.items():
        for pos, (t, a) in enumerate(zip(truth, ans)):
            rows.append({"study_id": 1, "reader_id": r, "reader_name": f"r{r}", "specialty": prof[r][0],
                         "years": prof[r][1], "position": pos, "image_id": f"img{pos}", "truth": t, "answer": a,
                         "correct": t == a, "server_ms": ms[r][pos], "client_ms": ms[r][pos] - 10,
                         "answered_at": "2026-01-01T00:00:00Z", "source": f"file{pos}.png"})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- planted truth

def test_gee_recovers_planted_group_effects():
    """300 readers: every marginal log-OR (and time difference) within 3 SE of the truth, inside its CI."""
    effects = dict(DEFAULT_EFFECTS, **{"retina >=5y": GroupEffect(0.6, 1.0), "non_retina <5y": GroupEffect(0, 0)})
    panel = {g: 60 for g in DEFAULT_EFFECTS}
    export, truth = simulate_readers(panel, effects=effects, seed=0, return_truth=True)
    gee, estimates = ta.gee_tables(ta.load_export(export))
    m = gee.merge(truth, on=["grouping", "group", "metric"], validate="many_to_one")
    assert len(m) == len(gee) == 2 * 4 * (2 + 4)
    dev = (m["estimate"] - m["planted"]) / m["se"]
    assert dev.abs().max() < 3.0, m.assign(dev=dev)[["grouping", "cov_struct", "metric", "group", "planted",
                                                      "estimate", "dev"]]
    assert ((m["ci_lo"] < m["planted"]) & (m["planted"] < m["ci_hi"])).all()
    rates = m[m["metric"] != "time_s"]
    assert (rates["estimate"] - rates["planted"]).abs().max() < 0.25  # logit scale
    # the large planted effects are detected
    big = m[(m["group"] == "retina >=5y") & m["metric"].isin(["accuracy", "specificity"])]
    assert (big["p_value"] < 1e-6).all()
    # model-based group proportions match the marginal truth too
    e = estimates.merge(truth, on=["grouping", "group", "metric"])
    e = e[e["metric"] != "time_s"]
    logit = lambda p: np.log(p / (1 - p))
    se = (logit(e["ci_hi"]) - logit(e["ci_lo"])) / (2 * 1.959964)
    assert ((logit(e["estimate"]) - logit(e["proportion"])) / se).abs().max() < 3.0
    assert (e["estimate"] - e["proportion"]).abs().max() < 0.05


def test_null_effect_is_not_significant():
    """A group planted identical to residents (rates and time): no P below 0.2 for this fixed draw.

    One fixed seed (2), as a check that a null effect is not flagged; the rejection rate under the null
    is a property of the method (robust GEE SEs are somewhat small with few readers), not tested here.
    """
    effects = dict(DEFAULT_EFFECTS, **{"retina >=5y": GroupEffect(0.0, 0.0)})
    export = simulate_readers({"resident": 40, "retina >=5y": 40}, effects=effects, time_shifts={}, seed=2)
    df = ta.load_export(export)
    df["group"] = ta.assign_groups(df, "specialty").cat.remove_unused_categories()
    for metric, (outcome, subset, family) in ta.METRICS.items():
        d = df if subset is None else df[df.truth == subset]
        fit = ta.fit_gee(d, outcome, family=family)
        assert fit.coefficients["group"].tolist() == ["retina"]
        assert fit.coefficients["p_value"].iloc[0] > 0.2, (metric, fit.coefficients)


# -------------------------------------------------------------------------- statsmodels agreement

@pytest.mark.parametrize("metric,cov", [("accuracy", "exchangeable"), ("specificity", "independence"),
                                        ("time_s", "exchangeable")])
def test_gee_wrapper_equals_hand_written_smf_gee(paper_panel, metric, cov):
    df = ta.load_export(paper_panel)
    df["group"] = ta.assign_groups(df, "experience")
    outcome, subset, family = ta.METRICS[metric]
    d = df if subset is None else df[df.truth == subset].copy()
    fit = ta.fit_gee(d, outcome, family=family, cov_struct=cov)
    # the same model written by hand with explicit 0/1 dummies (a different coding path than the wrapper's)
    levels = ta.group_levels("experience")[1:]
    for i, lv in enumerate(levels):
        d[f"g{i}"] = (d["group"] == lv).astype(float)
    fam = sm.families.Binomial() if family == "binomial" else sm.families.Gaussian()
    cs = sm.cov_struct.Exchangeable() if cov == "exchangeable" else sm.cov_struct.Independence()
    ref = smf.gee(f"{outcome} ~ " + " + ".join(f"g{i}" for i in range(len(levels))), "reader_id", d,
                  family=fam, cov_struct=cs).fit()
    c = fit.coefficients.set_index("group").loc[levels]
    names = [f"g{i}" for i in range(len(levels))]
    np.testing.assert_allclose(c["estimate"], ref.params[names], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(c["se"], ref.bse[names], rtol=1e-6)
    np.testing.assert_allclose(c["p_value"], ref.pvalues[names], rtol=1e-6, atol=1e-12)
    ci = ref.conf_int().loc[names]
    np.testing.assert_allclose(c[["ci_lo", "ci_hi"]].to_numpy(), ci.to_numpy(), rtol=1e-6, atol=1e-9)
    inv = (lambda x: 1 / (1 + np.exp(-x))) if family == "binomial" else (lambda x: x)
    est = fit.group_estimates.set_index("group")["estimate"]
    assert est["resident"] == pytest.approx(inv(ref.params["Intercept"]), rel=1e-6)
    assert est[levels[-1]] == pytest.approx(inv(ref.params["Intercept"] + ref.params[names[-1]]), rel=1e-6)


# ----------------------------------------------------------------------------- hand-computed metrics

def test_per_reader_metrics_match_hand_computed():
    pr = ta.per_reader_metrics(ta.load_export(_tiny_export())).set_index("reader_id")
    np.testing.assert_allclose(pr.loc[[1, 2, 3], "accuracy"], [3 / 4, 3 / 4, 0.0])
    np.testing.assert_allclose(pr.loc[[1, 2, 3], "sensitivity"], [1 / 2, 1.0, 0.0])  # real called real
    np.testing.assert_allclose(pr.loc[[1, 2, 3], "specificity"], [1.0, 1 / 2, 0.0])  # synthetic called synthetic
    np.testing.assert_allclose(pr.loc[[1, 2, 3], "mean_time_s"], [3.0, 1.25, 4.0])
    np.testing.assert_allclose(pr.loc[[1, 2, 3], "median_time_s"], [2.5, 1.0, 4.0])
    assert list(pr["group_experience"]) == ["retina <5y", "resident", "retina >=5y"]  # 5 y is ">=5y"
    assert list(pr["group_specialty"]) == ["retina", "resident", "retina"]
    s = ta.group_summary(pr.reset_index(), "specialty").set_index("group")
    assert s.loc["retina", "accuracy_mean"] == pytest.approx(3 / 8)
    assert s.loc["retina", "accuracy_sd"] == pytest.approx(np.std([0.75, 0.0], ddof=1))
    assert np.isnan(s.loc["resident", "accuracy_sd"])  # one reader: no SD
    assert s.loc["all readers", "n_readers"] == 3
    real, syn = ta.top_synthetic_images(ta.load_export(_tiny_export()), k=1)
    # img2 called real by readers 2 and 3 (2/3), img3 by reader 3 only (1/3)
    assert list(real["image_id"]) == ["img2"] and real["n_called_real"].iloc[0] == 2
    assert list(syn["image_id"]) == ["img3"] and syn["pct_called_real"].iloc[0] == pytest.approx(100 / 3)
    assert list(syn["source"]) == ["file3.png"]


def test_json_export_equals_csv_export(tmp_path, paper_panel):
    csv, js = tmp_path / "e.csv", tmp_path / "e.json"
    paper_panel.to_csv(csv, index=False)
    js.write_text(json.dumps(paper_panel.to_dict("records")))
    a, b = ta.per_reader_metrics(ta.load_export(csv)), ta.per_reader_metrics(ta.load_export(js))
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


# ------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.drop(columns=["answer"]), r"lacks column\(s\) \['answer'\]"),
    (lambda d: d.assign(answer=d["answer"].where(d.index != 5, "maybe")), r"column 'answer'.*'maybe'"),
    (lambda d: d.assign(truth=d["truth"].where(d.index != 2, None)), r"column 'truth'"),
    (lambda d: d.assign(specialty=d["specialty"].replace("retina", "glaucoma")), r"column 'specialty'.*glaucoma"),
    (lambda d: d.assign(years=d["years"].where(d.index != 0, -1)), r"column 'years'"),
    (lambda d: d.assign(server_ms="fast"), r"column 'server_ms'"),
    (lambda d: d.assign(correct=~d["correct"].astype(bool)), r"column 'correct'"),
    (lambda d: pd.concat([d, d.iloc[[0]]]), r"answered image_id 'img0' more than once"),
    (lambda d: d.assign(years=d["years"].where(d.index != 1, 9)), r"column 'years': reader_id 1"),
    (lambda d: d.drop(columns=["correct"]).assign(truth=d["truth"].where(d.index != 4, "synthetic")),
     r"image_id 'img0' is both real and synthetic"),
])
def test_bad_export_raises_naming_the_column(mutate, match):
    with pytest.raises(ValueError, match=match):
        ta.load_export(mutate(_tiny_export()))


def _hand_group(df, grouping):
    """Group label of each answer written out by hand (not through assign_groups)."""
    spec = df["specialty"].astype(str)
    if grouping == "specialty":
        return spec
    return spec.where(spec == "resident", spec + np.where(df["years"] < 5, " <5y", " >=5y"))


def test_missing_subgroup_is_left_out_and_p_values_equal_statsmodels(tmp_path, capsys):
    """No non-retina specialist under 5 years: that group leaves the experience GEE (named, with the
    readers per group, in the output and gee.md) and every P equals a direct statsmodels GEE."""
    panel = {"resident": 8, "non_retina >=5y": 6, "retina <5y": 6, "retina >=5y": 5}
    export = simulate_readers(panel, n_real=20, n_synthetic=20, seed=4)
    r = ta.analyze(export, tmp_path / "out")
    counts = {"resident": 8, "non_retina <5y": 0, "non_retina >=5y": 6, "retina <5y": 6, "retina >=5y": 5}
    assert r.dropped_groups == {"experience": (["non_retina <5y"], counts)}
    line = ("Left out of the experience GEE (no readers): non_retina <5y. Readers per group: resident 8, "
            "non_retina <5y 0, non_retina >=5y 6, retina <5y 6, retina >=5y 5.")
    assert line in r.markdown and line in (tmp_path / "out" / "gee.md").read_text()
    assert "| non_retina <5y |" not in (tmp_path / "out" / "gee.md").read_text()
    kept = {"specialty": ["non_retina", "retina"], "experience": ["non_retina >=5y", "retina <5y", "retina >=5y"]}
    df = ta.load_export(export)
    n = 0
    for (grouping, cs, metric), g in r.gee.groupby(["grouping", "cov_struct", "metric"]):
        assert list(g["group"]) == kept[grouping]
        outcome, subset, family = ta.METRICS[metric]
        d = (df if subset is None else df[df.truth == subset]).copy()
        lab = _hand_group(d, grouping)
        names = []
        for i, lv in enumerate(kept[grouping]):
            d[f"g{i}"] = (lab == lv).astype(float)
            names.append(f"g{i}")
        fam = sm.families.Binomial() if family == "binomial" else sm.families.Gaussian()
        cov = sm.cov_struct.Exchangeable() if cs == "exchangeable" else sm.cov_struct.Independence()
        ref = smf.gee(f"{outcome} ~ " + " + ".join(names), "reader_id", d, family=fam, cov_struct=cov).fit()
        np.testing.assert_allclose(g["p_value"], ref.pvalues[names], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(g["estimate"], ref.params[names], rtol=1e-6, atol=1e-9)
        n += 1
    assert n == 2 * 2 * 4

    # the command prints the same line
    csv = tmp_path / "export.csv"
    export.to_csv(csv, index=False)
    parser = argparse.ArgumentParser(prog="retina-fast turing")
    add_analyze_parser(parser.add_subparsers(dest="turing_command", required=True))
    args = parser.parse_args(["analyze", str(csv), "--out", str(tmp_path / "cli")])
    assert args.func(args) == 0
    assert line in capsys.readouterr().out


def test_group_without_readers_is_left_out_or_refused(tmp_path, capsys):
    r = ta.analyze(_tiny_export())  # residents and retina specialists only
    assert r.dropped_groups["specialty"][0] == ["non_retina"]
    assert r.dropped_groups["experience"][0] == ["non_retina <5y", "non_retina >=5y"]
    assert set(r.gee.loc[r.gee.grouping == "specialty", "group"]) == {"retina"}

    no_res = simulate_readers({"retina <5y": 3, "retina >=5y": 3, "non_retina <5y": 3, "non_retina >=5y": 3},
                              n_real=5, n_synthetic=5)
    for grouping in ta.GROUPINGS:
        with pytest.raises(ValueError, match=rf"grouping '{grouping}': the reference group 'resident' has no "
                                             r"readers \(readers per group: resident 0, "):
            ta.analyze(no_res, groupings=(grouping,))
    only_res = simulate_readers({"resident": 4}, n_real=5, n_synthetic=5)
    with pytest.raises(ValueError, match=r"grouping 'specialty': only \['resident'\] have readers \(readers per "
                                         r"group: resident 4, non_retina 0, retina 0\)"):
        ta.analyze(only_res, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ValueError, match=r"grouping 'experience': only \['resident'\] have readers"):
        ta.analyze(only_res, groupings=("experience",))
    # the command: one line on stderr, exit status 2
    csv = tmp_path / "only_res.csv"
    only_res.to_csv(csv, index=False)
    with pytest.raises(SystemExit) as e:
        cli_main(["turing", "analyze", str(csv), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("retina-fast turing: error: ") and "only ['resident'] have readers" in err
    with pytest.raises(ValueError, match="does not exist"):
        ta.analyze(tmp_path / "nope.csv")


def test_incomplete_readers_and_separation(paper_panel):
    """Readers who stopped early are analysed as they are; a group with all-0 outcomes gets no Wald P."""
    ex = paper_panel[~((paper_panel.reader_id % 3 == 0) & (paper_panel.position >= 60))]
    r = ta.analyze(ex, groupings=("specialty",))
    assert "13 reader(s) did not answer every image" in r.markdown
    assert set(r.per_reader.loc[r.per_reader.reader_id % 3 == 0, "n_images"]) == {60}
    exch, ind = (r.gee[r.gee.cov_struct == cs].set_index(["metric", "group"])["estimate"] for cs in ta.COV_STRUCTS)
    assert (exch - ind).abs().max() > 1e-3  # unequal cluster sizes: the working correlations now differ

    sep = paper_panel.drop(columns=["correct"])
    fooled = (sep.specialty == "retina") & (sep.truth == "synthetic")
    sep.loc[fooled, "answer"] = "real"  # every retina specialist calls every synthetic image real
    r = ta.analyze(sep, groupings=("specialty",))
    row = r.gee[(r.gee.metric == "specificity") & (r.gee.group == "retina")]
    assert row["p_value"].isna().all() and row["note"].str.contains("complete separation").all()
    ok = r.gee[(r.gee.metric == "sensitivity")]
    assert ok["p_value"].notna().all()
    assert r.per_reader.loc[r.per_reader.specialty == "retina", "specificity"].eq(0).all()
    assert "complete separation" in r.markdown


# ------------------------------------------------------------------------------ outputs, atomic

def _leftovers(folder):
    return [f for f in os.listdir(folder) if ".tmp" in f]


def test_outputs_written_and_atomic(tmp_path, paper_panel, monkeypatch):
    out = tmp_path / "ok"
    r = ta.analyze(paper_panel, out)
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)
    assert sorted(map(os.path.basename, r.files)) == sorted(OUTPUTS)
    assert (out / "figure4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gee = pd.read_csv(out / "gee.csv")
    assert set(gee["cov_struct"]) == {"exchangeable", "independence"}
    assert set(gee["metric"]) == set(ta.METRICS)
    assert gee[["estimate", "ci_lo", "ci_hi", "p_value"]].notna().all().all()
    pr = pd.read_csv(out / "per_reader.csv")
    assert len(pr) == 40 and pr["n_images"].eq(100).all()
    md = (out / "gee.md").read_text()
    assert md.count("| resident | Ref | Ref | Ref | Ref |") == 4  # 2 groupings x 2 working correlations
    assert "retina >=5y" in md and "Elapsed time P" in md
    assert r.p_table("specialty").shape == (2, 4)

    # bad input: nothing at all is written
    bad = tmp_path / "bad"
    with pytest.raises(ValueError):
        ta.analyze(paper_panel.drop(columns=["truth"]), bad)
    assert not bad.exists()

    # a failing rename leaves neither a final file nor a temp file behind
    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    broken = tmp_path / "broken"
    with pytest.raises(OSError, match="disk full"):
        ta.analyze(paper_panel, broken)
    assert os.listdir(broken) == []
    monkeypatch.undo()
    assert _leftovers(out) == []


def test_cli_subcommand(tmp_path, paper_panel, capsys):
    csv = tmp_path / "export.csv"
    paper_panel.to_csv(csv, index=False)
    parser = argparse.ArgumentParser(prog="retina-fast turing")
    add_analyze_parser(parser.add_subparsers(dest="turing_command", required=True))
    args = parser.parse_args(["analyze", str(csv), "--out", str(tmp_path / "o"), "--top-k", "2"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "| resident | Ref | Ref | Ref | Ref |" in printed and "Most often judged REAL" in printed
    assert sorted(os.listdir(tmp_path / "o")) == sorted(OUTPUTS)
    with pytest.raises(SystemExit) as e:
        cli_main(["turing", "analyze", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o2")])
    assert e.value.code == 2 and "missing.csv" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ simulation

def test_simulated_panel_shape_and_demo(tmp_path, capsys):
    real, syn = tmp_path / "real", tmp_path / "syn"
    for folder, n in ((real, 6), (syn, 5)):
        folder.mkdir()
        for i in range(n):
            (folder / f"{folder.name}_{i:02d}.png").write_bytes(b"")
    (syn / "notes.txt").write_text("not an image")
    ex = simulate_panel_on_images(real, syn, seed=1)
    assert len(ex) == 40 * 11 and list(ex.columns) == list(ta.EXPORT_COLUMNS)
    assert set(ex.loc[ex.truth == "synthetic", "source"]) == {f"syn_{i:02d}.png" for i in range(5)}
    # one shared display order: every reader sees the same image at each position
    assert ex.groupby("position")["image_id"].nunique().eq(1).all()
    assert (ex.groupby("reader_id")["years"].first() >= 0).all()
    res = demo_tables(real, syn, tmp_path / "demo", seed=1)
    assert "SIMULATED" in capsys.readouterr().out
    assert (tmp_path / "demo" / "simulated_export.csv").exists()
    assert len(res.per_reader) == 40
    with pytest.raises(ValueError, match="synthetic_images"):
        simulate_panel_on_images(real, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="panel: unknown group"):
        simulate_readers({"fellow": 3})
