"""What the tests of several modules share: the feature columns each event source adds, the check of a refused
``segml ingest``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the columns clean invoices (``data.invoices``) add to the feature table, in catalog order
INVOICE_FEATURES = [
    "invoices_n",
    "days_late_mean",
    "paid_on_time_share",
    "outstanding_amount",
    "overdue_amount",
    "days_late_trend",
]

#: the columns clean interactions (``data.interactions``) add to the feature table, in catalog order
INTERACTION_FEATURES = [
    "interactions_90d",
    "complaints_90d",
    "complaints_365d",
    "complaint_rate",
    "complaints_trend",
    "tickets_90d",
    "campaign_sends_365d",
    "campaign_responses_365d",
    "response_rate",
    "visits_90d",
    "days_since_interaction",
    "days_since_complaint",
    "score_mean",
]


def ingest_error(runner: Any, experiment: Path, *overrides: str) -> str:
    """Run ``segml ingest`` on ``experiment`` with ``--set`` ``overrides``: it must exit with code 2 and one
    ``error:`` line, no traceback. Returns that line."""
    from segml.cli import app

    args = ["ingest", str(experiment)]
    for override in overrides:
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error:"), result.output
    return last
