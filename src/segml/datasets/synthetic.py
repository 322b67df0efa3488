"""Synthetic customers, transactions, invoices and interactions with planted ground truth (``segml synth``).

The generative model, in short:

* **Customers** carry attributes (industry, size, region, org_type) and a signup date. About 40 % are an
  existing base signed up before ``start``; the rest sign up during the period and buy for the first time a
  few days later. A small share (``attributes_only_share``) signs up and never buys.
* **Latent tier** per customer (vip, regular, occasional, churning, rising; ``attributes_only`` for the
  never-buyers), drawn from a multinomial logit whose probabilities depend on size, org_type and industry:
  attributes carry signal but do not determine the tier.
* **Purchases** follow a Poisson process with a gamma-distributed base rate around the tier mean, an
  exponential trend (strongly positive for the rising tier, negative for churning), and an optional
  month-of-year multiplier. A customer becomes inactive after an exponential lifetime with a
  gamma-distributed, tier-dependent hazard (Pareto/NBD-style dropout).
* **Orders** have 1–5 lines with distinct products (popularity-weighted); line quantity is
  ``1 + Poisson(theta * Gamma)`` with a lognormal, heavy-tailed customer-level ``theta``, so a minority of
  customers holds most of the spend. Line amount = quantity x unit price (exact cents).
* **Cost**: every product has a margin rate drawn once (Beta, mean about 28 %); a line's ``cost`` is
  ``round(amount x (1 - margin rate))`` in cents, so the margin varies by product and therefore by a
  customer's product mix. A return line carries the negative cost of the line it returns.
* **Returns**: each order is returned with a customer-level probability (about 4 % on average): one line,
  full quantity, 2 days to a few weeks later, as its own ``R…`` order with negative quantity and amount.

Planted behaviour (the information the invoices and interactions carry about the future):

* **Lapse**: a share of the buyers (``planted_lapse``, :data:`LAPSE_PRONE_SHARE`) is lapse-prone: a distress
  onset arrives at rate :data:`LAPSE_ONSET_PER_YEAR` after the first order and the customer stops buying for
  good :data:`LAPSE_LEAD_DAYS` days later (``lapse_date``). During those lead days the spend is unchanged, but
  complaints arrive at :data:`DISTRESS_COMPLAINTS_PER_YEAR` instead of :data:`COMPLAINTS_PER_YEAR`, invoices
  are paid late (:data:`DISTRESS_EXTRA_DAYS` days after due on average) or never
  (:data:`DISTRESS_UNPAID_PROBABILITY`), and survey scores drop. So a customer who lapses soon after the
  truth cutoff shows it in complaints and payments before the cutoff, not in spend.
* **Chronic late payers** (``late_payer``, :data:`LATE_PAYER_SHARE`) pay :data:`LATE_PAYER_EXTRA_DAYS` days
  after due on average and buy like everyone else: lateness as such is not the lapse signal, a change is.
* **Campaign response growth**: every customer receives campaign e-mails from signup
  (:data:`SENDS_PER_YEAR`, Poisson); while buying, a send is answered with probability
  :data:`RESPONDER_RESPONSE_PROBABILITY` by latent responders (``responder``) and
  :data:`OTHER_RESPONSE_PROBABILITY` by the rest. From the first answered send on, the purchase rate is
  multiplied by ``1 +`` :data:`RESPONSE_BOOST`.
* **Product mix** (``product_mix``: value, standard, premium): the first product of an order leans to low
  or high margin rates (:data:`PRODUCT_MIX_TILT`), so the expected margin rate differs between customers.
* ``segml synth`` plants these effects; ``SynthSpec.planted`` defaults to False (``segml synth
  --no-planted``), which switches the lapse, the response boost and the product mixes off: customers, transactions (but for ``cost``) and the transactions-only truth columns are then
  exactly those of the model above without planted behaviour; invoices and interactions are still written.
* Other interactions carry activity only: support tickets at a constant rate, web logins and (customers
  preferring the offline channel) store visits in proportion to the base purchase rate, NPS surveys
  (score 0-10).

Files: ``invoices.parquet`` has one invoice per order (``invoice_id``, ``customer_id``, ``issued`` = order
day, ``due`` = issued + :data:`PAYMENT_TERMS_DAYS`, ``paid`` (null = not paid by ``end``), ``amount`` =
the order's gross amount; returns are not invoiced). ``interactions.parquet`` has ``customer_id``,
``timestamp``, ``kind`` (in the vocabulary of :data:`INTERACTION_KIND_LABELS`: "Complaint", "Support ticket",
"Email sent", "Email clicked", "Web login", "Store visit", "NPS survey"), ``channel``, ``outcome`` and
``score`` (survey rows only).

* **Truth**: ``true_expected_spend`` is the analytic expected net spend in ``(truth_cutoff,
  truth_cutoff + horizon_days]`` given the latent state at the cutoff, and ``true_expected_margin`` the
  expected net margin (amount - cost) in the same window, expected orders x expected net margin per order
  (exact up to the cent rounding of line costs). The latent state includes the lapse: a customer in the
  lead days at the cutoff stops at its known lapse day; a lapse-prone customer not yet in distress can lapse
  no earlier than ``LAPSE_LEAD_DAYS`` after the cutoff, at the onset hazard; and the response boost: in
  force when the first response came on or before the cutoff, else expected from the response rate
  (``1 + b - b exp(-r (t - cutoff))``). Every factor is exponential within a calendar month, so the integral
  is closed-form (no Monte Carlo noise). ``realized_spend`` / ``realized_margin`` are what the generated data
  shows in that window.

``truth.parquet`` columns (one row per customer): ``customer_id``, ``tier``, ``purchase_rate`` (orders per
day at the cutoff including the trend and a response boost in force, before the month multiplier),
``mean_basket`` (expected gross order value), ``alive_at_cutoff`` (first order on or before the cutoff day,
neither dropped out nor lapsed), ``dropout_date`` (day the customer became inactive by the Pareto/NBD
dropout; null if still active at ``end`` or never buying), ``true_expected_spend``, ``realized_spend``, the
latent ``dropout_rate`` (per day), ``trend_per_year`` (log-rate growth per year), ``return_probability``
(per order), and the planted behaviour: ``true_expected_margin``, ``realized_margin``, ``product_mix``,
``planted_lapse``
(lapse-prone), ``lapse_onset_date`` and ``lapse_date`` (null when after ``end`` or not prone),
``distressed_at_cutoff`` (in the lead days at the cutoff), ``complaints_planted`` (distress complaints on or
before the cutoff), ``late_payer``, ``responder``, ``first_response_date`` (null if none by ``end``) and
``responded_by_cutoff``. ``truth.json`` describes each effect, its parameters and counts in
``planted_effects``.

Everything is vectorised numpy; one seed gives byte-identical files. With ``dirty=True`` known counts of
bad rows (one fault each) are interleaved in the transactions, invoices (paid before issued, negative amount,
missing invoice id) and interactions (unparseable timestamp, unknown kind, missing customer id);
``truth.json`` records them per file and reason in ``injected_by_file`` (``injected`` keeps the transaction
reasons).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segml.errors import ConfigError
from segml.schema import QuarantineReason
from segml.storage import atomic_path, write_json

# --------------------------------------------------------------------------------------------------------------
# Model constants

TIERS = ("vip", "regular", "occasional", "churning", "rising")
ATTRIBUTES_ONLY_TIER = "attributes_only"

#: per tier: mean orders per year, gamma shape of the customer-level rate, mean yearly dropout hazard,
#: mean extra units per line (``theta``), mean rate trend per year, return-probability multiplier
TIER_ORDERS_PER_YEAR = np.array([11.0, 3.6, 1.0, 3.0, 1.3])
TIER_RATE_SHAPE = np.array([2.5, 2.0, 1.5, 2.0, 2.0])
TIER_DROPOUT_PER_YEAR = np.array([0.06, 0.18, 0.40, 1.50, 0.08])
TIER_EXTRA_UNITS = np.array([4.0, 2.2, 1.2, 1.8, 1.8])
TIER_TREND_PER_YEAR = np.array([0.0, 0.0, 0.0, -0.30, 0.85])
TIER_RETURN_MULTIPLIER = np.array([0.8, 1.0, 1.0, 1.6, 0.9])
#: base logits of the tier choice (before attribute effects)
TIER_BASE_LOGIT = np.array([-1.9, 0.0, 0.55, -0.25, -0.55])

INDUSTRIES = (
    "manufacturing",
    "wholesale",
    "retail",
    "construction",
    "it_services",
    "healthcare",
    "logistics",
    "hospitality",
    "education",
    "new_energy",
)
INDUSTRY_SHARE = np.array([0.20, 0.13, 0.16, 0.10, 0.09, 0.07, 0.08, 0.07, 0.05, 0.05])
#: tier logit effects per industry, columns in TIERS order
INDUSTRY_TIER_EFFECT = np.array(
    [
        [0.2, 0.3, 0.0, 0.0, 0.0],
        [0.7, 0.3, -0.2, 0.0, 0.0],
        [0.0, 0.0, 0.1, 0.3, 0.0],
        [0.2, 0.0, 0.0, 0.3, -0.2],
        [0.0, 0.0, 0.0, 0.0, 0.6],
        [0.1, 0.2, 0.0, -0.2, 0.0],
        [0.0, 0.2, 0.0, 0.0, 0.0],
        [0.0, -0.2, 0.0, 0.6, 0.0],
        [-0.3, 0.2, 0.2, 0.0, 0.0],
        [0.0, 0.0, -0.2, 0.0, 1.2],
    ]
)

SIZES = ("1-9", "10-49", "50-249", "250+")
SIZE_TIER_EFFECT = np.array(
    [
        [-1.0, -0.3, 0.5, 0.2, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.2],
        [0.8, 0.4, -0.4, -0.2, 0.3],
        [1.6, 0.6, -0.8, -0.4, 0.2],
    ]
)
#: multiplier of the extra units per line by company size
SIZE_UNITS_FACTOR = np.array([0.6, 1.0, 1.8, 3.0])

ORG_TYPES = ("private", "state_owned", "foreign", "individual")
ORG_TYPE_SHARE = np.array([0.58, 0.12, 0.08, 0.22])
#: size distribution given org_type (individuals are always "1-9")
ORG_TYPE_SIZE_SHARE = np.array(
    [
        [0.40, 0.32, 0.18, 0.10],
        [0.10, 0.30, 0.35, 0.25],
        [0.15, 0.35, 0.32, 0.18],
        [1.00, 0.00, 0.00, 0.00],
    ]
)
ORG_TYPE_TIER_EFFECT = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [0.2, 0.6, -0.2, -0.6, -0.3],
        [0.4, 0.1, -0.2, 0.0, 0.4],
        [-1.2, -0.4, 0.6, 0.3, -0.2],
    ]
)
ORG_TYPE_UNITS_FACTOR = np.array([1.0, 1.2, 1.3, 0.6])

REGIONS = ("east", "south", "north", "central", "southwest", "northeast", "northwest")
REGION_SHARE = np.array([0.28, 0.20, 0.17, 0.12, 0.10, 0.07, 0.06])

CHANNELS = ("online", "offline", "sales_rep")
#: preferred-channel distribution by size; an order uses the preferred channel with CHANNEL_LOYALTY
SIZE_CHANNEL_SHARE = np.array(
    [
        [0.65, 0.30, 0.05],
        [0.45, 0.35, 0.20],
        [0.30, 0.25, 0.45],
        [0.15, 0.15, 0.70],
    ]
)
CHANNEL_LOYALTY = 0.8

#: lines per order: P(1..5 lines)
LINES_PER_ORDER_SHARE = np.array([0.42, 0.26, 0.16, 0.10, 0.06])
#: order hour-of-day weights (business hours, some evening online orders)
HOUR_WEIGHT = np.array(
    [0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 1.5, 4, 7, 8, 7, 5, 6, 7, 7, 6, 4, 3, 3, 3, 2, 1.2, 0.5]
)

#: month-of-year purchase-rate multiplier (January first) before normalising to a day-weighted mean of 1
RAW_MONTH_PROFILE = np.array([0.85, 0.72, 0.92, 0.95, 0.98, 0.98, 0.88, 0.85, 0.98, 1.02, 1.62, 1.80])

#: share of customers signed up before ``start`` (an existing, active base)
EXISTING_BASE_SHARE = 0.40
EXISTING_BASE_YEARS = 4
#: new customers place their first order 0..FIRST_ORDER_MAX_LAG days after signing up
FIRST_ORDER_MAX_LAG = 13
#: return lag in days: RETURN_MIN_LAG + floor(Gamma(2, 5))
RETURN_MIN_LAG = 2
MEAN_RETURN_PROBABILITY = 0.04
RETURN_PROBABILITY_CONCENTRATION = 50.0
#: no clean line may reach the quarantine threshold of experiments/synthetic.yaml (1,000,000)
MAX_LINE_CENTS = 99_999_999

NON_PRODUCT_CODES = ("POSTAGE", "FEE", "ADJUST")
MISSING_CUSTOMER_IDS = (None, "", "   ")
UNPARSEABLE_TIMESTAMPS = ("not a date", "2024-13-45", "")
NON_NUMERIC_AMOUNTS = ("n/a", "abc", "", "inf", "nan")

#: planted behaviour (see the module doc); rates are per year
LAPSE_PRONE_SHARE = 0.30
LAPSE_ONSET_PER_YEAR = 0.8
LAPSE_LEAD_DAYS = 120
COMPLAINTS_PER_YEAR = 0.3
DISTRESS_COMPLAINTS_PER_YEAR = 6.0
TICKETS_PER_YEAR = 1.0
LOGINS_PER_ORDER = 1.0
VISITS_PER_ORDER = 1.0
SURVEYS_PER_YEAR = 0.5
SURVEY_SCORE_MEAN = 7.8
DISTRESS_SURVEY_SCORE_MEAN = 3.5
SENDS_PER_YEAR = 4.0
RESPONDER_SHARE = 0.25
RESPONDER_RESPONSE_PROBABILITY = 0.18
OTHER_RESPONSE_PROBABILITY = 0.015
#: purchase-rate multiplier after the first response is 1 + RESPONSE_BOOST
RESPONSE_BOOST = 1.0
PAYMENT_TERMS_DAYS = 30
#: days from issue to payment: Gamma(2) with mean PAYMENT_DAYS_SCALE for on-time payers; due + Gamma(2) with
#: mean LATE_PAYER_EXTRA_DAYS (chronic) or DISTRESS_EXTRA_DAYS (lapse lead days) for late ones
PAYMENT_DAYS_SCALE = 6.0
LATE_PAYER_SHARE = 0.12
LATE_PAYER_EXTRA_DAYS = 16.0
DISTRESS_EXTRA_DAYS = 25.0
DISTRESS_UNPAID_PROBABILITY = 0.35
#: Beta parameters of the per-product margin rate (mean 0.28)
MARGIN_RATE_BETA = (5.6, 14.4)
#: customer product mix: the first product of an order is drawn with popularity x exp(tilt x z), z the
#: standardised product margin rate, so the expected margin rate differs between the mixes
PRODUCT_MIXES = ("value", "standard", "premium")
PRODUCT_MIX_SHARE = np.array([0.3, 0.4, 0.3])
PRODUCT_MIX_TILT = np.array([-1.2, 0.0, 1.2])

#: segml interaction kinds and the words the generated file uses for them (the experiment's ``kinds:``)
INTERACTION_KINDS = ("complaint", "ticket", "campaign_send", "campaign_response", "login", "visit", "survey")
INTERACTION_KIND_LABELS = (
    "Complaint",
    "Support ticket",
    "Email sent",
    "Email clicked",
    "Web login",
    "Store visit",
    "NPS survey",
)
INTERACTION_CHANNELS = ("email", "phone", "web", "store")
INTERACTION_OUTCOMES = ("resolved", "unresolved", "escalated", "delivered", "clicked", "completed")
UNKNOWN_KINDS = ("Fax received", "Letter", "Chat")
#: marker of an injected unparseable interaction timestamp (model seconds below it): far before any real row
UNPARSEABLE_SECONDS = -(10**12)

SECONDS_PER_DAY = 86_400
DAYS_PER_YEAR = 365.25


# --------------------------------------------------------------------------------------------------------------
# Public types


@dataclass
class SynthSpec:
    """What to generate. Defaults match ``experiments/synthetic.yaml``, but for ``planted`` (``segml synth``
    plants the effects unless ``--no-planted``).

    ``truth_cutoff`` defaults to ``end - horizon_days`` (2025-06-30 for the defaults).
    """

    n_customers: int = 2000
    seed: int = 7
    dirty: bool = False
    start: dt.date = dt.date(2023, 7, 1)
    end: dt.date = dt.date(2026, 6, 30)
    horizon_days: int = 365
    seasonality: bool = True
    truth_cutoff: dt.date | None = None
    n_products: int = 300
    attributes_only_share: float = 0.04
    #: plant the lapse, campaign-response and product-mix effects (``segml synth`` does by default); off, the
    #: customers, transactions and transactions-only truth are exactly those of the generator without planted
    #: behaviour, so code that builds a spec keeps its data (invoices and interactions are still written)
    planted: bool = False

    @property
    def cutoff(self) -> dt.date:
        """The truth cutoff actually used."""
        return self.truth_cutoff or (self.end - dt.timedelta(days=self.horizon_days))

    def validate(self) -> None:
        """Raise :class:`~segml.errors.ConfigError` naming the first invalid field."""
        if self.n_customers < 1:
            raise ConfigError(f"synth: n_customers must be >= 1, got {self.n_customers}")
        if self.end <= self.start:
            raise ConfigError(f"synth: end {self.end} must be after start {self.start}")
        if self.horizon_days < 1:
            raise ConfigError(f"synth: horizon_days must be >= 1, got {self.horizon_days}")
        if self.n_products < 5:
            raise ConfigError(
                f"synth: n_products must be >= 5 (orders have up to 5 lines), got {self.n_products}"
            )
        if not self.start <= self.cutoff <= self.end:
            raise ConfigError(f"synth: truth_cutoff {self.cutoff} must lie within [{self.start}, {self.end}]")
        if not 0.0 <= self.attributes_only_share < 1.0:
            raise ConfigError(
                f"synth: attributes_only_share must be in [0, 1), got {self.attributes_only_share}"
            )

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON-ready values (dates as ISO strings, the effective truth cutoff filled in)."""
        values = dataclasses.asdict(self)
        values["truth_cutoff"] = self.cutoff
        return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in values.items()}


@dataclass
class SynthData:
    """Generated data: the five tables as written to parquet, and the ``truth.json`` content."""

    transactions: pd.DataFrame
    customers: pd.DataFrame
    truth: pd.DataFrame
    truth_json: dict[str, Any] = field(default_factory=dict)
    invoices: pd.DataFrame = field(default_factory=pd.DataFrame)
    interactions: pd.DataFrame = field(default_factory=pd.DataFrame)


# --------------------------------------------------------------------------------------------------------------
# Generation


@dataclass
class _Tables:
    transactions: pa.Table
    customers: pa.Table
    truth: pa.Table
    truth_json: dict[str, Any]
    invoices: pa.Table
    interactions: pa.Table


def generate(spec: SynthSpec | None = None) -> SynthData:
    """Generate synthetic customers, transactions and their ground truth.

    Parameters
    ----------
    spec:
        What to generate; default :class:`SynthSpec()`.

    Returns
    -------
    SynthData
        ``transactions`` (customer_id, order_id, order_ts, amount, cost, quantity, product_id, channel; in
        dirty mode ``order_ts`` and ``amount`` are text), ``customers``, ``truth`` (one row per customer),
        ``truth_json``, ``invoices`` and ``interactions`` (in dirty mode ``timestamp`` is text).
    """
    tables = _build_tables(spec or SynthSpec())
    return SynthData(
        transactions=tables.transactions.to_pandas(),
        customers=tables.customers.to_pandas(),
        truth=tables.truth.to_pandas(),
        truth_json=tables.truth_json,
        invoices=tables.invoices.to_pandas(),
        interactions=tables.interactions.to_pandas(),
    )


def write_synthetic(spec: SynthSpec, out_dir: str | Path) -> dict[str, Any]:
    """Generate and write ``transactions``, ``customers``, ``invoices``, ``interactions`` and ``truth`` parquet
    files and ``truth.json``.

    Each file is written atomically. The same spec gives byte-identical files.

    Parameters
    ----------
    spec:
        What to generate.
    out_dir:
        Output folder (created if missing).

    Returns
    -------
    dict
        The ``truth.json`` content: seed, spec, customers, transactions (rows written), clean_rows, tiers,
        truth_cutoff, horizon_days, month_profile, injected ({reason: rows} of the transactions),
        injected_by_file ({file: {reason: rows}}), invoices, interactions, planted_effects, notes, ...
    """
    out = Path(out_dir)
    tables = _build_tables(spec)
    for name, table in (
        ("transactions", tables.transactions),
        ("customers", tables.customers),
        ("invoices", tables.invoices),
        ("interactions", tables.interactions),
        ("truth", tables.truth),
    ):
        with atomic_path(out / f"{name}.parquet") as tmp:
            pq.write_table(table, tmp, compression="zstd")
    write_json(out / "truth.json", tables.truth_json)
    return tables.truth_json


def month_profile(seasonality: bool) -> np.ndarray:
    """Month-of-year purchase-rate multipliers (January first), day-weighted mean 1; all ones when off."""
    if not seasonality:
        return np.ones(12)
    days_in_month = np.array([31, 28.25, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    profile = RAW_MONTH_PROFILE * days_in_month.sum() / (RAW_MONTH_PROFILE * days_in_month).sum()
    return np.round(profile, 4)


def _build_tables(spec: SynthSpec) -> _Tables:
    spec.validate()
    # planted behaviour and costs draw from a stream of their own (the third child seed)
    population_seed, fault_seed, behaviour_seed = np.random.SeedSequence(spec.seed).spawn(3)
    rng = np.random.default_rng(population_seed)
    behaviour_rng = np.random.default_rng(behaviour_seed)
    profile = month_profile(spec.seasonality)

    customers = _draw_customers(spec, rng)
    behaviour = _draw_behaviour(spec, customers, behaviour_rng)
    margin_rate = behaviour_rng.beta(*MARGIN_RATE_BETA, size=spec.n_products)
    customers["mix"] = (
        behaviour_rng.choice(len(PRODUCT_MIXES), size=spec.n_customers, p=PRODUCT_MIX_SHARE)
        if spec.planted
        else np.full(spec.n_customers, PRODUCT_MIXES.index("standard"))
    )
    orders = _draw_orders(spec, customers, profile, rng, behaviour)
    lines = _draw_lines(spec, customers, orders, rng, margin_rate)
    # expected price and margin sums per product mix
    prices = [_price_expectations(lines["price_cents"], pop, spec.n_products) for pop in lines["popularity"]]
    margins = [
        _price_expectations(lines["price_cents"] * margin_rate, pop, spec.n_products)
        for pop in lines["popularity"]
    ]
    invoices = _draw_invoices(spec, orders, lines, behaviour, behaviour_rng)
    events = _draw_interactions(spec, customers, behaviour, behaviour_rng)
    truth = _truth(spec, customers, behaviour, events, lines, margin_rate, prices, margins, profile)

    n_clean = len(lines["row_customer"])
    n_clean_invoices = invoices["customer"].size
    n_clean_events = events["customer"].size
    buyers = int(np.count_nonzero(np.bincount(lines["row_customer"], minlength=1)))
    injected: dict[str, int] = {}
    injected_by_file: dict[str, dict[str, int]] = {}
    overrides: dict[str, tuple[np.ndarray, list[Any]]] = {}
    order = invoice_order = event_order = None
    strangers = {"events": 0, "customers": 0}
    if spec.dirty:
        injected, overrides, order = _inject_faults(spec, lines, np.random.default_rng(fault_seed))
        invoice_seed, event_seed, stranger_seed = fault_seed.spawn(3)
        injected_invoices, invoice_order = _inject_invoice_faults(
            spec, invoices, np.random.default_rng(invoice_seed)
        )
        injected_events, event_order = _inject_interaction_faults(
            spec, events, np.random.default_rng(event_seed)
        )
        strangers, event_order = _add_stranger_events(
            spec, events, n_clean_events, event_order, np.random.default_rng(stranger_seed)
        )
        injected_by_file = {
            "transactions": injected,
            "invoices": injected_invoices,
            "interactions": injected_events,
        }

    transactions = _transactions_table(spec, customers, lines, margin_rate, overrides, order)
    invoices_table = _invoices_table(spec, invoices, invoice_order)
    interactions_table = _interactions_table(spec, events, event_order)
    tier_counts = pd.Series(truth["tier"]).value_counts()
    kind_counts = np.bincount(events["kind"][:n_clean_events], minlength=len(INTERACTION_KINDS))
    truth_json = {
        "seed": spec.seed,
        "spec": spec.to_json(),
        "customers": spec.n_customers,
        "customers_with_transactions": buyers,
        "transactions": transactions.num_rows,
        "clean_rows": n_clean,
        "orders": int(lines["n_orders"]),
        "return_lines": int(lines["n_returns"]),
        "tiers": {tier: int(tier_counts.get(tier, 0)) for tier in (*TIERS, ATTRIBUTES_ONLY_TIER)},
        "truth_cutoff": spec.cutoff.isoformat(),
        "horizon_days": spec.horizon_days,
        "month_profile": [float(x) for x in profile],
        "injected": injected,
        "injected_by_file": injected_by_file,
        "invoices": invoices_table.num_rows,
        "clean_invoices": n_clean_invoices,
        "interactions": interactions_table.num_rows,
        "clean_interactions": n_clean_events,
        # dirty mode: well-formed events of customers outside the population (ingest keeps and counts them as
        # unknown_customer; no feature reads them)
        "unknown_customer_events": strangers["events"],
        "unknown_customer_ids": strangers["customers"],
        "interaction_kinds": {
            label: {"kind": kind, "rows": int(count)}
            for label, kind, count in zip(
                INTERACTION_KIND_LABELS, INTERACTION_KINDS, kind_counts, strict=True
            )
        },
        "planted_effects": _planted_effects(spec, behaviour, truth, margin_rate, prices, margins),
        "notes": _notes(spec),
    }
    return _Tables(
        transactions=transactions,
        customers=_customers_table(spec, customers),
        truth=_truth_table(spec, customers, truth),
        truth_json=truth_json,
        invoices=invoices_table,
        interactions=interactions_table,
    )


def _notes(spec: SynthSpec) -> str:
    return (
        "Latent tiers drawn from a logit on size/org_type/industry; Poisson purchases with gamma base rates, "
        "exponential trend (rising tier grows, churning shrinks)"
        + (", month-of-year multipliers (month_profile)" if spec.seasonality else "")
        + "; exponential lifetimes with tier-dependent gamma hazards; orders of 1-5 distinct products, "
        "quantity 1+Poisson(theta*Gamma) with lognormal customer theta; one-line full returns with "
        "customer-level probability. true_expected_spend = analytic expected net spend in "
        "(truth_cutoff, truth_cutoff+horizon_days] given the latent state at the cutoff (0 if inactive; "
        "customers starting later counted from their first order); realized_spend = net spend in that "
        "window in the clean rows (to end). Planted behaviour (planted_effects): lapse-prone customers "
        "complain more and pay late or not at all in the lead days before they stop buying; responders to "
        "campaign e-mails buy more after their first response; per-product margin rates give the line cost; "
        "true_expected_margin = analytic expected net margin in the same window. Injected faults: one per "
        "row, counts in `injected` (transactions) and `injected_by_file`."
    )


def _draw_customers(spec: SynthSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Attributes, tier and latent parameters per customer; times are days since ``start``."""
    n = spec.n_customers
    period_days = (spec.end - spec.start).days + 1
    org_type = rng.choice(len(ORG_TYPES), size=n, p=ORG_TYPE_SHARE)
    size = _choice_by_row(ORG_TYPE_SIZE_SHARE[org_type], rng)
    industry = rng.choice(len(INDUSTRIES), size=n, p=INDUSTRY_SHARE)
    region = rng.choice(len(REGIONS), size=n, p=REGION_SHARE)

    logits = (
        TIER_BASE_LOGIT
        + SIZE_TIER_EFFECT[size]
        + ORG_TYPE_TIER_EFFECT[org_type]
        + INDUSTRY_TIER_EFFECT[industry]
        + rng.gumbel(size=(n, len(TIERS)))
    )
    tier = logits.argmax(axis=1)
    buys = rng.random(n) >= spec.attributes_only_share

    # signup: existing base (before start, active at start) or new during the period
    existing = rng.random(n) < EXISTING_BASE_SHARE
    base_days = EXISTING_BASE_YEARS * 365
    last_signup = max(0, period_days - 1 - FIRST_ORDER_MAX_LAG - 1)
    signup = np.where(
        existing,
        -rng.integers(1, base_days + 1, size=n),
        rng.integers(0, last_signup + 1, size=n),
    )
    rate_per_day = (
        TIER_ORDERS_PER_YEAR[tier]
        / DAYS_PER_YEAR
        * rng.gamma(TIER_RATE_SHAPE[tier], 1.0 / TIER_RATE_SHAPE[tier])
    )
    rate_per_day = np.where(buys, rate_per_day, 0.0)
    # The purchase process starts with a first order: for new customers a few days after signup; for the
    # existing base at the first arrival of its Poisson process after `start`, conditioned on falling inside
    # the period (the base holds customers who still buy), i.e. an exponential truncated to the period.
    first_order_lag = np.minimum(rng.geometric(0.35, size=n) - 1, FIRST_ORDER_MAX_LAG)
    safe_rate = np.maximum(rate_per_day, 1e-12)
    first_arrival = -np.log1p(rng.random(n) * np.expm1(-safe_rate * period_days)) / safe_rate
    active_start = np.where(
        existing, np.minimum(np.floor(first_arrival), period_days - 1), signup + first_order_lag
    ).astype(np.float64)
    has_first_order = buys & (active_start < period_days)

    dropout_per_day = TIER_DROPOUT_PER_YEAR[tier] / DAYS_PER_YEAR * rng.gamma(3.0, 1.0 / 3.0, size=n)
    lifetime = rng.exponential(1.0, size=n) / dropout_per_day
    dropout_t = active_start + lifetime
    trend_per_year = TIER_TREND_PER_YEAR[tier] + rng.normal(0.0, 0.08, size=n)
    trend_per_year = np.where(tier == TIERS.index("rising"), np.abs(trend_per_year), trend_per_year)
    sigma = 0.75
    extra_units = (
        TIER_EXTRA_UNITS[tier]
        * SIZE_UNITS_FACTOR[size]
        * ORG_TYPE_UNITS_FACTOR[org_type]
        * rng.lognormal(-0.5 * sigma**2, sigma, size=n)
    )
    return_mean = np.clip(MEAN_RETURN_PROBABILITY * TIER_RETURN_MULTIPLIER[tier], 0.001, 0.5)
    return_probability = rng.beta(
        return_mean * RETURN_PROBABILITY_CONCENTRATION, (1 - return_mean) * RETURN_PROBABILITY_CONCENTRATION
    )
    preferred_channel = _choice_by_row(SIZE_CHANNEL_SHARE[size], rng)
    return {
        "org_type": org_type,
        "size": size,
        "industry": industry,
        "region": region,
        "tier": tier,
        "buys": buys,
        "signup": signup,
        "active_start": active_start,
        "has_first_order": has_first_order,
        "rate_per_day": rate_per_day,
        "trend_per_day": trend_per_year / 365.0,
        "dropout_per_day": dropout_per_day,
        "dropout_t": dropout_t,
        "extra_units": extra_units,
        "return_probability": return_probability,
        "preferred_channel": preferred_channel,
    }


def _choice_by_row(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of a (n, k) probability matrix."""
    cumulative = probabilities.cumsum(axis=1)
    draws = rng.random(len(probabilities))[:, None] * cumulative[:, -1:]
    return np.minimum((draws >= cumulative).sum(axis=1), probabilities.shape[1] - 1)


def _draw_behaviour(
    spec: SynthSpec, customers: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Latent lapse, payment and campaign behaviour per customer, and the campaign sends and responses.

    Times are days since ``start`` (``inf`` = never). The purchase process stops at ``stop_t`` (dropout or
    lapse, whichever comes first) and runs at ``1 + RESPONSE_BOOST`` times its rate from ``boost_t`` (the
    first answered send) on."""
    n = spec.n_customers
    period_days = float((spec.end - spec.start).days + 1)
    buys = customers["buys"]
    active_start = customers["active_start"]
    prone = buys & (rng.random(n) < LAPSE_PRONE_SHARE) & spec.planted
    onset_t = np.where(prone, active_start + rng.exponential(DAYS_PER_YEAR / LAPSE_ONSET_PER_YEAR, n), np.inf)
    lapse_t = onset_t + LAPSE_LEAD_DAYS
    stop_t = np.minimum(customers["dropout_t"], lapse_t)
    responder = buys & (rng.random(n) < RESPONDER_SHARE)
    late_payer = buys & (rng.random(n) < LATE_PAYER_SHARE)
    response_probability = np.where(responder, RESPONDER_RESPONSE_PROBABILITY, OTHER_RESPONSE_PROBABILITY)

    send_from = np.maximum(customers["signup"], 0).astype(np.float64)
    send_customer, send_t = _poisson_events(
        np.full(n, SENDS_PER_YEAR / DAYS_PER_YEAR), send_from, np.full(n, period_days), rng
    )
    buying = buys[send_customer] & (send_t >= active_start[send_customer]) & (send_t < stop_t[send_customer])
    answered = buying & (rng.random(send_t.size) < response_probability[send_customer])
    boost_t = np.full(n, np.inf)
    np.minimum.at(boost_t, send_customer[answered], send_t[answered])
    return {
        "planted_lapse": prone,
        "onset_t": onset_t,
        "lapse_t": lapse_t,
        "stop_t": stop_t,
        "responder": responder,
        "late_payer": late_payer,
        "response_rate": np.where(buys, response_probability * SENDS_PER_YEAR / DAYS_PER_YEAR, 0.0),
        #: the rate multiplier after the first response is 1 + boost (no boost when nothing is planted)
        "boost": RESPONSE_BOOST if spec.planted else 0.0,
        "boost_t": boost_t,
        "send_customer": send_customer,
        "send_t": send_t,
        "send_answered": answered,
    }


def _poisson_events(
    rate: np.ndarray, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous Poisson events per customer on ``[lo, hi)`` (days): (customer index, time) pairs."""
    length = np.where(np.isfinite(hi - lo), np.maximum(hi - lo, 0.0), 0.0)
    counts = rng.poisson(rate * length)
    who = np.repeat(np.arange(rate.size), counts)
    return who, lo[who] + rng.random(who.size) * length[who]


def _draw_invoices(
    spec: SynthSpec,
    orders: dict[str, np.ndarray],
    lines: dict[str, Any],
    behaviour: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """One invoice per order: issued on the order day, due after the payment terms, paid per behaviour."""
    period_days = (spec.end - spec.start).days + 1
    order_line = ~lines["row_is_return"]
    n_orders = int(lines["n_orders"])
    cents = np.bincount(
        lines["row_doc"][order_line], weights=lines["row_cents"][order_line], minlength=n_orders
    )
    cents = np.rint(cents).astype(np.int64)  # sums of integer cents, exact in float64
    customer = orders["customer"]
    issued = orders["seconds"] // SECONDS_PER_DAY
    distressed = (issued >= np.floor(behaviour["onset_t"][customer])) & (
        issued < behaviour["lapse_t"][customer]
    )
    late = behaviour["late_payer"][customer]
    scale = np.where(
        distressed, DISTRESS_EXTRA_DAYS, np.where(late, LATE_PAYER_EXTRA_DAYS, PAYMENT_DAYS_SCALE)
    )
    days = np.floor(rng.gamma(2.0, 0.5 * scale)).astype(np.int64)
    days = np.where(distressed | late, PAYMENT_TERMS_DAYS + days, days)
    unpaid = distressed & (rng.random(n_orders) < DISTRESS_UNPAID_PROBABILITY)
    paid = issued + days
    return {
        "number": np.arange(n_orders),
        "customer": customer,
        "issued": issued,
        "due": issued + PAYMENT_TERMS_DAYS,
        "paid": paid,
        "paid_known": ~unpaid & (paid < period_days),
        "cents": cents,
    }


def _draw_interactions(
    spec: SynthSpec,
    customers: dict[str, np.ndarray],
    behaviour: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Interaction events as arrays sorted by time: customer, seconds, kind, channel, outcome, score codes."""
    n = spec.n_customers
    period_days = float((spec.end - spec.start).days + 1)
    buys = customers["buys"]
    active_start = np.where(buys, customers["active_start"], period_days)
    active_end = np.minimum(behaviour["stop_t"], period_days)
    onset = np.minimum(behaviour["onset_t"], period_days)
    distress_end = np.minimum(np.minimum(behaviour["lapse_t"], customers["dropout_t"]), period_days)
    per_day = 1.0 / DAYS_PER_YEAR
    kind = {name: INTERACTION_KINDS.index(name) for name in INTERACTION_KINDS}
    parts: list[tuple[np.ndarray, np.ndarray, int]] = []

    def add(name: str, rate: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        who, t = _poisson_events(rate, lo, hi, rng)
        parts.append((who, t, kind[name]))

    add("complaint", np.full(n, COMPLAINTS_PER_YEAR * per_day), active_start, active_end)
    add("complaint", np.full(n, DISTRESS_COMPLAINTS_PER_YEAR * per_day), onset, distress_end)
    add("ticket", np.full(n, TICKETS_PER_YEAR * per_day), active_start, active_end)
    add("login", LOGINS_PER_ORDER * customers["rate_per_day"], active_start, active_end)
    offline = customers["preferred_channel"] == CHANNELS.index("offline")
    add(
        "visit",
        np.where(offline, VISITS_PER_ORDER * customers["rate_per_day"], 0.0),
        active_start,
        active_end,
    )
    add("survey", np.full(n, SURVEYS_PER_YEAR * per_day), active_start, active_end)
    parts.append((behaviour["send_customer"], behaviour["send_t"], kind["campaign_send"]))

    customer = np.concatenate([who for who, _, _ in parts])
    t = np.concatenate([t for _, t, _ in parts])
    kinds = np.concatenate([np.full(who.size, k) for who, _, k in parts])
    distressed = (t >= behaviour["onset_t"][customer]) & (t < behaviour["lapse_t"][customer])
    planted = np.zeros(customer.size, dtype=bool)
    n_base = parts[0][0].size
    planted[n_base : n_base + parts[1][0].size] = True  # the distress complaints
    day = np.minimum(np.floor(t), period_days - 1).astype(np.int64)
    seconds = day * SECONDS_PER_DAY + _seconds_of_day(customer.size, rng)

    # responses: the answered sends, a few minutes to hours later on the same day (the boost starts at the send)
    answered = np.flatnonzero(behaviour["send_answered"])
    send_rows = np.flatnonzero(kinds == kind["campaign_send"])[answered]
    lag = rng.integers(300, 8 * 3600, size=answered.size)
    day_end = (seconds[send_rows] // SECONDS_PER_DAY + 1) * SECONDS_PER_DAY - 1  # clicked on the send's day
    customer = np.concatenate([customer, customer[send_rows]])
    seconds = np.concatenate([seconds, np.minimum(seconds[send_rows] + lag, day_end)])
    kinds = np.concatenate([kinds, np.full(answered.size, kind["campaign_response"])])
    distressed = np.concatenate([distressed, distressed[send_rows]])
    planted = np.concatenate([planted, np.zeros(answered.size, dtype=bool)])

    m = customer.size
    # e-mail for campaigns and surveys, web for logins, store for visits, phone / e-mail / web for support
    channel = np.array([0, 0, 0, 0, 2, 3, 0])[kinds]
    support = np.flatnonzero((kinds == kind["complaint"]) | (kinds == kind["ticket"]))
    channel[support] = np.array([1, 0, 2])[_choice_by_row(np.tile([0.5, 0.3, 0.2], (support.size, 1)), rng)]
    resolved = rng.random(m) < np.where(distressed, 0.4, 0.8)
    outcome = np.full(m, -1)
    outcome = np.where(kinds == kind["complaint"], np.where(resolved, 0, 1), outcome)
    outcome = np.where(kinds == kind["ticket"], np.where(resolved, 0, 2), outcome)
    outcome = np.where(kinds == kind["campaign_send"], 3, outcome)
    outcome = np.where(kinds == kind["campaign_response"], 4, outcome)
    outcome = np.where(kinds == kind["survey"], 5, outcome)
    score_mean = np.where(distressed, DISTRESS_SURVEY_SCORE_MEAN, SURVEY_SCORE_MEAN)
    score = np.clip(np.round(rng.normal(score_mean, 1.8)), 0, 10)
    score = np.where(kinds == kind["survey"], score, np.nan)

    # by time, then customer, then kind (one integer key: faster than a lexsort on millions of rows)
    key = (seconds * np.int64(n) + customer) * np.int64(len(INTERACTION_KINDS)) + kinds
    by_time = np.argsort(key, kind="stable")
    return {
        "customer": customer[by_time],
        "seconds": seconds[by_time],
        "kind": kinds[by_time],
        "channel": channel[by_time],
        "outcome": outcome[by_time],
        "score": score[by_time],
        "planted": planted[by_time],
    }


def _planted_effects(
    spec: SynthSpec,
    behaviour: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
    margin_rate: np.ndarray,
    prices: list[dict[str, float]],
    margins: list[dict[str, float]],
) -> dict[str, Any]:
    """The ``planted_effects`` section of ``truth.json``: each effect, its parameters and counts."""
    cutoff_t = float((spec.cutoff - spec.start).days + 1)
    period_days = float((spec.end - spec.start).days + 1)
    prone = behaviour["planted_lapse"]
    return {
        "lapse": {
            "description": "lapse-prone customers stop buying lead_days after a distress onset; in the lead "
            "days spend is unchanged but complaints rise, invoices are paid late or never and survey "
            "scores drop",
            "prone_share": LAPSE_PRONE_SHARE,
            "onset_per_year": LAPSE_ONSET_PER_YEAR,
            "lead_days": LAPSE_LEAD_DAYS,
            "complaints_per_year": COMPLAINTS_PER_YEAR,
            "distress_complaints_per_year": DISTRESS_COMPLAINTS_PER_YEAR,
            "distress_days_late_mean": DISTRESS_EXTRA_DAYS,
            "distress_unpaid_probability": DISTRESS_UNPAID_PROBABILITY,
            "survey_score_mean": SURVEY_SCORE_MEAN,
            "distress_survey_score_mean": DISTRESS_SURVEY_SCORE_MEAN,
            "prone_customers": int(prone.sum()),
            "lapsed_in_period": int((prone & (behaviour["lapse_t"] < period_days)).sum()),
            "lapsed_by_cutoff": int((prone & (behaviour["lapse_t"] <= cutoff_t)).sum()),
            "distressed_at_cutoff": int(truth["distressed_at_cutoff"].sum()),
            "complaints_planted_by_cutoff": int(truth["complaints_planted"].sum()),
        },
        "late_payer": {
            "description": "chronic late payers pay after the due date and buy like everyone else",
            "share": LATE_PAYER_SHARE,
            "payment_terms_days": PAYMENT_TERMS_DAYS,
            "days_late_mean": LATE_PAYER_EXTRA_DAYS,
            "on_time_days_to_pay_mean": PAYMENT_DAYS_SCALE,
            "customers": int(behaviour["late_payer"].sum()),
        },
        "campaign_response": {
            "description": "the purchase rate is multiplied by rate_multiplier from the first answered "
            "campaign e-mail on",
            "responder_share": RESPONDER_SHARE,
            "sends_per_year": SENDS_PER_YEAR,
            "response_probability": {
                "responder": RESPONDER_RESPONSE_PROBABILITY,
                "other": OTHER_RESPONSE_PROBABILITY,
            },
            "rate_multiplier": 1.0 + behaviour["boost"],
            "responders": int(behaviour["responder"].sum()),
            "responded_by_cutoff": int(truth["responded_by_cutoff"].sum()),
            "responded_in_period": int(np.isfinite(behaviour["boost_t"]).sum()),
        },
        "margin": {
            "description": "line cost = amount x (1 - product margin rate), margin rate drawn once per "
            "product; the first product of an order leans to low or high margin rates by the customer's "
            "product mix (truth column product_mix)",
            "margin_rate_beta": list(MARGIN_RATE_BETA),
            "product_margin_rate_mean": round(float(margin_rate.mean()), 4),
            "product_mix_share": dict(zip(PRODUCT_MIXES, PRODUCT_MIX_SHARE.tolist(), strict=True)),
            "product_mix_tilt": dict(zip(PRODUCT_MIXES, PRODUCT_MIX_TILT.tolist(), strict=True)),
            "expected_order_margin_rate": {
                mix: round(m["order"] / p["order"], 4)
                for mix, p, m in zip(PRODUCT_MIXES, prices, margins, strict=True)
            },
            "product_margin_rate_range": [
                round(float(margin_rate.min()), 4),
                round(float(margin_rate.max()), 4),
            ],
        },
    }


def _month_grid(start: dt.date, lo_t: float, hi_t: float) -> tuple[np.ndarray, np.ndarray]:
    """Calendar-month segments covering ``[lo_t, hi_t)`` (days since ``start``).

    Returns the segment boundaries (length k+1, clipped to the range) and each segment's month of year (0-11).
    """
    start_day = np.datetime64(start, "D")
    first_month = (start_day + int(np.floor(lo_t))).astype("datetime64[M]")
    last_month = (start_day + int(np.ceil(hi_t)) - 1).astype("datetime64[M]")
    months = np.arange(first_month, last_month + 1)
    edges = np.append(months, last_month + 1).astype("datetime64[D]")
    bounds = np.clip((edges - start_day).astype(np.float64), lo_t, hi_t)
    return bounds, months.astype(np.int64) % 12


def _trend_integral(
    rate: np.ndarray,
    trend: np.ndarray,
    t0: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    decay: np.ndarray | float,
) -> np.ndarray:
    """``∫_lo^hi rate * exp(trend (t - t0)) * exp(-decay (t - lo)) dt`` (0 where hi <= lo)."""
    length = np.maximum(hi - lo, 0.0)
    slope = trend - decay
    small = np.abs(slope * length) < 1e-9
    safe = np.where(small, 1.0, slope)
    shape = np.where(small, length * (1 + 0.5 * slope * length), np.expm1(slope * length) / safe)
    return rate * np.exp(trend * (lo - t0)) * shape


def _draw_orders(
    spec: SynthSpec,
    customers: dict[str, np.ndarray],
    profile: np.ndarray,
    rng: np.random.Generator,
    behaviour: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Order times: Poisson counts per (customer, calendar month, before / after the response boost), placed
    uniformly inside the active span; the span ends at dropout or lapse."""
    period_days = float((spec.end - spec.start).days + 1)
    bounds, month_of_year = _month_grid(spec.start, 0.0, period_days)
    active_start = customers["active_start"]
    active_end = np.minimum(behaviour["stop_t"], period_days)
    order_customer, order_t = [], []
    for m in range(len(month_of_year)):
        lo = np.maximum(bounds[m], active_start)
        hi = np.minimum(bounds[m + 1], active_end)
        boost_from = np.clip(behaviour["boost_t"], lo, np.maximum(hi, lo))
        pieces = ((lo, boost_from, 1.0), (boost_from, hi, 1.0 + behaviour["boost"]))
        for piece_lo, piece_hi, multiplier in pieces if behaviour["boost"] else ((lo, hi, 1.0),):
            expected = (
                multiplier
                * profile[month_of_year[m]]
                * _trend_integral(
                    customers["rate_per_day"],
                    customers["trend_per_day"],
                    active_start,
                    piece_lo,
                    piece_hi,
                    0.0,
                )
            )
            counts = rng.poisson(expected)
            who = np.flatnonzero(counts)
            counts = counts[who]
            span_lo = np.repeat(piece_lo[who], counts)
            span = np.repeat(piece_hi[who] - piece_lo[who], counts)
            order_customer.append(np.repeat(who, counts))
            order_t.append(span_lo + rng.random(span.size) * span)
    first = np.flatnonzero(customers["has_first_order"])
    order_customer.append(first)
    order_t.append(active_start[first])
    customer = np.concatenate(order_customer)
    day = np.minimum(np.floor(np.concatenate(order_t)), period_days - 1).astype(np.int64)
    second_of_day = _seconds_of_day(customer.size, rng)
    seconds = day * SECONDS_PER_DAY + second_of_day
    chronological = np.argsort(seconds * np.int64(customers["rate_per_day"].size) + customer)
    return {"customer": customer[chronological], "seconds": seconds[chronological]}


def _seconds_of_day(n: int, rng: np.random.Generator) -> np.ndarray:
    hour = rng.choice(24, size=n, p=HOUR_WEIGHT / HOUR_WEIGHT.sum())
    return hour * 3600 + rng.integers(0, 3600, size=n)


def _draw_lines(
    spec: SynthSpec,
    customers: dict[str, np.ndarray],
    orders: dict[str, np.ndarray],
    rng: np.random.Generator,
    margin_rate: np.ndarray,
) -> dict[str, Any]:
    """Order lines and return lines as index arrays, sorted by time (rows of the clean file).

    ``popularity`` in the result is one first-product distribution per product mix (rows of PRODUCT_MIXES)."""
    n_products = spec.n_products
    period_days = (spec.end - spec.start).days + 1
    price_cents = np.maximum(np.round(rng.lognormal(np.log(60.0), 0.9, size=n_products) * 100), 50).astype(
        np.int64
    )
    rank = rng.permutation(n_products)
    popularity = (rank + 5.0) ** -1.1
    popularity /= popularity.sum()
    if spec.planted:
        z = (margin_rate - margin_rate.mean()) / max(float(margin_rate.std()), 1e-9)
        popularity = popularity * np.exp(PRODUCT_MIX_TILT[:, None] * z)
        popularity /= popularity.sum(axis=1, keepdims=True)
    else:
        popularity = np.tile(popularity, (len(PRODUCT_MIXES), 1))

    n_orders = orders["customer"].size
    order_customer = orders["customer"]
    n_lines = rng.choice(len(LINES_PER_ORDER_SHARE), size=n_orders, p=LINES_PER_ORDER_SHARE) + 1
    line_order = np.repeat(np.arange(n_orders), n_lines)
    order_first_line = np.cumsum(n_lines) - n_lines
    line_number = np.arange(line_order.size) - order_first_line[line_order]
    # distinct products within an order: first by popularity, then strictly increasing offsets (mod n)
    step_max = (n_products - 1) // (len(LINES_PER_ORDER_SHARE) - 1)
    step = np.where(line_number == 0, 0, rng.integers(1, step_max + 1, size=line_order.size))
    offset = np.cumsum(step)
    offset -= offset[order_first_line][line_order]
    if spec.planted:
        cumulative = popularity.cumsum(axis=1)
        draw = rng.random(n_orders)
        order_mix = customers["mix"][order_customer]
        first_product = np.empty(n_orders, dtype=np.int64)
        for mix in range(len(PRODUCT_MIXES)):
            rows = order_mix == mix
            first_product[rows] = np.searchsorted(
                cumulative[mix], draw[rows] * cumulative[mix, -1], side="right"
            )
        first_product = np.minimum(first_product, n_products - 1)
    else:
        first_product = rng.choice(n_products, size=n_orders, p=popularity[0])
    product = (first_product[line_order] + offset) % n_products

    line_customer = order_customer[line_order]
    units_mean = customers["extra_units"][line_customer] * rng.gamma(2.0, 0.5, size=line_order.size)
    quantity = 1 + rng.poisson(units_mean)
    quantity = np.minimum(quantity, MAX_LINE_CENTS // price_cents[product])
    cents = quantity * price_cents[product]
    seconds = orders["seconds"][line_order]
    channel = np.where(
        rng.random(n_orders) < CHANNEL_LOYALTY,
        customers["preferred_channel"][order_customer],
        rng.integers(0, len(CHANNELS), size=n_orders),
    )[line_order]

    # returns: one whole line of an order, 2 days to a few weeks later, dropped if after `end`
    returned = rng.random(n_orders) < customers["return_probability"][order_customer]
    returned_order = np.flatnonzero(returned)
    returned_line = order_first_line[returned_order] + np.floor(
        rng.random(returned_order.size) * n_lines[returned_order]
    ).astype(np.int64)
    lag_days = RETURN_MIN_LAG + np.floor(rng.gamma(2.0, 5.0, size=returned_order.size)).astype(np.int64)
    return_day = seconds[returned_line] // SECONDS_PER_DAY + lag_days
    return_seconds = return_day * SECONDS_PER_DAY + _seconds_of_day(returned_order.size, rng)
    keep = return_day < period_days
    returned_line, return_seconds = returned_line[keep], return_seconds[keep]
    by_time = np.lexsort((returned_line, return_seconds))
    returned_line, return_seconds = returned_line[by_time], return_seconds[by_time]

    # rows: order lines (already chronological: orders are sorted and numbered by time) merged with the
    # return lines by time, a return after the order lines of the same second; no full sort needed
    n_rows = line_order.size + returned_line.size
    return_row = np.searchsorted(seconds, return_seconds, side="right") + np.arange(returned_line.size)
    row_is_return = np.zeros(n_rows, dtype=bool)
    row_is_return[return_row] = True
    line_row = np.flatnonzero(~row_is_return)
    source = np.empty(n_rows, dtype=np.int64)  # the order line each row copies
    source[line_row] = np.arange(line_order.size)
    source[return_row] = returned_line
    row_seconds = np.empty(n_rows, dtype=np.int64)
    row_seconds[line_row] = seconds
    row_seconds[return_row] = return_seconds
    row_doc = np.empty(n_rows, dtype=np.int64)  # order number or return number (0-based)
    row_doc[line_row] = line_order
    row_doc[return_row] = np.arange(returned_line.size)
    sign = np.where(row_is_return, -1, 1)
    return {
        "row_customer": line_customer[source],
        "row_seconds": row_seconds,
        "row_is_return": row_is_return,
        "row_doc": row_doc,
        "row_line": np.where(row_is_return, 0, line_number[source]),
        "row_product": product[source],
        "row_quantity": sign * quantity[source],
        "row_cents": sign * cents[source],
        "row_channel": channel[source],
        "n_orders": n_orders,
        "n_returns": returned_line.size,
        "price_cents": price_cents,
        "popularity": popularity,
    }


def _price_expectations(price_cents: np.ndarray, popularity: np.ndarray, n_products: int) -> dict[str, float]:
    """Expected sum of unit prices of an order (``order``) and of its returned line (``returned_line``).

    Line j's product is the first product shifted by j independent uniform steps (mod n), so its
    distribution is the popularity vector circularly convolved j times with the step distribution.
    """
    max_lines = len(LINES_PER_ORDER_SHARE)
    step_max = (n_products - 1) // (max_lines - 1)
    price = price_cents / 100.0
    distribution = popularity.copy()
    line_price = []
    for j in range(max_lines):
        if j:
            distribution = sum(np.roll(distribution, s) for s in range(1, step_max + 1)) / step_max
        line_price.append(float(distribution @ price))
    cumulative = np.cumsum(line_price)  # expected price sum of an order with k lines, k = 1..5
    lines = np.arange(1, max_lines + 1)
    return {
        "order": float(LINES_PER_ORDER_SHARE @ cumulative),
        "returned_line": float(LINES_PER_ORDER_SHARE @ (cumulative / lines)),
    }


def _truth(
    spec: SynthSpec,
    customers: dict[str, np.ndarray],
    behaviour: dict[str, np.ndarray],
    events: dict[str, np.ndarray],
    lines: dict[str, Any],
    margin_rate: np.ndarray,
    prices: list[dict[str, float]],
    margins: list[dict[str, float]],
    profile: np.ndarray,
) -> dict[str, np.ndarray]:
    """Latent state at the cutoff, analytic expected net spend and margin over the horizon, realized values.

    Expected orders = ∫ rate(t) x month factor x P(no dropout) x P(no lapse) x E[response multiplier] over the
    window, where every factor is exponential in t inside a calendar month (and on either side of the day
    the lapse hazard can start), so each piece integrates in closed form."""
    n = spec.n_customers
    cutoff_t = float((spec.cutoff - spec.start).days + 1)  # end of the cutoff day
    window_end_t = cutoff_t + spec.horizon_days
    active_start = customers["active_start"]
    dropout_t = customers["dropout_t"]
    rate = customers["rate_per_day"]
    trend = customers["trend_per_day"]
    decay = customers["dropout_per_day"]
    prone = behaviour["planted_lapse"]
    onset_t, lapse_t = behaviour["onset_t"], behaviour["lapse_t"]
    started = active_start < cutoff_t
    lapsed = prone & (lapse_t <= cutoff_t)
    distressed = prone & (onset_t <= cutoff_t) & ~lapsed
    alive = started & (dropout_t > cutoff_t) & customers["buys"] & ~lapsed
    responded = behaviour["boost_t"] <= cutoff_t

    unit_factor = 1.0 + customers["extra_units"]

    def by_mix(expectations: list[dict[str, float]], key: str) -> np.ndarray:
        return np.array([e[key] for e in expectations])[customers["mix"]]

    mean_basket = unit_factor * by_mix(prices, "order")
    mean_net_order = unit_factor * (
        by_mix(prices, "order") - customers["return_probability"] * by_mix(prices, "returned_line")
    )
    mean_net_margin = unit_factor * (
        by_mix(margins, "order") - customers["return_probability"] * by_mix(margins, "returned_line")
    )

    # survival (dropout, lapse onset, response) counted from the cutoff (alive) or from the later start
    survival_from = np.maximum(active_start, cutoff_t)
    # in distress at the cutoff: the purchases stop at the known lapse day; prone but not yet in distress:
    # the onset comes at the hazard after survival_from, so the lapse hazard starts LAPSE_LEAD_DAYS later
    hard_end = np.where(distressed, lapse_t, np.inf)
    hazard_from = np.where(prone & ~distressed & ~lapsed, survival_from + LAPSE_LEAD_DAYS, np.inf)
    onset_rate = LAPSE_ONSET_PER_YEAR / DAYS_PER_YEAR
    response_rate = behaviour["response_rate"]
    boost = behaviour["boost"]
    not_responded = (~responded).astype(np.float64)
    bounds, month_of_year = _month_grid(spec.start, cutoff_t, window_end_t)
    expected_orders = np.zeros(n)
    for m in range(len(month_of_year)):
        lo = np.maximum(bounds[m], survival_from)
        hi = np.maximum(np.minimum(bounds[m + 1], hard_end), lo)
        split = np.clip(hazard_from, lo, hi)
        for piece_lo, piece_hi, hazard in ((lo, split, 0.0), (split, hi, onset_rate)):
            lapse_survival = np.exp(-hazard * np.maximum(piece_lo - np.minimum(hazard_from, piece_lo), 0.0))
            at_lo = (
                rate
                * np.exp(trend * (piece_lo - active_start))
                * np.exp(-decay * (piece_lo - survival_from))
                * lapse_survival
            )
            slope = trend - decay - hazard
            # E[multiplier] = (1 + b) - b x [no response yet] x exp(-r (t - survival_from))
            boosted = (1.0 + boost) * _exp_integral(at_lo, slope, piece_lo, piece_hi)
            unboosted = (
                boost
                * not_responded
                * _exp_integral(
                    at_lo * np.exp(-response_rate * (piece_lo - survival_from)),
                    slope - response_rate,
                    piece_lo,
                    piece_hi,
                )
            )
            expected_orders += profile[month_of_year[m]] * (boosted - unboosted)
    future_start = ~started & customers["buys"]
    expected_orders = np.where(alive | future_start, expected_orders, 0.0)
    first_order_in_window = customers["has_first_order"] & ~started & (active_start < window_end_t)
    expected_orders += first_order_in_window
    true_expected_spend = expected_orders * mean_net_order
    true_expected_margin = expected_orders * mean_net_margin

    day = lines["row_seconds"] // SECONDS_PER_DAY
    in_window = (day >= cutoff_t) & (day < window_end_t)
    realized = np.bincount(
        lines["row_customer"][in_window], weights=lines["row_cents"][in_window] / 100.0, minlength=n
    )
    cost = _line_cost_cents(lines["row_cents"][in_window], lines["row_product"][in_window], margin_rate)
    realized_margin = np.bincount(
        lines["row_customer"][in_window],
        weights=(lines["row_cents"][in_window] - cost) / 100.0,
        minlength=n,
    )
    rate_at_cutoff = (
        rate
        * np.where(responded, 1.0 + boost, 1.0)
        * np.exp(trend * np.maximum(cutoff_t - active_start, 0.0))
    )
    tier_names = np.array([*TIERS, ATTRIBUTES_ONLY_TIER], dtype=object)
    tier = np.where(customers["buys"], customers["tier"], len(TIERS))
    period_days = (spec.end - spec.start).days + 1
    dropped = (dropout_t < period_days) & customers["buys"]
    complaint = INTERACTION_KINDS.index("complaint")
    planted = (
        events["planted"] & (events["kind"] == complaint) & (events["seconds"] < cutoff_t * SECONDS_PER_DAY)
    )
    return {
        "tier": tier_names[tier],
        "purchase_rate": rate_at_cutoff,
        "mean_basket": np.where(customers["buys"], mean_basket, 0.0),
        "alive_at_cutoff": alive,
        "dropout_day": np.where(dropped, np.floor(dropout_t), -1).astype(np.int64),
        "dropout_dropped": dropped,
        "true_expected_spend": np.round(true_expected_spend, 2),
        "realized_spend": np.round(realized, 2),
        "true_expected_margin": np.round(true_expected_margin, 2),
        "realized_margin": np.round(realized_margin, 2),
        "product_mix": np.array(PRODUCT_MIXES, dtype=object)[customers["mix"]],
        "planted_lapse": prone,
        "onset_day": _day_or_missing(onset_t, period_days),
        "lapse_day": _day_or_missing(lapse_t, period_days),
        "distressed_at_cutoff": distressed,
        "complaints_planted": np.bincount(events["customer"][planted], minlength=n).astype(np.int64),
        "late_payer": behaviour["late_payer"],
        "responder": behaviour["responder"],
        "first_response_day": _day_or_missing(behaviour["boost_t"], period_days),
        "responded_by_cutoff": responded,
    }


def _day_or_missing(t: np.ndarray, period_days: int) -> np.ndarray:
    """Day number of a model time, -1 when never or after the period."""
    inside = np.isfinite(t) & (t < period_days)
    return np.where(inside, np.floor(np.where(inside, t, 0.0)), -1).astype(np.int64)


def _exp_integral(at_lo: np.ndarray, slope: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``∫_lo^hi at_lo * exp(slope (t - lo)) dt`` (0 where hi <= lo)."""
    length = np.maximum(hi - lo, 0.0)
    small = np.abs(slope * length) < 1e-9
    safe = np.where(small, 1.0, slope)
    shape = np.where(small, length * (1 + 0.5 * slope * length), np.expm1(slope * length) / safe)
    return np.where(length > 0, at_lo * shape, 0.0)


def _line_cost_cents(cents: np.ndarray, product: np.ndarray, margin_rate: np.ndarray) -> np.ndarray:
    """Line cost in cents: |amount| x (1 - the product's margin rate), rounded, with the amount's sign."""
    return np.sign(cents) * np.round(np.abs(cents) * (1.0 - margin_rate[product])).astype(np.int64)


def _inject_faults(
    spec: SynthSpec, lines: dict[str, Any], rng: np.random.Generator
) -> tuple[dict[str, int], dict[str, Any], np.ndarray]:
    """Append one-fault rows to the line arrays and return counts, text overrides and the row order.

    Every injected row is built from a distinct clean first order line (a template). All but duplicates and
    non-product lines get a fresh order id, so no injected row can duplicate another row. Duplicates are
    exact copies placed after their original.
    """
    n_clean = lines["row_customer"].size
    scale = int(min(40, max(5, round(5 * np.sqrt(spec.n_customers / 100)))))
    reasons = [
        QuarantineReason.MISSING_CUSTOMER_ID,
        QuarantineReason.UNPARSEABLE_TIMESTAMP,
        QuarantineReason.TIMESTAMP_OUT_OF_RANGE,
        QuarantineReason.FUTURE_TIMESTAMP,
        QuarantineReason.NON_NUMERIC_AMOUNT,
        QuarantineReason.NON_PRODUCT,
        QuarantineReason.DUPLICATE_ROW,
        QuarantineReason.ZERO_AMOUNT,
        QuarantineReason.OUTLIER_AMOUNT,
    ]
    counts = rng.integers((scale + 1) // 2, scale + 1, size=len(reasons))
    candidates = np.flatnonzero(~lines["row_is_return"] & (lines["row_line"] == 0))
    if counts.sum() > candidates.size:  # tiny data: share the available templates round-robin
        counts = np.minimum(
            counts, np.bincount(np.arange(candidates.size) % len(reasons), minlength=len(reasons))
        )
    templates = rng.choice(candidates, size=int(counts.sum()), replace=False)
    reason_of = np.repeat(np.arange(len(reasons)), counts)
    n_bad = templates.size

    bad = {key: lines[key][templates].copy() for key in lines if key.startswith("row_")}
    fresh_doc = lines["n_orders"] + np.arange(n_bad)
    keeps_order_id = np.isin(
        reason_of,
        [reasons.index(QuarantineReason.DUPLICATE_ROW), reasons.index(QuarantineReason.NON_PRODUCT)],
    )
    bad["row_doc"] = np.where(keeps_order_id, bad["row_doc"], fresh_doc)

    def rows_for(reason: QuarantineReason) -> np.ndarray:
        return np.flatnonzero(reason_of == reasons.index(reason))

    def cycled(values: tuple[Any, ...], k: int) -> list[Any]:
        return [values[i] for i in rng.permutation(np.arange(k) % len(values))]

    overrides: dict[str, tuple[list[int], list[Any]]] = {
        "customer_id": ([], []),
        "order_ts": ([], []),
        "amount": ([], []),
        "product_id": ([], []),
    }

    def override(column: str, rows: np.ndarray, values: list[Any]) -> None:
        overrides[column][0].extend((n_clean + rows).tolist())
        overrides[column][1].extend(values)

    rows = rows_for(QuarantineReason.MISSING_CUSTOMER_ID)
    override("customer_id", rows, cycled(MISSING_CUSTOMER_IDS, rows.size))
    rows = rows_for(QuarantineReason.UNPARSEABLE_TIMESTAMP)
    override("order_ts", rows, cycled(UNPARSEABLE_TIMESTAMPS, rows.size))
    rows = rows_for(QuarantineReason.TIMESTAMP_OUT_OF_RANGE)
    bad["row_seconds"][rows] = _random_seconds(
        dt.date(1900, 1, 1), dt.date(1960, 12, 31), rows.size, rng, spec
    )
    rows = rows_for(QuarantineReason.FUTURE_TIMESTAMP)
    bad["row_seconds"][rows] = _random_seconds(
        dt.date(2099, 1, 1), dt.date(2099, 12, 31), rows.size, rng, spec
    )
    rows = rows_for(QuarantineReason.NON_NUMERIC_AMOUNT)
    override("amount", rows, cycled(NON_NUMERIC_AMOUNTS, rows.size))
    rows = rows_for(QuarantineReason.NON_PRODUCT)
    override("product_id", rows, cycled(NON_PRODUCT_CODES, rows.size))
    bad["row_quantity"][rows] = 1
    bad["row_cents"][rows] = rng.integers(500, 30_001, size=rows.size)
    rows = rows_for(QuarantineReason.ZERO_AMOUNT)
    bad["row_cents"][rows] = 0
    rows = rows_for(QuarantineReason.OUTLIER_AMOUNT)
    bad["row_cents"][rows] = rng.integers(100_000_001, 1_000_000_000, size=rows.size)

    for key, values in bad.items():
        lines[key] = np.concatenate([lines[key], values])

    # interleave: an injected row goes just before clean row `slot`; duplicates after their original
    slot = rng.integers(0, n_clean + 1, size=n_bad)
    duplicate = rows_for(QuarantineReason.DUPLICATE_ROW)
    after = templates[duplicate] + 1
    slot[duplicate] = after + np.floor(rng.random(duplicate.size) * (n_clean + 1 - after)).astype(np.int64)
    order = _interleave(n_clean, n_bad, rng, slot)
    injected = {str(reason): int(count) for reason, count in zip(reasons, counts, strict=True) if count}
    text_overrides = {
        column: (np.asarray(idx, dtype=np.int64), values) for column, (idx, values) in overrides.items()
    }
    return injected, text_overrides, order


def _fault_counts(spec: SynthSpec, kinds: int, available: int, rng: np.random.Generator) -> np.ndarray:
    """Rows to inject per fault kind (a few, growing slowly with the population), within ``available``."""
    scale = int(min(20, max(3, round(3 * np.sqrt(spec.n_customers / 100)))))
    counts = rng.integers((scale + 1) // 2, scale + 1, size=kinds)
    if counts.sum() > available:
        counts = np.minimum(counts, np.bincount(np.arange(available) % kinds, minlength=kinds))
    return counts


def _interleave(
    n_clean: int, n_bad: int, rng: np.random.Generator, slot: np.ndarray | None = None
) -> np.ndarray:
    """Row order placing ``n_bad`` appended rows (indices ``n_clean..``) among the clean: each just before clean
    row ``slot`` (drawn at random unless given), rows sharing a slot in random order."""
    if slot is None:
        slot = rng.integers(0, n_clean + 1, size=n_bad)
    placed = np.lexsort((rng.random(n_bad), slot))
    bad_row = np.zeros(n_clean + n_bad, dtype=bool)
    bad_row[slot[placed] + np.arange(n_bad)] = True
    order = np.empty(n_clean + n_bad, dtype=np.int64)
    order[bad_row] = n_clean + placed
    order[~bad_row] = np.arange(n_clean)
    return order


def _inject_invoice_faults(
    spec: SynthSpec, invoices: dict[str, np.ndarray], rng: np.random.Generator
) -> tuple[dict[str, int], np.ndarray]:
    """Append one-fault copies of clean invoices (fresh invoice numbers) and return counts and row order."""
    reasons = ("paid_before_issued", "negative_amount", "missing_invoice_id")
    n_clean = invoices["customer"].size
    candidates = np.flatnonzero(invoices["paid_known"])
    counts = _fault_counts(spec, len(reasons), candidates.size, rng)
    templates = rng.choice(candidates, size=int(counts.sum()), replace=False)
    reason_of = np.repeat(np.arange(len(reasons)), counts)
    bad = {key: values[templates].copy() for key, values in invoices.items()}
    bad["number"] = n_clean + np.arange(templates.size)
    rows = reason_of == 0
    bad["paid"][rows] = bad["issued"][rows] - rng.integers(1, 21, size=int(rows.sum()))
    rows = reason_of == 1
    bad["cents"][rows] = -bad["cents"][rows]
    bad["number"][reason_of == 2] = -1  # no invoice id
    for key, values in bad.items():
        invoices[key] = np.concatenate([invoices[key], values])
    injected = {reason: int(count) for reason, count in zip(reasons, counts, strict=True) if count}
    return injected, _interleave(n_clean, templates.size, rng)


def _inject_interaction_faults(
    spec: SynthSpec, events: dict[str, np.ndarray], rng: np.random.Generator
) -> tuple[dict[str, int], np.ndarray]:
    """Append one-fault copies of clean interactions and return counts and row order.

    Codes outside the clean ranges mark the faults: customer -1 (missing id; the variants of
    :data:`MISSING_CUSTOMER_IDS`), seconds below ``UNPARSEABLE_SECONDS`` (text of
    :data:`UNPARSEABLE_TIMESTAMPS`) and kinds from ``len(INTERACTION_KINDS)`` on (:data:`UNKNOWN_KINDS`)."""
    reasons = ("bad_timestamp", "unknown_kind", "missing_customer_id")  # segml.ingest.InteractionReason
    n_clean = events["customer"].size
    counts = _fault_counts(spec, len(reasons), n_clean, rng)
    templates = rng.choice(n_clean, size=int(counts.sum()), replace=False)
    reason_of = np.repeat(np.arange(len(reasons)), counts)
    bad = {key: values[templates].copy() for key, values in events.items()}
    rows = np.flatnonzero(reason_of == 0)
    bad["seconds"][rows] = UNPARSEABLE_SECONDS - 1 - rng.permutation(rows.size) % len(UNPARSEABLE_TIMESTAMPS)
    rows = np.flatnonzero(reason_of == 1)
    bad["kind"][rows] = len(INTERACTION_KINDS) + rng.permutation(rows.size) % len(UNKNOWN_KINDS)
    rows = np.flatnonzero(reason_of == 2)
    bad["customer"][rows] = -1 - rng.permutation(rows.size) % len(MISSING_CUSTOMER_IDS)
    bad["planted"][:] = False
    for key, values in bad.items():
        events[key] = np.concatenate([events[key], values])
    injected = {reason: int(count) for reason, count in zip(reasons, counts, strict=True) if count}
    return injected, _interleave(n_clean, templates.size, rng)


def _add_stranger_events(
    spec: SynthSpec,
    events: dict[str, np.ndarray],
    n_clean: int,
    order: np.ndarray,
    rng: np.random.Generator,
) -> tuple[dict[str, int], np.ndarray]:
    """Append copies of a few of the ``n_clean`` clean events (the first rows) under customer ids outside the
    population (codes from ``n_customers`` on, written ``U0000001``…), after every other row; return their
    counts and the new row order."""
    n_rows = events["customer"].size
    count = min(n_clean, max(2, n_clean // 1000))
    if count == 0:
        return {"events": 0, "customers": 0}, order
    templates = rng.choice(n_clean, size=count, replace=False)
    n_ids = max(1, count // 3)
    extra = {key: values[templates].copy() for key, values in events.items()}
    extra["customer"] = spec.n_customers + rng.integers(0, n_ids, size=count)
    extra["planted"][:] = False
    for key, values in extra.items():
        events[key] = np.concatenate([events[key], values])
    order = np.concatenate([np.asarray(order), np.arange(n_rows, n_rows + count)])
    return {"events": int(count), "customers": int(np.unique(extra["customer"]).size)}, order


def _random_seconds(
    first: dt.date, last: dt.date, n: int, rng: np.random.Generator, spec: SynthSpec
) -> np.ndarray:
    """Random times between two dates, as seconds since ``spec.start`` (may be negative)."""
    lo = (first - spec.start).days * SECONDS_PER_DAY
    hi = ((last - spec.start).days + 1) * SECONDS_PER_DAY
    return rng.integers(lo, hi, size=n)


# --------------------------------------------------------------------------------------------------------------
# Arrow tables


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    text = pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, text, "")


def _labels(names: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pa.array(names, type=pa.string()).take(pa.array(codes, type=pa.int64()))


def _customer_ids(n: int) -> pa.Array:
    return _ids("C", np.arange(1, n + 1), max(7, len(str(n))))


def _cents_text(cents: np.ndarray) -> pa.Array:
    """Exact ``-123.45`` text for integer cents."""
    magnitude = np.abs(cents)
    whole = pc.cast(pa.array(magnitude // 100), pa.string())
    fraction = pc.utf8_lpad(pc.cast(pa.array(magnitude % 100), pa.string()), 2, "0")
    sign = pc.if_else(pa.array(cents < 0), "-", "")
    return pc.binary_join_element_wise(sign, whole, ".", fraction, "")


def _timestamp_text(epoch_seconds: np.ndarray) -> pa.Array:
    """``YYYY-MM-DD HH:MM:SS`` text, built from per-day and per-second-of-day lookups (fast for 10M rows)."""
    day, second_of_day = np.divmod(epoch_seconds, SECONDS_PER_DAY)
    first_day = int(day.min(initial=0))
    days = np.arange(first_day, int(day.max(initial=0)) + 1).astype("datetime64[D]")
    day_text = pa.array(days.astype(str)).take(pa.array(day - first_day))
    clock = pc.strftime(pa.array(np.arange(SECONDS_PER_DAY).astype("datetime64[s]")), format="%H:%M:%S")
    return pc.binary_join_element_wise(day_text, clock.take(pa.array(second_of_day)), " ")


def _transactions_table(
    spec: SynthSpec,
    customers: dict[str, np.ndarray],
    lines: dict[str, Any],
    margin_rate: np.ndarray,
    overrides: dict[str, tuple[np.ndarray, list[Any]]],
    order: np.ndarray | None,
) -> pa.Table:
    n_customers = spec.n_customers
    is_return = lines["row_is_return"]
    n_order_ids = int(lines["row_doc"][~is_return].max(initial=-1)) + 1
    n_return_ids = int(lines["row_doc"][is_return].max(initial=-1)) + 1
    doc_width = max(8, len(str(max(n_order_ids, n_return_ids))))
    document_ids = pa.concat_arrays(
        [
            _ids("O", np.arange(1, n_order_ids + 1), doc_width),
            _ids("R", np.arange(1, n_return_ids + 1), doc_width),
        ]
    )
    document = np.where(is_return, n_order_ids + lines["row_doc"], lines["row_doc"])
    product_ids = _ids("P", np.arange(1, spec.n_products + 1), max(4, len(str(spec.n_products))))
    epoch_seconds = (spec.start - dt.date(1970, 1, 1)).days * SECONDS_PER_DAY + lines["row_seconds"]
    timestamps = pa.array(epoch_seconds.astype("datetime64[s]")).cast(pa.timestamp("us"))
    columns = {
        "customer_id": _customer_ids(n_customers).take(pa.array(lines["row_customer"])),
        "order_id": document_ids.take(pa.array(document)),
        "order_ts": _timestamp_text(epoch_seconds) if spec.dirty else timestamps,
        "amount": _cents_text(lines["row_cents"]) if spec.dirty else pa.array(lines["row_cents"] / 100.0),
        "cost": pa.array(_line_cost_cents(lines["row_cents"], lines["row_product"], margin_rate) / 100.0),
        "quantity": pa.array(lines["row_quantity"], type=pa.int64()),
        "product_id": product_ids.take(pa.array(lines["row_product"])),
        "channel": _labels(CHANNELS, lines["row_channel"]),
    }
    for column, (rows, values) in overrides.items():
        if rows.size:
            mask = np.zeros(len(lines["row_customer"]), dtype=bool)
            mask[rows] = True
            # replace_with_mask consumes replacements in row order
            replacement = [values[i] for i in np.argsort(rows, kind="stable")]
            columns[column] = pc.replace_with_mask(
                columns[column], pa.array(mask), pa.array(replacement, type=pa.string())
            )
    table = pa.table(columns)
    return table.take(pa.array(order)) if order is not None else table


def _epoch_seconds(spec: SynthSpec, seconds: np.ndarray) -> np.ndarray:
    return (spec.start - dt.date(1970, 1, 1)).days * SECONDS_PER_DAY + seconds


def _dates(spec: SynthSpec, days: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.datetime64(spec.start, "D") + days, type=pa.date32(), mask=mask)


def _invoices_table(spec: SynthSpec, invoices: dict[str, np.ndarray], order: np.ndarray | None) -> pa.Table:
    number = invoices["number"]
    width = max(8, len(str(int(number.max(initial=0)) + 1)))
    invoice_ids = _ids("I", np.maximum(number, 0) + 1, width)
    table = pa.table(
        {
            "invoice_id": pc.if_else(pa.array(number < 0), pa.scalar(None, pa.string()), invoice_ids),
            "customer_id": _customer_ids(spec.n_customers).take(pa.array(invoices["customer"])),
            "issued": _dates(spec, invoices["issued"]),
            "due": _dates(spec, invoices["due"]),
            "paid": _dates(spec, invoices["paid"], mask=~invoices["paid_known"]),
            "amount": pa.array(invoices["cents"] / 100.0),
        }
    )
    return table.take(pa.array(order)) if order is not None else table


def _interactions_table(spec: SynthSpec, events: dict[str, np.ndarray], order: np.ndarray | None) -> pa.Table:
    customer = events["customer"]
    missing = customer < 0
    stranger = customer >= spec.n_customers
    ids = _customer_ids(spec.n_customers).take(pa.array(np.where(missing | stranger, 0, customer)))
    if stranger.any():
        outside = _ids("U", customer[stranger] - spec.n_customers + 1, 7)
        ids = pc.replace_with_mask(ids, pa.array(stranger), outside)
    seconds = events["seconds"]
    unparseable = seconds <= UNPARSEABLE_SECONDS
    epoch = _epoch_seconds(spec, np.where(unparseable, 0, seconds))
    if spec.dirty:
        timestamps = _timestamp_text(epoch)
        bad_text = [UNPARSEABLE_TIMESTAMPS[int(UNPARSEABLE_SECONDS - 1 - s)] for s in seconds[unparseable]]
        if bad_text:
            timestamps = pc.replace_with_mask(
                timestamps, pa.array(unparseable), pa.array(bad_text, pa.string())
            )
    else:
        timestamps = pa.array(epoch.astype("datetime64[s]")).cast(pa.timestamp("us"))
    if missing.any():
        missing_text = [MISSING_CUSTOMER_IDS[int(-1 - c)] for c in customer[missing]]
        ids = pc.replace_with_mask(ids, pa.array(missing), pa.array(missing_text, pa.string()))
    outcome = events["outcome"]
    score = events["score"]
    table = pa.table(
        {
            "customer_id": ids,
            "timestamp": timestamps,
            "kind": _labels(INTERACTION_KIND_LABELS + UNKNOWN_KINDS, events["kind"]),
            "channel": _labels(INTERACTION_CHANNELS, events["channel"]),
            "outcome": pa.array(INTERACTION_OUTCOMES, type=pa.string()).take(
                pa.array(np.maximum(outcome, 0), mask=outcome < 0)
            ),
            "score": pa.array(np.nan_to_num(score), mask=np.isnan(score)),
        }
    )
    return table.take(pa.array(order)) if order is not None else table


def _customers_table(spec: SynthSpec, customers: dict[str, np.ndarray]) -> pa.Table:
    signup = np.datetime64(spec.start, "D") + customers["signup"]
    return pa.table(
        {
            "customer_id": _customer_ids(spec.n_customers),
            "signup_date": pa.array(signup, type=pa.date32()),
            "industry": _labels(INDUSTRIES, customers["industry"]),
            "size": _labels(SIZES, customers["size"]),
            "region": _labels(REGIONS, customers["region"]),
            "org_type": _labels(ORG_TYPES, customers["org_type"]),
        }
    )


def _truth_table(spec: SynthSpec, customers: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> pa.Table:
    dropout_date = np.datetime64(spec.start, "D") + truth["dropout_day"]

    def date_or_null(days: np.ndarray) -> pa.Array:
        return _dates(spec, np.maximum(days, 0), mask=days < 0)

    return pa.table(
        {
            "customer_id": _customer_ids(spec.n_customers),
            "tier": pa.array(truth["tier"], type=pa.string()),
            "purchase_rate": pa.array(truth["purchase_rate"]),
            "mean_basket": pa.array(truth["mean_basket"]),
            "alive_at_cutoff": pa.array(truth["alive_at_cutoff"]),
            "dropout_date": pa.array(dropout_date, type=pa.date32(), mask=~truth["dropout_dropped"]),
            "true_expected_spend": pa.array(truth["true_expected_spend"]),
            "realized_spend": pa.array(truth["realized_spend"]),
            "dropout_rate": pa.array(customers["dropout_per_day"]),
            "trend_per_year": pa.array(customers["trend_per_day"] * 365.0),
            "return_probability": pa.array(customers["return_probability"]),
            "true_expected_margin": pa.array(truth["true_expected_margin"]),
            "realized_margin": pa.array(truth["realized_margin"]),
            "product_mix": pa.array(truth["product_mix"], type=pa.string()),
            "planted_lapse": pa.array(truth["planted_lapse"]),
            "lapse_onset_date": date_or_null(truth["onset_day"]),
            "lapse_date": date_or_null(truth["lapse_day"]),
            "distressed_at_cutoff": pa.array(truth["distressed_at_cutoff"]),
            "complaints_planted": pa.array(truth["complaints_planted"], type=pa.int64()),
            "late_payer": pa.array(truth["late_payer"]),
            "responder": pa.array(truth["responder"]),
            "first_response_date": date_or_null(truth["first_response_day"]),
            "responded_by_cutoff": pa.array(truth["responded_by_cutoff"]),
        }
    )
