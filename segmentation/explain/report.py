"""One self-contained HTML report per training run.

The report embeds the training's pictures (``pictures``) as data URIs, with no script and no
external resource, so it opens anywhere, offline, as one file.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from segmentation.explain import profiling
from segmentation.explain.composition import Composition
from segmentation.explain.rules import RuleExplanation
from segmentation.features.levels import LevelLabel, display_name
from segmentation.modeling import model_selection
from segmentation.modeling.validation import Measure, Validation
from segmentation.value.segments import SegmentValue


@dataclass
class ReportData:
    """Everything the report shows about one training."""

    model_name: str
    model_version: int
    run_id: str
    as_of: dt.date
    customers: int
    chosen_k: int
    k_reason: str
    features: tuple[str, ...]
    profiles: profiling.Profiles
    names: Mapping[int, str]
    rules: RuleExplanation
    rules_per_segment: int
    composition: Composition | None
    pictures: Mapping[str, bytes]
    created_at: dt.datetime
    notes: list[str] = field(default_factory=list)
    validation: Validation | None = None
    selection: model_selection.KSelection | None = None
    labels: Mapping[str, LevelLabel] = field(default_factory=dict)
    """Raw labels of level columns, shown beside the column names."""
    value: Sequence[SegmentValue] | None = None
    """Each segment's customer value (None: no ``customer_value`` for this date)."""

    def feature(self, name: str) -> str:
        """A feature's name as the report shows it (with its raw label), HTML-escaped."""
        return _e(display_name(name, self.labels))


_CSS = """
tr.chosen td { font-weight: bold; background: #eef6ee; }
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid
#ddd;padding-bottom:4px} .meta{color:#555;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d7dbe2;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f7} td.num{text-align:right;font-variant-numeric:tabular-nums}
.pos{color:#b2182b} .neg{color:#2166ac} .flag{color:#a15c00;font-weight:600}
figure{display:inline-block;margin:8px 16px 8px 0} figcaption{font-size:12px;color:#555}
img{max-width:100%;border:1px solid #eee} code{background:#f4f4f4;padding:1px 4px}
"""

_PICTURE_TITLES = {
    "k_selection": "k selection: silhouette, Calinski-Harabasz and the worst segment's "
    "bootstrap Jaccard against k (dashed: chosen k; line: stable at 0.75)",
    "validation": "Validation: bootstrap stability per segment (Jaccard, 95% range; dashed: "
    "0.6 and 0.75) and purchase share in the outcome window (95% Wilson interval; line: all)",
    "segment_sizes": "Segment sizes",
    "profile_heatmap": "Profile heatmap",
    "pca": "2-D projection (PCA) of a sample, coloured by segment",
    "scree": "Scree plot: eigenvalues of the item correlations against parallel analysis's "
    "random eigenvalues (dashed) and the eigenvalue-1 line; dotted: factors kept",
    "loadings": "Rotated factor loadings (items x factors)",
}


def _e(value: Any) -> str:
    return html.escape(str(value))


def _n(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "&ndash;"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.{digits}f}"


def _traits(seg: profiling.SegmentProfile, data: ReportData, n: int = 3) -> str:
    ranked = sorted(data.features, key=lambda f: (-abs(seg.z(f)), f))[:n]
    parts = []
    for f in ranked:
        z = seg.z(f)
        css = "pos" if z > 0 else "neg"
        parts.append(
            f'<span class="{css}">{data.feature(f)} {"+" if z >= 0 else ""}{z:.1f}&sigma;</span>'
        )
    return ", ".join(parts)


def render_html(data: ReportData) -> str:
    """The report as one HTML document (pictures embedded as base64 PNG)."""
    notes = "".join(f'<p class="flag">{_e(n)}</p>' for n in data.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Segments of {_e(data.model_name)} v{data.model_version} as of {data.as_of}</title>
<style>{_CSS}</style></head><body>
<h1>Customer segments: {_e(data.model_name)} version {data.model_version}</h1>
<p class="meta">Features as of {data.as_of} · {data.customers:,} customers · k = {data.chosen_k}
({_e(data.k_reason)}) · MLflow run <code>{_e(data.run_id)}</code> · generated
{data.created_at.isoformat()}</p>
{notes}
<h2>Segments</h2>
{_segments_html(data)}
{_value_html(data)}
<h2>Pictures</h2>
{_pictures_html(data)}
<h2>Rules</h2>
{_rules_html(data)}
<h2>Model selection</h2>
{_candidates_html(data)}
<h2>Validation</h2>
{_validation_html(data)}
<h2>Profiles</h2>
{_profiles_table(data)}
<h2>Composition</h2>
{_composition_html(data)}
</body></html>
"""


def _segments_html(data: ReportData) -> str:
    """One row per segment: size, share, strongest traits and its top rules."""
    seg_rows = []
    for seg in data.profiles.segments:
        rules = data.rules.top(seg.segment_id, data.rules_per_segment)
        rule_html = (
            "<br>".join(
                f"<code>{_e(r.text())}</code> ({r.recall:.0%} of segment, "
                f"{r.precision:.0%} precise)"
                for r in rules
            )
            or "&ndash;"
        )
        seg_rows.append(
            f"<tr><td class=num>{seg.segment_id}</td><td><b>{_e(data.names[seg.segment_id])}"
            f"</b></td><td class=num>{seg.size:,}</td><td class=num>{seg.share:.1%}</td>"
            f"<td>{_traits(seg, data)}</td><td>{rule_html}</td></tr>"
        )
    return f"""<table id="segments"><thead><tr><th>id</th><th>name</th><th>customers</th>
<th>share</th><th>strongest traits (vs population)</th><th>rules (decision tree)</th></tr>
</thead><tbody>{"".join(seg_rows)}</tbody></table>"""


def _value_html(data: ReportData) -> str:
    """Each segment's expected customer value (``customer_value``), when there is one."""
    if data.value is None:
        return ""
    rows = "".join(
        f"<tr><td class=num>{v.segment_id}</td><td>{_e(data.names.get(v.segment_id, '?'))}</td>"
        f"<td class=num>{v.customers:,}</td><td class=num>{v.mean_clv:,.2f}</td>"
        f"<td class=num>{v.total_clv:,.0f}</td><td class=num>{v.mean_p_alive:.2f}</td>"
        f"<td class=num>{v.share_of_value:.1%}</td></tr>"
        for v in data.value
    )
    return (
        '<h3>Customer value</h3><table id="value"><thead><tr><th>id</th><th>segment</th>'
        "<th>customers</th><th>mean expected CLV</th><th>total expected CLV</th>"
        f"<th>mean P(alive)</th><th>share of value</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _pictures_html(data: ReportData) -> str:
    pictures = "".join(
        f'<figure><img alt="{_e(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"><figcaption>{_e(_PICTURE_TITLES.get(name, name))}'
        "</figcaption></figure>"
        for name, png in data.pictures.items()
    )
    return f'<div id="pictures">{pictures}</div>'


def _rules_html(data: ReportData) -> str:
    """The tree's fidelity (overall and per segment) and the feature importances."""
    importances = "".join(
        f"<tr><td>{data.feature(f)}</td><td class=num>{v:.3f}</td></tr>"
        for f, v in sorted(data.rules.importances.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    fidelity_rows = "".join(
        f"<tr><td>{sid}: {_e(data.names.get(sid, '?'))}</td><td class=num>{v:.1%}</td></tr>"
        for sid, v in sorted(data.rules.segment_fidelity.items())
    )
    tree_features = ", ".join(map(data.feature, data.features))
    return f"""<p>A decision tree of depth {data.rules.max_depth} on {tree_features} reproduces
the segment of <b>{data.rules.fidelity:.1%}</b> of customers (fidelity) with
{data.rules.leaves} rules; the table above shows the
{data.rules_per_segment} covering the most customers per segment.</p>
<table id="fidelity"><thead><tr><th>segment</th><th>reproduced</th></tr></thead>
<tbody>{fidelity_rows}</tbody></table>
<table id="importances"><thead><tr><th>feature</th><th>importance</th></tr></thead>
<tbody>{importances}</tbody></table>"""


def _candidates_html(data: ReportData) -> str:
    sel = data.selection
    if sel is None:
        return ""
    rows = "".join(
        f"<tr{' class=chosen' if c.k == sel.chosen_k else ''}><td class=num>{c.k}</td>"
        f"<td class=num>{c.silhouette:.3f}</td><td class=num>{c.calinski_harabasz:,.0f}</td>"
        f"<td class=num>{c.min_share:.1%}</td>"
        f"<td class=num>{'&ndash;' if c.worst_jaccard is None else f'{c.worst_jaccard:.2f}'}</td>"
        "</tr>"
        for c in sel.candidates
    )
    return (
        f"<p>{_e(sel.rule)} rule on {sel.sample_rows:,} sampled customers: {_e(sel.reason)}</p>"
        '<table id="candidates"><thead><tr><th>k</th><th>silhouette</th>'
        "<th>Calinski-Harabasz</th><th>smallest segment</th><th>worst bootstrap Jaccard</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _validation_html(data: ReportData) -> str:
    v = data.validation
    if v is None:
        return "<p>Validation is off (validation.enabled).</p>"

    def cell(m: Measure | None, pct: bool = False) -> str:
        if m is None or m.value is None:
            return "<td>&ndash;</td>"
        fmt = (lambda x: f"{x:.1%}") if pct else (lambda x: f"{x:,.2f}")
        ci = f" [{fmt(m.ci_lower)}, {fmt(m.ci_upper)}]" if m.ci_lower is not None else ""
        verdict = f"<br><i>{_e(m.verdict)}</i>" if m.verdict else ""
        return f"<td class=num>{fmt(m.value)}{ci}{verdict}</td>"

    rows = "".join(
        f"<tr><td>{sid}: {_e(data.names[sid])}</td>{cell(v.get('bootstrap_jaccard', sid))}"
        f"{cell(v.get('split_half_agreement', sid), pct=True)}"
        f"{cell(v.get('outcome_purchase_share', sid), pct=True)}"
        f"{cell(v.get('outcome_revenue_per_customer', sid))}"
        f"{cell(v.get('outcome_return_rate', sid), pct=True)}</tr>"
        for sid in sorted(data.names)
    )
    whole = "".join(
        f"<li>{_e(m.measure)}: {_n(m.value, 3)}{f' ({_e(m.verdict)})' if m.verdict else ''}</li>"
        for m in v.measures
        if m.segment_id is None
    )
    skipped = "".join(f"<li>{_e(k)} skipped: {_e(why)}</li>" for k, why in v.skipped.items())
    window = (
        f"<p>Outcome window: {v.window[0]} ({v.window[1]}, {v.window[2]}].</p>" if v.window else ""
    )
    return (
        f'{window}<ul id="validation-summary">{whole}{skipped}</ul><table id="validation">'
        "<thead><tr><th>segment</th><th>bootstrap Jaccard</th><th>split-half agreement</th>"
        "<th>purchase share</th><th>revenue per customer</th><th>return rate</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _profiles_table(data: ReportData) -> str:
    head = "".join(f"<th>{data.feature(f)}</th>" for f in data.profiles.features)
    pop = "".join(f"<td class=num>{_n(data.profiles.population_mean[f])}</td>"
                  for f in data.profiles.features)  # fmt: skip
    rows = []
    for seg in data.profiles.segments:
        cells = []
        for f in data.profiles.features:
            s = seg.stats[f]
            z = s.std_diff or 0.0
            css = "pos" if z >= 1 else "neg" if z <= -1 else ""
            cells.append(
                f'<td class="num {css}" title="mean {_n(s.mean)}, p25 {_n(s.p25)}, p75 '
                f'{_n(s.p75)}, std diff {z:+.2f}">{_n(s.median)}<br><small>{_n(s.p25)}&ndash;'
                f"{_n(s.p75)}</small></td>"
            )
        rows.append(f"<tr><td>{seg.segment_id}: {_e(data.names[seg.segment_id])}</td>"
                    f"{''.join(cells)}</tr>")  # fmt: skip
    return (
        "<p>Median and interquartile range per segment, in original units; red: at least one "
        "standard deviation above the population mean, blue: below.</p>"
        '<div style="overflow-x:auto"><table id="profiles"><thead><tr><th>segment</th>'
        f"{head}</tr></thead><tbody><tr><td><i>population mean</i></td>{pop}</tr>"
        f"{''.join(rows)}</tbody></table></div>"
    )


def _composition_html(data: ReportData) -> str:
    comp = data.composition
    if comp is None or not comp.rows:
        return "<p>No customers dimension: composition not reported.</p>"
    parts = []
    if comp.missing:
        parts.append(f"<p>Not in the customers dimension: {_e(', '.join(comp.missing))}.</p>")
    segs = sorted({r[0] for r in comp.rows})
    for attribute in comp.attributes:
        rows = [r for r in comp.rows if r[1] == attribute]
        values = sorted({r[2] for r in rows})
        pop = {r[2]: r[5] for r in rows}
        share = {(r[0], r[2]): r[4] for r in rows}
        flag = (
            f' <span class="flag">sensitive: for review (largest gap to population '
            f"{comp.max_gap(attribute):.1%})</span>"
            if attribute in comp.sensitive
            else ""
        )
        head = "".join(f"<th>{_e(v)}</th>" for v in values)
        body = "".join(
            f"<tr><td>{s}: {_e(data.names.get(s, '?'))}</td>"
            + "".join(f"<td class=num>{share.get((s, v), 0.0):.1%}</td>" for v in values)
            + "</tr>"
            for s in segs
        )
        parts.append(
            f"<h3>{_e(attribute)}{flag}</h3><table><thead><tr><th>segment</th>{head}</tr>"
            f"</thead><tbody><tr><td><i>population</i></td>"
            + "".join(f"<td class=num>{pop[v]:.1%}</td>" for v in values)
            + f"</tr>{body}</tbody></table>"
        )
    return "".join(parts)
