"""The paper's published numbers as reference data, shown next to every run's.

`configs/paper_results.yaml` holds Tables 3 and 4 of the paper (Grad-CAM, plus one Eigen-CAM
row), as transcribed by a companion repository of one of its authors and not checked against
the PDF. `load_published` reads it strictly, so a typo there is an error and never a row that
silently goes missing. `paper_comparison` puts our Table 4 numbers (the same function,
`tables.table4_numeric`) beside the published ones, with the gap in units of the paper's std;
`paper_display` and `paper_markdown` format that for the report. `paper_verdicts` states, per
claim of `claims.py`, what the paper itself concludes and what its published means alone show,
so the report can say where our verdicts and the authors' differ.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from clxai_utils.analysis.claims import LOSS_CLAIMS, METHOD_CLAIM, TRIPLET_CLAIMS, Claim, MajorityClaim
from clxai_utils.analysis.report import markdown_table
from clxai_utils.analysis.tables import Results, table4_numeric
from clxai_utils.core.paths import repo_root
from clxai_utils.core.registry import ARROWS, LOSSES, METHODS, METRICS, display_name

#: The data sets the paper reports, in its order.
PAPER_DATASETS: tuple[str, ...] = ("cifar10", "imagenet_s50")
#: What a published std spans: the spread of the per-run means, or a spread over single images.
STD_OVER: tuple[str, ...] = ("runs", "images")
#: Metric protocols a facets table may name in a `protocol` column, in display order: ours
#: (corrected) and the authors' one. A table without the column was measured as "corrected".
PROTOCOLS: tuple[str, ...] = ("corrected", "authors")
DEFAULT_PROTOCOL = "corrected"
#: Accuracy rows (Table 3) use this metric name and no explanation method.
ACCURACY = "accuracy"
NO_METHOD = ""

_TOP_KEYS = ("paper", "source", "notes", "n_runs", "datasets")
_DATASET_KEYS = ("architecture", "accuracy", "table4")
_ENTRY_KEYS = ("mean", "std", "std_over", "n_runs")
_PUBLISHED_COLUMNS = ("dataset", "method", "metric", "loss", "mean", "std", "std_over", "n_runs")
_KEYS = ["dataset", "method", "metric", "loss"]  # a published row
_RUN_KEYS = ["dataset", "profile", "method", "metric", "loss"]  # a row of ours


@dataclass(frozen=True)
class PublishedResults:
    """The published numbers and where they come from.

    `table` has one row per (dataset, method, metric, loss): mean, std (NaN when the source
    gives none), std_over (runs | images, "" without a std) and n_runs. Accuracy rows (Table 3)
    have metric "accuracy", method "" and are in percent, as published.
    """

    paper: str
    source: str
    notes: tuple[str, ...]
    table: pd.DataFrame

    @property
    def accuracy(self) -> pd.DataFrame:
        """Table 3: test accuracy (%) per data set and loss."""
        return self.table[self.table["metric"] == ACCURACY].reset_index(drop=True)

    @property
    def metrics(self) -> pd.DataFrame:
        """Table 4: the explanation metrics per data set, method and loss."""
        return self.table[self.table["metric"] != ACCURACY].reset_index(drop=True)


def published_path() -> Path:
    """`configs/paper_results.yaml` of this repository (found from the repository root, never the cwd)."""
    return repo_root() / "configs" / "paper_results.yaml"


# ---------------------------------------------------------------- reading and checking the YAML


def _mapping(field: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{field} must be a mapping, got {value!r}")
    return value


def _check_keys(field: str, mapping: Mapping[str, Any], allowed: tuple[str, ...], what: str = "key") -> None:
    """Refuse a key outside `allowed`, naming where it stands and what is allowed there."""
    for key in mapping:
        if key not in allowed:
            raise ValueError(f"{field}.{key}: unknown {what} {key!r}; allowed: {', '.join(allowed)}")


def _required(field: str, mapping: Mapping[str, Any], key: str) -> Any:
    if key not in mapping or mapping[key] is None:
        raise ValueError(f"{field}.{key} is missing: it is required")
    return mapping[key]


def _number(field: str, value: object, minimum: float = -math.inf) -> float:
    """A finite number >= `minimum` (a bool or a string is not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        bound = "" if minimum == -math.inf else f" >= {minimum:g}"
        raise ValueError(f"{field} must be a finite number{bound}, got {value!r}")
    return float(value)


def _count(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} must be an integer >= 1, got {value!r}")
    return value


def _entry(field: str, raw: object, n_runs: int) -> dict[str, Any]:
    """One published value: mean, and optionally std with what it spans, and the number of runs."""
    entry = _mapping(field, raw)
    _check_keys(field, entry, _ENTRY_KEYS)
    mean = _number(f"{field}.mean", _required(field, entry, "mean"))
    std, std_over = np.nan, ""
    if entry.get("std") is not None:
        std = _number(f"{field}.std", entry["std"], minimum=0)
        std_over = str(_required(field, entry, "std_over"))
        if std_over not in STD_OVER:
            raise ValueError(f"{field}.std_over={std_over!r} is not allowed; choose one of: {', '.join(STD_OVER)}")
    elif entry.get("std_over") is not None:
        raise ValueError(f"{field}.std_over is given without a std: give both or neither")
    runs = _count(f"{field}.n_runs", entry["n_runs"]) if "n_runs" in entry else n_runs
    return {"mean": mean, "std": std, "std_over": std_over, "n_runs": runs}


def _per_loss(field: str, raw: object, n_runs: int, **keys: str) -> list[dict[str, Any]]:
    """The entries of one published row, one per loss (our names: ce, supcon, triplet)."""
    losses = _mapping(field, raw)
    _check_keys(field, losses, LOSSES, "loss")
    return [{**keys, "loss": loss, **_entry(f"{field}.{loss}", entry, n_runs)} for loss, entry in losses.items()]


def _dataset_rows(field: str, raw: object, dataset: str, n_runs: int) -> list[dict[str, Any]]:
    block = _mapping(field, raw)
    _check_keys(field, block, _DATASET_KEYS)
    rows = []
    if "accuracy" in block:
        rows += _per_loss(
            f"{field}.accuracy", block["accuracy"], n_runs, dataset=dataset, method=NO_METHOD, metric=ACCURACY
        )
    methods = _mapping(f"{field}.table4", block.get("table4", {}))
    _check_keys(f"{field}.table4", methods, METHODS, "explanation method")
    for method, metrics in methods.items():
        where = f"{field}.table4.{method}"
        _check_keys(where, _mapping(where, metrics), tuple(METRICS), "metric")
        for metric, losses in metrics.items():
            rows += _per_loss(f"{where}.{metric}", losses, n_runs, dataset=dataset, method=method, metric=metric)
    return rows


def parse_published(raw: object, where: str = "paper_results") -> PublishedResults:
    """Check the content of a paper_results file and return it as `PublishedResults`.

    Every name must be ours (data sets cifar10 / imagenet_s50, the registry's methods, metrics
    and losses), so that each published row meets the run's row it belongs to; the error
    names the offending field (`datasets.cifar10.table4.gradcam.pf_auc.ce.mean`) and lists
    what is allowed there.
    """
    top = _mapping(where, raw)
    _check_keys(where, top, _TOP_KEYS)
    source = _required(where, top, "source")
    notes = top.get("notes") or []
    if not isinstance(source, str) or not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ValueError(f"{where}.source must be text and {where}.notes a list of texts")
    n_runs = _count(f"{where}.n_runs", top["n_runs"]) if "n_runs" in top else 1
    datasets = _mapping(f"{where}.datasets", _required(where, top, "datasets"))
    _check_keys(f"{where}.datasets", datasets, PAPER_DATASETS, "data set")
    rows = [
        row
        for name, block in datasets.items()
        for row in _dataset_rows(f"{where}.datasets.{name}", block, name, n_runs)
    ]
    if not rows:
        raise ValueError(f"{where}.datasets holds no published value")
    table = pd.DataFrame(rows, columns=list(_PUBLISHED_COLUMNS))
    return PublishedResults(str(top.get("paper", "")), source.strip(), tuple(n.strip() for n in notes), table)


def load_published(path: str | os.PathLike[str] | None = None) -> PublishedResults:
    """The paper's published numbers, read and checked (default: `configs/paper_results.yaml`)."""
    path = Path(path) if path else published_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    return parse_published(raw, where=path.name)


# ---------------------------------------------------------------- our numbers beside the paper's


def _protocols(facets: pd.DataFrame) -> list[str]:
    """The protocols the facets table holds, known ones first; without the column: the corrected one."""
    if "protocol" not in facets:
        return [DEFAULT_PROTOCOL]
    present = set(facets["protocol"].fillna(DEFAULT_PROTOCOL).astype(str))
    return [p for p in PROTOCOLS if p in present] + sorted(present - set(PROTOCOLS))


def _ours(results: Results, protocol: str) -> pd.DataFrame:
    """Our Table 4 for one protocol (`table4_numeric`: mean over images, std over seed means), in the
    paper's units: accuracy in percent, once per (dataset, profile, loss) with no method."""
    facets = results.facets
    if "protocol" in facets:
        facets = facets[facets["protocol"].fillna(DEFAULT_PROTOCOL).astype(str) == protocol]
    numeric = table4_numeric(dataclasses.replace(results, facets=facets))
    accuracy = numeric["metric"] == ACCURACY
    numeric.loc[accuracy, ["mean", "std_seeds"]] *= 100
    numeric.loc[accuracy, "method"] = NO_METHOD
    numeric = numeric.drop_duplicates(_RUN_KEYS)
    numeric = numeric[numeric["mean"].notna()]
    ours = numeric[[*_RUN_KEYS, "mean", "std_seeds", "n_seeds"]]
    return ours.rename(
        columns={"mean": f"ours_mean_{protocol}", "std_seeds": f"ours_std_{protocol}", "n_seeds": f"n_seeds_{protocol}"}
    )


def _gap(ours: pd.Series, table: pd.DataFrame) -> pd.Series:
    """(ours - paper) / paper std, only where the std spans runs and is not 0 (0 means "printed as 0.00")."""
    usable = (table["paper_std_over"] == "runs") & (table["paper_std"] > 0)
    return ((ours - table["paper_mean"]) / table["paper_std"]).where(usable)


def _sort(table: pd.DataFrame) -> pd.DataFrame:
    """Data sets, profiles, accuracy first, then per method (paper order) the metrics (registry order), losses."""
    ranks = {
        "dataset": {d: i for i, d in enumerate(PAPER_DATASETS)},
        "metric": {m: i for i, m in enumerate((ACCURACY, *METRICS))},
        "method": {m: i for i, m in enumerate((NO_METHOD, *METHODS))},
        "loss": {loss: i for i, loss in enumerate(LOSSES)},
    }

    def key(column: pd.Series) -> pd.Series:
        rank = ranks.get(str(column.name))
        return column if rank is None else column.map(rank)

    order = ["dataset", "profile", "method", "metric", "loss"]
    return table.sort_values(order, key=key, kind="stable").reset_index(drop=True)


def paper_comparison(results: Results, published: PublishedResults | None = None) -> pd.DataFrame:
    """Our numbers next to the paper's: one row per (dataset, profile, method, metric, loss) both have.

    paper_mean, paper_std, paper_std_over (runs | images), paper_n_runs: as published
    (`load_published` unless given). For each protocol p of the facets table (its optional
    `protocol` column; without it every row is "corrected"): ours_mean_p and ours_std_p, the
    Table 4 mean over images and the std (ddof=1) of the per-seed means from
    `tables.table4_numeric`, n_seeds_p, and gap_p = (ours - paper) / paper_std, NaN where the
    paper's std is 0 as printed, unknown or spans images (a spread over images is no yardstick
    for a mean). The gap is computed for every profile, but it measures a reproduction only for
    the `paper` profile: other profiles train less on fewer images by design.

    Accuracy rows (metric "accuracy", method "") hold Table 3 and our accuracy, both in percent;
    they do not depend on the protocol.
    """
    published = published or load_published()
    paper = published.table.rename(
        columns={"mean": "paper_mean", "std": "paper_std", "std_over": "paper_std_over", "n_runs": "paper_n_runs"}
    )
    protocols = _protocols(results.facets)
    ours: pd.DataFrame | None = None
    for protocol in protocols:
        part = _ours(results, protocol)
        ours = part if ours is None else ours.merge(part, on=_RUN_KEYS, how="outer")
    assert ours is not None  # at least one protocol
    table = paper.merge(ours, on=_KEYS, how="inner")
    for protocol in protocols:
        table[f"gap_{protocol}"] = _gap(table[f"ours_mean_{protocol}"], table)
    columns = [
        *_RUN_KEYS,
        "paper_mean",
        "paper_std",
        "paper_std_over",
        "paper_n_runs",
    ]
    columns += [f"{c}_{p}" for p in protocols for c in ("ours_mean", "ours_std", "n_seeds", "gap")]
    return _sort(table[columns])


# ---------------------------------------------------------------- Markdown


def _metric_label(metric: str) -> str:
    if metric == ACCURACY:
        return "Accuracy (%) ↑"
    return f"{METRICS[metric].label} {ARROWS[METRICS[metric].better]}"


def _published_text(value: float) -> str:
    """A published number with the decimals it was printed with (at least two): 0.10, 0.003, 10.20."""
    for digits in (2, 3, 4):
        if abs(round(value, digits) - value) < 1e-9:
            return f"{value:.{digits}f}"
    return f"{value:.4g}"


def _paper_cell(row: pd.Series) -> str:
    text = _published_text(row["paper_mean"])
    if np.isnan(row["paper_std"]):
        return text
    spread = _published_text(row["paper_std"])
    return f"{text} ({spread} over images)" if row["paper_std_over"] == "images" else f"{text} ({spread})"


def _ours_cell(row: pd.Series, protocol: str) -> str:
    mean, std, n = row[f"ours_mean_{protocol}"], row[f"ours_std_{protocol}"], row[f"n_seeds_{protocol}"]
    if np.isnan(mean):
        return "–"
    digits = 2 if row["metric"] == ACCURACY else 3
    if n < 2:
        return f"{mean:.{digits}f} (1 seed)"
    if np.isnan(std):
        return f"{mean:.{digits}f} ({int(n)} seeds)"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({int(n)} seeds)"


def _gap_cell(gap: float) -> str:
    return "–" if np.isnan(gap) else f"{gap:+.1f}"


def table_protocols(table: pd.DataFrame) -> list[str]:
    """The protocols a `paper_comparison` table has columns for, in its column order."""
    return [c.removeprefix("ours_mean_") for c in table.columns if str(c).startswith("ours_mean_")]


def paper_display(table: pd.DataFrame) -> pd.DataFrame:
    """`paper_comparison` as text cells, one column per shown field: what `paper_markdown` prints and
    what `report.write_report` can write as <name>.csv and <name>.md.

    Columns: metric | data set | loss | paper | ours (corrected) [| ours (authors)] | gap
    (paper std). A profile or a method column appears only when the table holds several (the
    gap reads as a reproduction only for the `paper` profile). The paper cell is "mean (std)" as
    published, "(std over images)" where it spans images; ours is "mean ± std over seeds (n
    seeds)"; a gap is "–" where undefined. With several protocols each has its own ours and gap
    column.
    """
    protocols = table_protocols(table)
    shown: dict[str, list[str]] = {
        "metric": [_metric_label(m) for m in table["metric"]],
        "data set": list(table["dataset"]),
    }
    if table["profile"].nunique() > 1:
        shown["profile"] = list(table["profile"])
    if table.loc[table["method"] != NO_METHOD, "method"].nunique() > 1:
        shown["method"] = [display_name(m) if m else "" for m in table["method"]]
    shown["loss"] = [display_name(loss) for loss in table["loss"]]
    shown["paper"] = [_paper_cell(row) for _, row in table.iterrows()]
    for protocol in protocols:
        shown[f"ours ({protocol})"] = [_ours_cell(row, protocol) for _, row in table.iterrows()]
    for protocol in protocols:
        header = "gap (paper std)" if len(protocols) == 1 else f"gap (paper std, {protocol})"
        shown[header] = [_gap_cell(g) for g in table[f"gap_{protocol}"]]
    return pd.DataFrame(shown, dtype=object)


def paper_markdown(table: pd.DataFrame) -> str:
    """`paper_comparison` as a Markdown table (`paper_display`'s cells through `report.markdown_table`)."""
    return markdown_table(paper_display(table))


def paper_note(published: PublishedResults | None = None) -> str:
    """The sentence the report prints above the comparison: where the numbers come from and how to read the gap."""
    published = published or load_published()
    return (
        f"Published numbers: {published.source} Paper std: over its {int(published.table['n_runs'].max())} runs, "
        "except where marked 'over images'. Gap: (ours - paper) / paper std, shown only where that std spans "
        "runs and is not 0.00 as printed; it measures a reproduction only for the `paper` profile."
    )


# ---------------------------------------------------------------- what the paper itself concludes

_NOT_ADDRESSED = "not addressed"

#: What the paper says about each claim of claims.py, in its words (section of the paper's text).
_PAPER_SAYS: dict[str, str] = {
    "SCL more faithful than CE": (
        "Abstract and §1: more faithful explanations with SCL; §6: overall better 'with the exception of "
        "contrastivity', and this may reflect SCL models being better OoD detectors rather than CE's "
        "explanations being less faithful"
    ),
    "SCL more continuous than CE": (
        "Abstract and §1: more continuous explanations with SCL; §6: overall better 'with the exception of "
        "contrastivity'"
    ),
    "SCL less complex than CE (entropy)": (
        "Abstract and §1: less complex explanations with SCL; §5 (Fig. 2): SCL's maps 'seem more compact and "
        "focused'; §6: complexity named among CL's advantages"
    ),
    "SCL less complex than CE (Gini)": (
        "Abstract and §1: less complex explanations with SCL (the paper measures complexity by Sparseness and "
        "entropy alike and does not single out either)"
    ),
    "SCL lower contrastivity than CE": (
        "§1: 'an overall lower contrastivity'; §6: better 'with the exception of contrastivity'"
    ),
    "coherence inconclusive (SCL vs CE)": (
        "§1: 'The results on coherence were inconclusive'; §5 (b): 'very noisy and do not allow us to "
        "determine a best method'; §6: 'too noisy to gather any conclusions' (yet §6's last paragraph "
        "names coherence among CL's advantages)"
    ),
    "Grad-CAM better than Eigen-CAM": "§5: 'Grad-CAM seems to overall behave better than Eigen-CAM across several metrics'",
    "TL good on CIFAR-10": "§5 (a): TL 'seems to lead to overall high-quality explanations on CIFAR10'; §6: 'good results on CIFAR10'",
    "TL poor on ImageNet-S50": (
        "§5 (a): TL's evaluations on ImageNet-S50 'are often worse than SCL'; §6: 'poor results across all "
        "quality metrics' (the paper compares TL with SCL there, the claim with CE)"
    ),
}


def _better(metric: str, a: float, b: float) -> int:
    """+1 when `a` is better than `b` on `metric`, -1 when worse, 0 for equal published means."""
    sign = 1 if METRICS[metric].better == "higher" else -1
    return int(np.sign(sign * (a - b)))


def _published_mean(table: pd.DataFrame, dataset: str, method: str, metric: str, loss: str) -> float:
    match = table[
        (table["dataset"] == dataset)
        & (table["method"] == method)
        & (table["metric"] == metric)
        & (table["loss"] == loss)
    ]
    return float(match["mean"].iloc[0]) if len(match) else np.nan


def _pair_text(metric: str, a_label: str, a: float, b_label: str, b: float) -> str:
    return (
        f"{a_label} {_published_text(a)} vs {b_label} {_published_text(b)} {METRICS[metric].label}, "
        f"{METRICS[metric].better} is better"
    )


def _paper_word(claim: str, dataset: str, metric: str) -> tuple[str, str]:
    """The paper's verdict on a claim for one data set, and its words; a claim it never makes is "not addressed"."""
    if metric in ("pointing_game", "attribution_localisation") and dataset != "imagenet_s50":
        return _NOT_ADDRESSED, "coherence is measured on ImageNet-S50 only (its segmentation masks)"
    if claim not in _PAPER_SAYS:
        return _NOT_ADDRESSED, "the paper's text does not state this claim"
    return "supported", _PAPER_SAYS[claim]


def _verdict_row(
    claim: Claim | MajorityClaim, dataset: str, metric: str, from_means: str, basis: str, reason: str
) -> dict[str, Any]:
    verdict, words = _paper_word(claim.claim, dataset, metric)
    return {
        "claim": claim.claim,
        "dataset": dataset,
        "metric": metric,
        "paper_verdict": verdict,
        "from_published_means": from_means,
        "basis": basis if verdict != _NOT_ADDRESSED else _NOT_ADDRESSED,
        "section": claim.section,
        "reason": reason,
        "paper_says": words,
    }


def _loss_claim_row(table: pd.DataFrame, claim: Claim, dataset: str) -> dict[str, Any]:
    """A two-loss claim on one data set: what the two published Grad-CAM means show."""
    metric = claim.metric
    a = _published_mean(table, dataset, "gradcam", metric, claim.a)
    b = _published_mean(table, dataset, "gradcam", metric, claim.b)
    if np.isnan(a) or np.isnan(b):
        verdict, words = _paper_word(claim.claim, dataset, metric)
        reason = f"no published Grad-CAM {METRICS[metric].label} for {dataset} in the transcription"
        return _verdict_row(
            claim, dataset, metric, "no numbers", "text only", words if verdict == _NOT_ADDRESSED else reason
        )
    reason = "Table 4 (Grad-CAM): " + _pair_text(metric, display_name(claim.a), a, display_name(claim.b), b)
    if claim.expected is None:
        rows = (table["dataset"] == dataset) & (table["method"] == "gradcam") & (table["metric"] == metric)
        std = float(table.loc[rows & table["loss"].isin([claim.a, claim.b]), "std"].max())
        if np.isfinite(std) and std > 0:
            reason += f"; the difference is {abs(a - b) / std:.2f} of the published std ({_published_text(std)})"
        reason += "; means alone cannot show that there is no difference"
        return _verdict_row(claim, dataset, metric, "inconclusive", "Table 4 and text", reason)
    better = _better(metric, a, b) if claim.expected == claim.a else -_better(metric, a, b)
    from_means = {1: "supported", -1: "not supported", 0: "inconclusive"}[better]
    return _verdict_row(claim, dataset, metric, from_means, "Table 4 and text", reason)


def _majority_from_means(wins: int, losses: int, m: int) -> str:
    """`claims._majority_row`'s rule on published means: more than half of the m comparisons."""
    if m == 0:
        return "no numbers"
    return "supported" if wins > m / 2 else "not supported" if losses > m / 2 else "inconclusive"


def _majority_pairs(claim: MajorityClaim) -> list[tuple[str, tuple[str, str], tuple[str, str]]]:
    """(metric, (method, loss) of side a, of side b) for each comparison a majority claim counts.

    The method claim compares Grad-CAM with Eigen-CAM per (loss, metric); a loss claim compares
    its two losses per metric on Grad-CAM, the only method Table 4 publishes in full.
    """
    if claim.a in METHODS:
        return [(m, (claim.a, loss), (claim.b, loss)) for m in claim.metrics for loss in LOSSES]
    return [(m, ("gradcam", claim.a), ("gradcam", claim.b)) for m in claim.metrics]


def _side(method: str, loss: str, by_method: bool) -> str:
    return f"{display_name(method)} ({display_name(loss)})" if by_method else display_name(loss)


def _majority_claim_row(table: pd.DataFrame, claim: MajorityClaim, dataset: str) -> dict[str, Any]:
    """A majority claim on one data set: a count over the comparisons the published means allow."""
    by_method = claim.a in METHODS
    texts, wins, losses = [], 0, 0
    for metric, (method_a, loss_a), (method_b, loss_b) in _majority_pairs(claim):
        a = _published_mean(table, dataset, method_a, metric, loss_a)
        b = _published_mean(table, dataset, method_b, metric, loss_b)
        if np.isnan(a) or np.isnan(b):
            continue
        better = _better(metric, a, b) if claim.expected == claim.a else -_better(metric, a, b)
        wins, losses = wins + (better > 0), losses + (better < 0)
        texts.append(_pair_text(metric, _side(method_a, loss_a, by_method), a, _side(method_b, loss_b, by_method), b))
    m = len(texts)
    if not m:
        return _verdict_row(claim, dataset, "all", "no numbers", "text only", f"no published pair for {dataset}")
    reason = (
        f"Table 4: {'; '.join(texts)}; {display_name(claim.expected)} better in {wins} of the {m} published "
        f"comparisons, worse in {losses}"
    )
    total = len(_majority_pairs(claim))
    basis = "Table 4 and text" if m == total else f"Table 4 ({m} of {total} comparisons) and text"
    return _verdict_row(claim, dataset, "all", _majority_from_means(wins, losses, m), basis, reason)


def paper_verdicts(published: PublishedResults | None = None) -> pd.DataFrame:
    """The paper's own verdict on each claim of `claims.py`, per data set, keyed like `claims.claims`.

    Join it with `claims(...).merge(paper_verdicts(), on=["claim", "dataset", "metric"], how="left")`
    (majority claims have metric "all"). paper_verdict is what the paper concludes: every claim
    of claims.py is one the paper makes, so it is "supported" where the paper addresses it and
    "not addressed" where it does not (coherence on CIFAR-10); paper_says quotes it.
    from_published_means is what the published Grad-CAM means alone show, with no test
    (the paper reports none): the claimed direction (supported), the opposite (not supported),
    equal means (inconclusive), "no numbers" where the transcription has none; for a claim of no
    difference, means can never decide (inconclusive). Majority claims count the comparisons
    the transcription holds under `claims._majority_row`'s rule. `reason` shows the numbers.
    """
    table = (published or load_published()).metrics
    rows = []
    for claim in LOSS_CLAIMS:
        rows += [_loss_claim_row(table, claim, dataset) for dataset in PAPER_DATASETS]
    rows += [_majority_claim_row(table, METHOD_CLAIM, dataset) for dataset in PAPER_DATASETS]
    for majority in TRIPLET_CLAIMS:
        datasets = PAPER_DATASETS if majority.dataset is None else (majority.dataset,)
        rows += [_majority_claim_row(table, majority, dataset) for dataset in datasets]
    return pd.DataFrame(rows)
