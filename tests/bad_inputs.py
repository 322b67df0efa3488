"""The bad-input matrix: every case a user or an attacker may feed the CLI, and what segml must do with it.

One list drives ``tests/test_bad_inputs.py`` (each case through the real CLI) and ``docs/bad_inputs.md`` (the
table is generated from it; a test checks the doc matches). Regenerate the doc after changing a case::

    PYTHONPATH=src python tests/bad_inputs.py > docs/bad_inputs.md

Outcomes: ``error`` — exit code ≠ 0, one ``error:`` line naming the file/column/problem (the ``expect`` words),
no traceback; ``quarantine`` — exit 0 and the rows quarantined with the ``expect`` reasons, always
``rows_in == rows_kept + rows_quarantined``; ``ok`` — exit 0, nothing quarantined.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field

HEADER = "id,ts,value,order\n"
GOOD = "".join(f"c{i % 7},2024-01-{1 + i % 28:02d},{10 + i}.5,o{i}\n" for i in range(40))


@dataclass(frozen=True)
class Case:
    """One bad input and its required outcome."""

    id: str
    what: str
    outcome: str  # "error" | "quarantine" | "ok"
    expect: tuple[str, ...] = ()  # words of the error line, or the quarantine reasons
    kind: str = "ingest"  # "ingest" (a CSV/Parquet file through `segml ingest`) | "artifact" (`segml verify`)
    data: bytes = b""  # ingest: the file's bytes
    file: str = "tx.csv"
    source: str = ""  # ingest: extra YAML lines of the transaction source
    cleaning: str = ""  # ingest: extra YAML lines of data.cleaning
    columns: str = "{customer_id: id, timestamp: ts, amount: value, order_id: order}"
    tamper: str = ""  # artifact: name of a tampering in test_bad_inputs.TAMPERINGS
    invoices: bytes = b""  # ingest: an invoices file (``data.invoices``) beside the good transactions
    invoice_columns: str = ""  # ingest: the invoices' role mapping (default INVOICE_COLUMNS)
    interactions: bytes = (
        b""  # ingest: an interactions file (``data.interactions``) beside the good transactions
    )
    interaction_columns: str = ""  # ingest: the interactions' role mapping (default INTERACTION_COLUMNS)
    interaction_kinds: str = (
        ""  # ingest: the interactions' ``kinds:`` mapping (default INTERACTION_KINDS_MAP)
    )
    slow: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)


def _csv(*rows: str, header: str = HEADER) -> bytes:
    return (header + GOOD + "".join(f"{row}\n" for row in rows)).encode("utf-8")


#: the good rows with a line cost (``cost`` role) after the order id
COST_GOOD = "".join(f"{line},{5 + i}\n" for i, line in enumerate(GOOD.splitlines()))
COST_COLUMNS = "{customer_id: id, timestamp: ts, amount: value, order_id: order, cost: cost}"


def _cost_csv(*rows: str, good: str = COST_GOOD) -> bytes:
    return ("id,ts,value,order,cost\n" + good + "".join(f"{row}\n" for row in rows)).encode("utf-8")


INVOICE_HEADER = "inv,cust,issued,due,paid,total\n"
#: good invoices of the GOOD customers: issued in January, due 30 days later, every third one unpaid
INVOICE_GOOD = "".join(
    f"n{i},c{i % 7},2024-01-{1 + i:02d},2024-01-{31 if i < 1 else 30:02d},"
    f"{'' if i % 3 == 0 else f'2024-02-{1 + i:02d}'},{100 + i}.25\n"
    for i in range(20)
)
INVOICE_COLUMNS = "{invoice_id: inv, customer_id: cust, issued: issued, due: due, paid: paid, amount: total}"


def _invoices_csv(*rows: str, good: str = INVOICE_GOOD) -> bytes:
    return (INVOICE_HEADER + good + "".join(f"{row}\n" for row in rows)).encode("utf-8")


def _invoice_case(case_id: str, what: str, reason: str, row: str) -> Case:
    """A good transactions file and an invoices file with one bad row among good ones."""
    return Case(case_id, what, "quarantine", (reason,), data=_csv(), invoices=_invoices_csv(row))


def _invoice_error(
    case_id: str, what: str, expect: tuple[str, ...], *, invoices: bytes | None = None, columns: str = ""
) -> Case:
    """A good transactions file and an invoices file (the good invoices unless given) ingest must refuse."""
    invoices = _invoices_csv() if invoices is None else invoices
    return Case(case_id, what, "error", expect, data=_csv(), invoices=invoices, invoice_columns=columns)


INVOICE_CASES = [
    _invoice_case("invoice-short-row", "an invoice row with too few fields", "malformed_row", "n90,c1"),
    _invoice_case(
        "invoice-missing-id",
        "an invoice without an invoice id",
        "missing_invoice_id",
        ",c1,2024-01-02,2024-02-01,,10",
    ),
    _invoice_case(
        "invoice-missing-customer",
        "an invoice without a customer id",
        "missing_customer_id",
        "n91,,2024-01-02,2024-02-01,,10",
    ),
    _invoice_case(
        "invoice-bad-issued",
        "an invoice issued on '2024-13-45'",
        "bad_date",
        "n92,c1,2024-13-45,2024-02-01,,10",
    ),
    _invoice_case(
        "invoice-bad-paid",
        "an invoice paid on 'soon'",
        "bad_date",
        "n93,c1,2024-01-02,2024-02-01,soon,10",
    ),
    _invoice_case(
        "invoice-text-amount",
        "an invoice amount 'ten'",
        "non_numeric_amount",
        "n94,c1,2024-01-02,2024-02-01,,ten",
    ),
    _invoice_case(
        "invoice-due-before-issued",
        "an invoice due before it was issued",
        "due_before_issued",
        "n95,c1,2024-01-10,2024-01-05,,10",
    ),
    _invoice_case(
        "invoice-paid-before-issued",
        "an invoice paid before it was issued",
        "paid_before_issued",
        "n96,c1,2024-01-10,2024-02-10,2024-01-09,10",
    ),
    _invoice_case(
        "invoice-negative-amount",
        "an invoice of -10",
        "negative_amount",
        "n97,c1,2024-01-10,2024-02-10,,-10",
    ),
    _invoice_case(
        "invoice-duplicate",
        "an invoice id given twice (the earliest issued is kept)",
        "duplicate_invoice",
        "n1,c3,2024-01-20,2024-02-20,,55",
    ),
    _invoice_error(
        "invoice-role-missing",
        "data.invoices without a paid role",
        ("data.invoices.columns", "'paid'"),
        columns="{invoice_id: inv, customer_id: cust, issued: issued, due: due, amount: total}",
    ),
    _invoice_error(
        "invoice-unknown-role",
        "data.invoices with an unknown role",
        ("data.invoices.columns", "unknown role 'status'"),
        columns=INVOICE_COLUMNS.replace("}", ", status: paid}"),
    ),
    _invoice_error(
        "invoice-column-absent",
        "an invoice role mapped to a column the file lacks",
        ("invoices.csv", "'settled'", "role paid"),
        columns=INVOICE_COLUMNS.replace("paid: paid", "paid: settled"),
    ),
    _invoice_error(
        "invoice-wrong-date-column",
        "the invoices' issued role mapped to a text column",
        ("invoices.csv", "'cust'", "role issued"),
        columns=INVOICE_COLUMNS.replace("issued: issued", "issued: cust"),
    ),
    _invoice_error("invoice-file-empty", "an empty invoices file", ("invoices.csv", "empty"), invoices=b"\n"),
]

INTERACTION_HEADER = "who,when,what,via,result,rating\n"
#: good interactions of the GOOD customers in January: the file's own kind words, a survey score on every fifth
INTERACTION_GOOD = "".join(
    f"c{i % 7},2024-01-{1 + i % 28:02d} 10:{i:02d},{('Beschwerde', 'ticket', 'Mailing', 'visit', 'survey')[i % 5]},"
    f"web,,{'' if i % 5 != 4 else i % 10}\n"
    for i in range(25)
)
INTERACTION_COLUMNS = (
    "{customer_id: who, timestamp: when, kind: what, channel: via, outcome: result, score: rating}"
)
INTERACTION_KINDS_MAP = "{Beschwerde: complaint, mailing: campaign_send}"


def _interactions_csv(*rows: str, good: str = INTERACTION_GOOD) -> bytes:
    return (INTERACTION_HEADER + good + "".join(f"{row}\n" for row in rows)).encode("utf-8")


def _interaction_case(case_id: str, what: str, reason: str, row: str) -> Case:
    """A good transactions file and an interactions file with one bad row among good ones."""
    return Case(case_id, what, "quarantine", (reason,), data=_csv(), interactions=_interactions_csv(row))


def _interaction_error(
    case_id: str,
    what: str,
    expect: tuple[str, ...],
    *,
    interactions: bytes | None = None,
    columns: str = "",
    kinds: str = "",
) -> Case:
    """A good transactions file and an interactions file (the good events unless given) ingest must refuse."""
    interactions = _interactions_csv() if interactions is None else interactions
    return Case(
        case_id,
        what,
        "error",
        expect,
        data=_csv(),
        interactions=interactions,
        interaction_columns=columns,
        interaction_kinds=kinds,
    )


INTERACTION_CASES = [
    _interaction_case(
        "interaction-short-row", "an interaction row with too few fields", "malformed_row", "c1,2024-01-03"
    ),
    _interaction_case(
        "interaction-missing-customer",
        "an interaction without a customer id",
        "missing_customer_id",
        ",2024-01-03,visit,web,,",
    ),
    _interaction_case(
        "interaction-bad-timestamp",
        "an interaction dated '2024-13-45'",
        "bad_timestamp",
        "c1,2024-13-45,visit,web,,",
    ),
    _interaction_case(
        "interaction-future",
        "an interaction after cleaning.max_date",
        "future_timestamp",
        "c1,2031-01-01,visit,web,,",
    ),
    _interaction_case(
        "interaction-too-old",
        "an interaction before cleaning.min_date",
        "timestamp_out_of_range",
        "c1,1999-12-31,visit,web,,",
    ),
    _interaction_case(
        "interaction-unknown-kind",
        "an interaction kind 'fax' neither in kinds: nor a segml kind",
        "unknown_kind",
        "c1,2024-01-03,fax,web,,",
    ),
    _interaction_case(
        "interaction-bad-score",
        "a survey score 'good'",
        "bad_score",
        "c1,2024-01-03,survey,web,,good",
    ),
    _interaction_case(
        "interaction-duplicate",
        "the same event twice (the first is kept)",
        "duplicate_event",
        "c1,2024-01-02 10:01,ticket,web,,",
    ),
    _interaction_error(
        "interaction-role-missing",
        "data.interactions without a kind role",
        ("data.interactions.columns", "'kind'"),
        columns="{customer_id: who, timestamp: when}",
    ),
    _interaction_error(
        "interaction-unknown-role",
        "data.interactions with an unknown role",
        ("data.interactions.columns", "unknown role 'mood'"),
        columns=INTERACTION_COLUMNS.replace("}", ", mood: via}"),
    ),
    _interaction_error(
        "interaction-kinds-not-segml",
        "a kinds: entry mapping to a kind segml does not know",
        ("data.interactions.kinds.Beschwerde", "'gripe'", "not a segml kind"),
        kinds="{Beschwerde: gripe}",
    ),
    _interaction_error(
        "interaction-column-absent",
        "an interaction role mapped to a column the file lacks",
        ("interactions.csv", "'medium'", "role channel"),
        columns=INTERACTION_COLUMNS.replace("channel: via", "channel: medium"),
    ),
    _interaction_error(
        "interaction-wrong-kind-column",
        "the interactions' kind role mapped to the channel column",
        ("interactions.csv", "'via'", "role kind", "kinds"),
        columns=INTERACTION_COLUMNS.replace("kind: what", "kind: via"),
    ),
    _interaction_error(
        "interaction-kinds-unmapped",
        "the file's own kind words without a kinds: mapping",
        ("interactions.csv", "'what'", "role kind"),
        interactions=_interactions_csv(
            good="".join(f"c{i % 7},2024-01-{1 + i:02d},Anruf,phone,,\n" for i in range(10))
        ),
    ),
    _interaction_error(
        "interaction-file-empty",
        "an empty interactions file",
        ("interactions.csv", "empty"),
        interactions=b"\n",
    ),
]

INGEST_CASES = [
    Case(
        "short-row",
        "one row with too few fields among good rows",
        "quarantine",
        ("malformed_row",),
        data=_csv("c1,2024-01-05"),
    ),
    Case(
        "long-row",
        "one row with too many fields",
        "quarantine",
        ("malformed_row",),
        data=_csv("c1,2024-01-05,3,o99,extra"),
    ),
    Case(
        "unterminated-quote",
        "a field opening a quote it never closes",
        "quarantine",
        ("malformed_row",),
        data=_csv('c1,"2024-01-05,3,o98', "c2,2024-01-06,4,o97"),
    ),
    Case(
        "short-row-small-file",
        "a short row in a two-row file",
        "quarantine",
        ("malformed_row",),
        data=(HEADER + "c1,2024-01-01\nc2,2024-01-02,3,o1\n").encode(),
    ),
    Case(
        "short-row-crlf",
        "a short row in a CRLF file",
        "quarantine",
        ("malformed_row",),
        data=_csv("c1,2024-01-05").replace(b"\n", b"\r\n"),
    ),
    Case(
        "short-row-gzip",
        "a short row in a gzip-compressed CSV",
        "quarantine",
        ("malformed_row",),
        data=gzip.compress(_csv("c1,2024-01-05"), mtime=0),
        file="tx.csv.gz",
    ),
    Case(
        "mostly-malformed",
        "header with commas, rows with semicolons",
        "error",
        ("tx.csv", "malformed", "delimiter"),
        data=(HEADER + "".join(f"c{i};2024-01-01;3;o{i}\n" for i in range(10))).encode(),
    ),
    Case(
        "duplicate-header",
        "the same column name twice",
        "error",
        ("tx.csv", "'value'", "twice"),
        data=("id,ts,value,value,order\n" + "c1,2024-01-01,1,2,o1\n").encode(),
    ),
    Case(
        "case-ambiguous-header",
        "'Value' and 'value' in one header",
        "error",
        ("tx.csv", "'Value'", "'value'", "case"),
        data=("id,ts,Value,value,order\n" + "c1,2024-01-01,1,2,o1\n").encode(),
    ),
    Case(
        "latin-1-bytes",
        "Latin-1 bytes in a file read as UTF-8",
        "error",
        ("tx.csv", "utf-8", "encoding"),
        data=_csv("Jos\xe9,2024-01-05,3,o99").replace("Jos\xe9".encode(), "Jos\xe9".encode("latin-1")),
    ),
    Case(
        "latin-1-declared",
        "the same file with `encoding: latin-1`",
        "ok",
        data=(HEADER + "Jos\xe9,2024-01-05,3,o99\n").encode("latin-1"),
        source="encoding: latin-1",
    ),
    Case(
        "utf-16-undeclared",
        "a UTF-16 file read as UTF-8",
        "error",
        ("tx.csv", "utf-8", "encoding"),
        data=(HEADER + "c1,2024-01-01,1,o1\n").encode("utf-16"),
    ),
    Case("binary-garbage", "random bytes named .csv", "error", ("tx.csv",), data=bytes(range(256)) * 8),
    Case(
        "header-line-empty",
        "the first line is empty",
        "error",
        ("tx.csv", "header"),
        data=("\n" + HEADER + "c1,2024-01-01,1,o1\n").encode(),
    ),
    Case(
        "null-customer",
        "customer id written as NULL",
        "quarantine",
        ("missing_customer_id",),
        data=_csv("NULL,2024-01-05,3,o99"),
    ),
    Case(
        "na-customer",
        "customer id written as N/A",
        "quarantine",
        ("missing_customer_id",),
        data=_csv("N/A,2024-01-05,3,o99"),
    ),
    Case(
        "none-customer",
        "customer id written as None",
        "quarantine",
        ("missing_customer_id",),
        data=_csv("None,2024-01-05,3,o99"),
    ),
    Case(
        "hash-na-customer",
        "customer id written as #N/A",
        "quarantine",
        ("missing_customer_id",),
        data=_csv("#N/A,2024-01-05,3,o99"),
    ),
    Case(
        "custom-null-token",
        "`null_values: ['-']` and a customer id '-'",
        "quarantine",
        ("missing_customer_id",),
        data=_csv("-,2024-01-05,3,o99"),
        cleaning="null_values: ['-']",
    ),
    Case(
        "empty-customer",
        "an empty customer id",
        "quarantine",
        ("missing_customer_id",),
        data=_csv(",2024-01-05,3,o99"),
    ),
    Case(
        "blank-customer",
        "a customer id of spaces",
        "quarantine",
        ("missing_customer_id",),
        data=_csv("   ,2024-01-05,3,o99"),
    ),
    Case(
        "nan-amount",
        "amount written as NaN",
        "quarantine",
        ("non_numeric_amount",),
        data=_csv("c1,2024-01-05,NaN,o99"),
    ),
    Case(
        "text-amount",
        "amount 'abc'",
        "quarantine",
        ("non_numeric_amount",),
        data=_csv("c1,2024-01-05,abc,o99"),
    ),
    Case(
        "infinite-amount",
        "amount 'inf'",
        "quarantine",
        ("non_numeric_amount",),
        data=_csv("c1,2024-01-05,inf,o99"),
    ),
    Case(
        "nat-timestamp",
        "timestamp written as NaT",
        "quarantine",
        ("unparseable_timestamp",),
        data=_csv("c1,NaT,3,o99"),
    ),
    Case(
        "impossible-date",
        "timestamp 2024-02-30",
        "quarantine",
        ("unparseable_timestamp",),
        data=_csv("c1,2024-02-30,3,o99"),
    ),
    Case(
        "text-date",
        "timestamp 'yesterday'",
        "quarantine",
        ("unparseable_timestamp",),
        data=_csv("c1,yesterday,3,o99"),
    ),
    Case(
        "future-date",
        "a timestamp after cleaning.max_date",
        "quarantine",
        ("future_timestamp",),
        data=_csv("c1,2031-01-05,3,o99"),
    ),
    Case(
        "ancient-date",
        "a timestamp before cleaning.min_date",
        "quarantine",
        ("timestamp_out_of_range",),
        data=_csv("c1,1960-01-05,3,o99"),
    ),
    Case(
        "duplicate-order-line",
        "an order line repeated under its order id",
        "quarantine",
        ("duplicate_row",),
        data=_csv("c1,2024-01-05,3,o99", "c1,2024-01-05,3,o99"),
    ),
    Case(
        "several-faults",
        "a short row, a NULL id and a bad amount together",
        "quarantine",
        ("malformed_row", "missing_customer_id", "non_numeric_amount"),
        data=_csv("c1,2024-01-05", "NULL,2024-01-05,3,o98", "c2,2024-01-05,x,o97"),
    ),
    Case(
        "mapped-column-absent",
        "the mapping names a column the file lacks",
        "error",
        ("tx.csv", "'total'", "not found"),
        data=_csv(),
        columns="{customer_id: id, timestamp: ts, amount: total}",
    ),
    Case(
        "unknown-role",
        "the mapping uses an unknown role",
        "error",
        ("columns", "'colour'"),
        data=_csv(),
        columns="{customer_id: id, timestamp: ts, amount: value, colour: order}",
    ),
    Case(
        "no-amount-role",
        "neither amount nor quantity × unit price mapped",
        "error",
        ("amount",),
        data=_csv(),
        columns="{customer_id: id, timestamp: ts}",
    ),
    Case(
        "file-missing",
        "the transactions file does not exist",
        "error",
        ("tx.csv", "not found"),
        data=b"",
        file="absent",
    ),
    Case("file-empty", "a zero-byte file", "error", ("tx.csv", "empty"), data=b""),
    Case("header-only", "a header and no rows", "error", ("tx.csv", "no data rows"), data=HEADER.encode()),
    Case(
        "all-amounts-bad",
        "every amount is text (wrong column)",
        "error",
        ("tx.csv", "'value'", "not numbers"),
        data=(HEADER + "".join(f"c{i},2024-01-01,x{i},o{i}\n" for i in range(10))).encode(),
    ),
    Case(
        "all-dates-bad",
        "every timestamp is text (wrong column)",
        "error",
        ("tx.csv", "'ts'", "timestamps"),
        data=(HEADER + "".join(f"c{i},day{i},3,o{i}\n" for i in range(10))).encode(),
    ),
    Case(
        "all-ids-null",
        "every customer id is NULL",
        "error",
        ("tx.csv", "'id'", "empty"),
        data=(HEADER + "".join(f"NULL,2024-01-01,3,o{i}\n" for i in range(10))).encode(),
    ),
    Case(
        "bad-timestamp-format",
        "an invalid timestamp_format",
        "error",
        ("timestamp_format",),
        data=_csv(),
        source="timestamp_format: '%Q'",
    ),
    Case(
        "unknown-encoding",
        "`encoding: ebcdic`",
        "error",
        ("encoding", "ebcdic"),
        data=_csv(),
        source="encoding: ebcdic",
    ),
    Case(
        "quoted-delimiter", "a quoted field holding the delimiter", "ok", data=_csv('"c,1",2024-01-05,3,o99')
    ),
    Case("utf8-bom", "a UTF-8 byte-order mark before the header", "ok", data=b"\xef\xbb\xbf" + _csv()),
    Case(
        "tab-delimited",
        "a tab-separated file (delimiter from the header)",
        "ok",
        data=_csv().replace(b",", b"\t"),
    ),
    Case(
        "parquet-case-ambiguous",
        "a Parquet file with 'Value' and 'value'",
        "error",
        ("tx.parquet", "'Value'", "'value'"),
        file="tx.parquet",
    ),
    Case(
        "parquet-null-token",
        "a Parquet file with customer id 'NULL'",
        "quarantine",
        ("missing_customer_id",),
        file="tx.parquet",
    ),
    Case(
        "text-cost",
        "a line cost 'abc' (role cost)",
        "quarantine",
        ("non_numeric_amount",),
        data=_cost_csv("c1,2024-01-05,3,o99,abc"),
        columns=COST_COLUMNS,
    ),
    Case(
        "cost-wrong-column",
        "role cost mapped to a text column",
        "error",
        ("tx.csv", "'cost'", "role cost"),
        data=_cost_csv(good="".join(f"{line},n/a\n" for line in GOOD.splitlines())),
        columns=COST_COLUMNS,
    ),
    Case(
        "cost-and-margin",
        "both a cost and a margin role mapped",
        "error",
        ("data.transactions.0.columns", "'cost' or 'margin'"),
        data=_cost_csv(),
        columns="{customer_id: id, timestamp: ts, amount: value, cost: cost, margin: value}",
    ),
    *INVOICE_CASES,
    *INTERACTION_CASES,
]

ARTIFACT_CASES = [
    Case(
        "absolute-path-entry",
        "a manifest entry /etc/passwd, re-hashed",
        "error",
        ("passwd", "absolute path"),
        kind="artifact",
        tamper="absolute_path",
    ),
    Case(
        "dotdot-path-entry",
        "a manifest entry ../outside.txt, re-hashed",
        "error",
        ("../outside.txt",),
        kind="artifact",
        tamper="dotdot_path",
    ),
    Case(
        "symlinked-file",
        "a file replaced by a symlink to a copy outside",
        "error",
        ("symlink", "policy.yaml"),
        kind="artifact",
        tamper="symlink",
    ),
    Case(
        "pycache-added",
        "an added model/__pycache__/evil.pyc",
        "error",
        ("not in manifest", "__pycache__/evil.pyc"),
        kind="artifact",
        tamper="pycache",
    ),
    Case(
        "empty-folder-added",
        "an added empty folder",
        "error",
        ("not in manifest", "extra/"),
        kind="artifact",
        tamper="empty_folder",
    ),
    Case(
        "entry-is-string",
        "a manifest entry that is a string",
        "error",
        ("policy.yaml", "'sha256'"),
        kind="artifact",
        tamper="string_entry",
    ),
    Case(
        "manifest-not-json",
        "manifest.json is not JSON",
        "error",
        ("manifest.json", "not valid"),
        kind="artifact",
        tamper="manifest_garbage",
    ),
    Case(
        "manifest-missing",
        "manifest.json deleted",
        "error",
        ("manifest", "missing"),
        kind="artifact",
        tamper="manifest_missing",
    ),
    Case(
        "byte-flipped",
        "one byte of the policy flipped",
        "error",
        ("changed", "policy.yaml"),
        kind="artifact",
        tamper="flip",
    ),
    Case(
        "non-utf8-policy",
        "non-UTF-8 bytes in the policy, re-hashed",
        "error",
        ("policy.yaml", "UTF-8"),
        kind="artifact",
        tamper="non_utf8_policy",
    ),
    Case(
        "empty-booster",
        "an empty booster file, re-hashed",
        "error",
        ("booster_tweedie.txt",),
        kind="artifact",
        tamper="empty_booster",
    ),
    Case(
        "pickled-booster",
        "a pickle in place of the booster, re-hashed",
        "error",
        ("booster_tweedie.txt",),
        kind="artifact",
        tamper="pickled_booster",
    ),
    Case(
        "truncated-booster",
        "the booster cut in half, re-hashed",
        "error",
        ("booster_tweedie.txt", "truncated"),
        kind="artifact",
        tamper="truncated_booster",
    ),
    Case(
        "foreign-shim",
        "code appended to the pyfunc shim, re-hashed",
        "error",
        ("pyfunc_shim.py",),
        kind="artifact",
        tamper="foreign_shim",
    ),
    Case(
        "unknown-file-kind",
        "a listed model/helper.so, re-hashed",
        "error",
        ("helper.so",),
        kind="artifact",
        tamper="unknown_kind",
    ),
    Case(
        "foreign-json",
        "reference statistics replaced by a list, re-hashed",
        "error",
        ("reference_stats.json",),
        kind="artifact",
        tamper="foreign_json",
    ),
    Case(
        "wrong-key",
        "a signed artifact checked with another key",
        "error",
        ("signature does not match",),
        kind="artifact",
        tamper="wrong_key",
    ),
    Case(
        "unsigned-with-key",
        "an unsigned artifact checked with a key",
        "error",
        ("not signed",),
        kind="artifact",
        tamper="unsigned_with_key",
    ),
]

CASES = INGEST_CASES + ARTIFACT_CASES


def _outcome(case: Case) -> str:
    if case.outcome == "error":
        return "one-line error naming " + ", ".join(f"`{w}`" for w in case.expect)
    if case.outcome == "quarantine":
        return "quarantined: " + ", ".join(f"`{w}`" for w in case.expect)
    return "accepted, nothing quarantined"


def render_markdown() -> str:
    """``docs/bad_inputs.md``: one table row per case."""
    lines = [
        "# Bad inputs: what segml does with them",
        "",
        "Generated from `tests/bad_inputs.py` (`PYTHONPATH=src python tests/bad_inputs.py > docs/bad_inputs.md`);",
        "`tests/test_bad_inputs.py` runs every case through the real CLI (`segml ingest` for files, `segml verify`",
        "for artifacts) and checks this page matches. An error is exit code 2 with one `error:` line and no",
        "traceback; a quarantine is exit 0 with the rows in `quarantine.parquet` under the reason, and",
        "`rows_in == rows_kept + rows_quarantined` in `dq_report.json` for every ingest case that succeeds.",
        "Artifact cases keep the manifest consistent (hashes and self-hash recomputed) unless they say otherwise.",
        "",
        f"{len(CASES)} cases ({len(INGEST_CASES)} ingest, {len(ARTIFACT_CASES)} artifact).",
        "",
        "| # | case | command | input | outcome |",
        "|---:|---|---|---|---|",
    ]
    for number, case in enumerate(CASES, start=1):
        command = "`segml ingest`" if case.kind == "ingest" else "`segml verify`"
        lines.append(f"| {number} | `{case.id}` | {command} | {case.what} | {_outcome(case)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
