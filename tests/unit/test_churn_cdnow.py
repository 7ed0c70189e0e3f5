"""The churn model on CDNOW (shipped in the lifetimes wheel, the dev extra): the published fits
and the evaluation protocol of issue 15, through the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cxsignals.churn_cmd import convert_cdnow, read_transactions, run_eval
from cxsignals.settings import Settings
from streams.core.churn_fit import Transactions, fit_bgnbd, fit_gamma_gamma

END_1997_09_30 = 729297  # date(1997, 9, 30).toordinal()


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cdnow")
    out = {w: d / f"{w}.csv" for w in ("sample", "master")}
    for which, path in out.items():
        convert_cdnow(which, path)
    return out


def test_cohort_sample_fit_matches_the_published_parameters(cdnow: dict[str, Path]) -> None:
    tx = Transactions.of(read_transactions(cdnow["sample"]))
    _ids, hs = tx.histories(END_1997_09_30)
    assert len(hs) == 2357 and sum(h.x > 0 for h in hs) == 946
    bg = fit_bgnbd(hs)
    assert bg.converged
    p = bg.params
    for got, want in ((p.r, 0.243), (p.alpha_days, 30.90), (p.a, 0.793), (p.b, 2.426)):
        assert got == pytest.approx(want, rel=0.02)
    gg = fit_gamma_gamma(hs)
    assert gg.converged
    g = gg.params
    for got, want in ((g.p, 6.25), (g.q, 3.74), (g.gamma, 15.44)):
        assert got == pytest.approx(want, rel=0.02)


def test_cdnow_evaluation_beats_every_baseline_and_is_calibrated(
    cdnow: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import date

    pred = tmp_path / "pred.csv"
    args = argparse.Namespace(
        transactions=cdnow["master"], calibration_end=date(1997, 9, 30), horizon_days=273,
        predictions=pred,
    )
    assert run_eval(args, Settings()) == 0
    r = args.result
    assert r["customers"] == 23570
    assert r["observed_churn"] == pytest.approx(0.701, abs=0.001)
    assert r["auc"] >= 0.77
    assert r["auc"] > max(r["auc_recency"], r["auc_frequency"], 0.763)  # BG/NBD: 0.763
    assert r["calibration_error"] <= 0.05
    assert len(pred.read_text().splitlines()) == 23570 + 1
    assert "AUC" in capsys.readouterr().out
