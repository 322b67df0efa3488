"""Names the tests of several modules share: the feature columns each event source adds."""

from __future__ import annotations

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
