"""`cxsignals churn fit` reads the purchase history from ClickHouse: the same purchases give the
same parameters as from a CSV file; anonymous purchases, other events and rows written twice
(the sink's at-least-once delivery before a merge) do not count."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from subprocess import CompletedProcess

from tests.integration.conftest import Stack, clickhouse_client


def _bgnbd_purchases(n: int, seed: int) -> list[tuple[str, date, float]]:
    """Purchases of ``n`` customers drawn from a BG/NBD population (r=0.5, alpha=20 days,
    a=0.7, b=2.5), first purchase in the first 60 days of 2025, observed for a year."""
    rng = random.Random(seed)
    start = date(2025, 1, 1)
    rows = []
    for i in range(n):
        lam = rng.gammavariate(0.5, 1 / 20.0)
        p = rng.betavariate(0.7, 2.5)
        t = float(rng.randrange(60))
        spend = rng.gammavariate(6.0, 5.0)
        while t < 365:
            amount = round(rng.gammavariate(4, spend / 4), 2)
            rows.append((f"c{i}", start + timedelta(days=int(t)), amount))
            if rng.random() < p:
                break
            t += rng.expovariate(lam) if lam > 0 else 1e9
    return rows


def test_fit_from_clickhouse_equals_fit_from_the_same_csv(
    stack: Stack, cli: Callable[..., CompletedProcess[str]], tmp_path: Path
) -> None:
    assert cli("migrate").returncode == 0
    rows = _bgnbd_purchases(1500, seed=5)
    client = clickhouse_client(stack)
    cols = "event_id, event_type, occurred_at, occurred_ms, customer_id, order_value"
    noon = timedelta(hours=12)
    data = []
    for k, (customer, day, amount) in enumerate(rows):
        at = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + noon
        rec = (f"e{k}", "purchase", at, int(at.timestamp() * 1000), customer, amount)
        data.append(rec)
        if k % 7 == 0:
            data.append(rec)  # written twice: one purchase
    first = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)
    data.append(("anon", "purchase", first, 0, "", 999.0))  # no customer id
    data.append(("view", "page_view", first, 0, "c0", 0.0))
    client.execute(f"INSERT INTO touchpoint_events ({cols}) VALUES", data)

    csv = tmp_path / "tx.csv"
    csv.write_text("customer_id,date,amount\n" + "".join(f"{c},{d},{a}\n" for c, d, a in rows))
    from_ch, from_csv = tmp_path / "ch.json", tmp_path / "csv.json"
    out = cli("churn", "fit", "--end", "2025-12-31", "--out", str(from_ch))
    assert out.returncode == 0, out.stderr
    assert "converged=True" in out.stdout
    out = cli("churn", "fit", "--transactions", str(csv), "--end", "2025-12-31",
              "--out", str(from_csv))
    assert out.returncode == 0, out.stderr
    ch, ref = json.loads(from_ch.read_text()), json.loads(from_csv.read_text())
    customers = len({c for c, _d, _a in rows})
    assert ch["fit"]["customers"] == ref["fit"]["customers"] == customers
    for section in ("bgnbd", "gamma_gamma", "risk"):
        assert ch[section] == ref[section], section
    # near the population it was drawn from (1,500 customers: r and alpha vary together)
    assert 0.2 < ch["bgnbd"]["r"] < 0.8 and 5 < ch["bgnbd"]["alpha_days"] < 40
