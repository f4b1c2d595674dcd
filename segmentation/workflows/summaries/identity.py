"""Summary of the identity stitching: the inputs' identifier columns, the graph and its
convergence, the customers, their keys against the previous snapshot and the guards."""

from __future__ import annotations

from segmentation.config import AppConfig
from segmentation.workflows.identities import IdentityResult


def identity(result: IdentityResult, cfg: AppConfig) -> str:
    """The stitching run for the terminal."""
    per = result.identifiers / result.customers if result.customers else 0.0
    version = result.versions.get("identity_map")
    lines = [
        f"Identity stitching as of {result.as_of}: {result.customers:,} customers from "
        f"{result.identifiers:,} identifiers ({per:.2f} each); identity_map version {version} "
        f"(MLflow run {result.run_id})",
        f"  {'input column':<30} {'type':<14} {'identifiers':>12} {'missing':>9} "
        f"{'placeholder':>12} {'invalid':>8}",
    ]
    for c in result.counts:
        name = f"{c.source}.{c.column}"
        lines.append(
            f"  {name[:30]:<30} {c.kind[:14]:<14} {c.identifiers:>12,} {c.missing:>9,} "
            f"{c.placeholder:>12,} {c.invalid:>8,}"
        )
    rounds = ", ".join(f"{n:,}" for n in result.edges_per_iteration) or "none needed"
    driver = (
        f"; {result.driver_edges:,} open edges finished on the driver (identity.driver_max_edges)"
        if result.driver_edges
        else ""
    )
    graph = (
        f"  graph: {result.edges:,} edges; connected components (large-star/small-star) "
        f"converged in {result.iterations} round(s) (edges after each: {rounds}){driver}"
    )
    if result.carried_from is not None:
        graph = (
            f"  carried forward from the snapshot of {result.carried_from}: no event or dated "
            f"edge was seen after it up to {result.as_of}, so the same {result.edges:,} edges "
            "give the same customers and keys (not stitched again)"
        )
    lines += [
        graph,
        "  customers by number of identifiers: "
        + ", ".join(f"{band}: {n:,}" for band, n in result.sizes.items()),
        _keys_line(result),
    ]
    if result.shared:
        examples = "; ".join(
            f"{s.identifier_type} {s.identifier} linked to {s.degree} {s.linked_type} "
            f"(limit {s.limit})"
            for s in result.shared_examples[:3]
        )
        lines.append(
            f"  held back by identity.max_degree (never an edge; table identity_guards): "
            f"{result.shared:,} identifier(s), e.g. {examples}"
        )
    else:
        lines.append("  no identifier over identity.max_degree")
    if result.large:
        examples = ", ".join(f"{k} ({n} identifiers)" for k, n in result.large_examples[:3])
        lines.append(
            f"  WARNING: {result.large:,} customer(s) above identity.max_component_size "
            f"({cfg.identity.max_component_size}), kept but check them (identity_guards): "
            f"{examples}"
        )
    return "\n".join(lines)


def _keys_line(result: IdentityResult) -> str:
    if result.previous_as_of is None:
        return f"  keys: {result.new_keys:,} new (no earlier identity_map snapshot)"
    return (
        f"  keys against {result.previous_as_of}: {result.kept_keys:,} kept, "
        f"{result.new_keys:,} new; {result.merges:,} merge(s), {result.splits:,} split(s) "
        "(table identity_changes)"
    )
