"""Flows: node/edge graphs, validated as a DAG when saved, versioned on every change of the graph."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app.errors import NotFound, ValidationFailed
from app.extensions import db
from app.http import Page, paginate
from app.ids import utcnow

from . import service
from .flow_nodes import NODE_KINDS
from .models import Flow, FlowVersion

BRANCH_LABELS = ("true", "false")
ERROR_LABEL = "error"  # edges followed when their source (a node with on_error "branch") fails


class GraphErrors:
    """Collects problems as `details.fields` paths, and the ids of the nodes they concern."""

    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}
        self.nodes: list[str] = []

    def add(self, path: str, message: str, *node_ids: str) -> None:
        self.fields.setdefault(path, []).append(message)
        for node_id in node_ids:
            if node_id not in self.nodes:
                self.nodes.append(node_id)

    def raise_if_any(self) -> None:
        if self.fields:
            error = ValidationFailed(self.fields, "The flow is not a valid graph: " + _first(self.fields))
            error.details["nodes"] = self.nodes
            raise error


def _first(fields: dict[str, list[str]]) -> str:
    path, messages = next(iter(fields.items()))
    more = sum(len(m) for m in fields.values()) - 1
    return messages[0] + (f" (and {more} more problem{'s' if more != 1 else ''})" if more else "")


def _label(node: dict[str, Any]) -> str:
    return f"node {node.get('id')!r} ({node.get('type')})"


def validate(owner_id: str, nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> list[str]:
    """Refuse anything that cannot run; returns the nodes' ids in execution (topological) order."""
    errors = GraphErrors()
    limit = int(current_app.config["AGENTS_FLOW_MAX_NODES"])
    if not nodes:
        errors.add("nodes", "A flow needs nodes: one input, at least one output and what lies between.")
    if len(nodes) > limit:
        errors.add("nodes", f"A flow may have at most {limit} nodes.")
    errors.raise_if_any()

    by_id: dict[str, dict[str, Any]] = {}
    for index, node in enumerate(nodes):
        if node["id"] in by_id:
            errors.add(f"nodes.{index}.id", f"Duplicate node id {node['id']!r}.", node["id"])
            continue
        by_id[node["id"]] = node
        kind = NODE_KINDS.get(node["type"])
        if kind is None:
            errors.add(f"nodes.{index}.type", f"{_label(node)}: unknown node type {node['type']!r} "
                                              f"(known: {', '.join(sorted(NODE_KINDS))}).", node["id"])
            continue
        for problem in kind.check(node.get("config") or {}, owner_id):
            errors.add(f"nodes.{index}.config", f"{_label(node)}: {problem}.", node["id"])

    by_type: dict[str, list[str]] = defaultdict(list)
    for node in by_id.values():
        by_type[node["type"]].append(node["id"])
    if len(by_type["input"]) != 1:
        found = ", ".join(repr(n) for n in by_type["input"]) or "none"
        errors.add("nodes", f"A flow needs exactly one input node (found {found}).", *by_type["input"])
    if not by_type["output"]:
        errors.add("nodes", "A flow needs at least one output node.")

    outgoing: dict[str, list[dict[str, Any]]] = defaultdict(list)
    incoming: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen_edges: set[tuple[str, str, str | None]] = set()
    for index, edge in enumerate(edges):
        source, target = edge["source"], edge["target"]
        dangling = [end for end in (source, target) if end not in by_id]
        if dangling:
            errors.add(f"edges.{index}", f"Edge {source!r} -> {target!r} refers to unknown node "
                                         f"{', '.join(repr(d) for d in dangling)}.",
                       *[end for end in (source, target) if end in by_id])
            continue
        if source == target:
            errors.add(f"edges.{index}", f"Edge from node {source!r} to itself (a cycle).", source)
            continue
        key = (source, target, edge.get("label"))
        if key in seen_edges:
            errors.add(f"edges.{index}", f"Duplicate edge {source!r} -> {target!r}.", source, target)
            continue
        seen_edges.add(key)
        error_edge = edge.get("label") == ERROR_LABEL
        if error_edge and by_id[source].get("on_error") != "branch":
            errors.add(f"edges.{index}.label", f"Edge {source!r} -> {target!r} is labelled 'error' but node "
                                               f"{source!r} does not set on_error 'branch'.", source)
        elif by_id[source]["type"] == "condition" and not error_edge and edge.get("label") not in BRANCH_LABELS:
            errors.add(f"edges.{index}.label", f"Edges leaving condition node {source!r} must be labelled "
                                               "'true' or 'false'.", source)
        if by_id[target]["type"] == "input":
            errors.add(f"edges.{index}", f"The input node {target!r} cannot have incoming edges.", target)
        if by_id[source]["type"] == "output":
            errors.add(f"edges.{index}", f"The output node {source!r} cannot have outgoing edges.", source)
        outgoing[source].append(edge)
        incoming[target].append(edge)
    for node_id in by_type["condition"]:
        if not [e for e in outgoing[node_id] if e.get("label") != ERROR_LABEL]:
            errors.add("edges", f"Condition node {node_id!r} has no outgoing 'true' or 'false' edge.", node_id)
    for index, node in enumerate(nodes):
        if node.get("on_error") == "branch" and by_id.get(node["id"]) is node and not any(
                e.get("label") == ERROR_LABEL for e in outgoing[node["id"]]):
            errors.add(f"nodes.{index}.on_error", f"{_label(node)}: on_error 'branch' needs an outgoing edge "
                                                  "labelled 'error' (where the run goes when the node fails).",
                       node["id"])
    errors.raise_if_any()

    order = _topological(list(by_id), outgoing)
    if len(order) < len(by_id):
        cycle = _cycle([n for n in by_id if n not in order], outgoing)
        errors.add("edges", "The graph has a cycle: " + " -> ".join(cycle) + ".", *cycle)
        errors.raise_if_any()

    reachable = _reachable(by_type["input"][0], outgoing)
    for index, node in enumerate(nodes):
        if node["id"] not in reachable:
            errors.add(f"nodes.{index}", f"{_label(node)} cannot be reached from the input node.", node["id"])
    errors.raise_if_any()
    return order


def _topological(ids: list[str], outgoing: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Kahn's algorithm; among ready nodes the one listed first goes first, so the order is stable."""
    position = {node_id: i for i, node_id in enumerate(ids)}
    indegree = dict.fromkeys(ids, 0)
    for edges in outgoing.values():
        for edge in edges:
            indegree[edge["target"]] += 1
    ready = sorted((n for n in ids if indegree[n] == 0), key=position.__getitem__)
    order = []
    while ready:
        node_id = ready.pop(0)
        order.append(node_id)
        for edge in outgoing[node_id]:
            indegree[edge["target"]] -= 1
            if indegree[edge["target"]] == 0:
                ready.append(edge["target"])
                ready.sort(key=position.__getitem__)
    return order


def _cycle(candidates: list[str], outgoing: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One cycle among the nodes Kahn's algorithm could not order, as a closed path a -> b -> a.

    Walks edges backwards: each such node has an incoming edge from another such node (or it would
    have been ordered), while a node downstream of a cycle may have no way forward."""
    remaining = set(candidates)
    parents: dict[str, list[str]] = defaultdict(list)
    for source, edges in outgoing.items():
        for edge in edges:
            if source in remaining and edge["target"] in remaining:
                parents[edge["target"]].append(source)
    path, index = [candidates[0]], {candidates[0]: 0}
    while True:
        previous = parents[path[-1]][0]
        if previous in index:
            cycle = path[index[previous]:] + [previous]
            return list(reversed(cycle))
        index[previous] = len(path)
        path.append(previous)


def _reachable(start: str, outgoing: dict[str, list[dict[str, Any]]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for edge in outgoing[todo.pop()]:
            if edge["target"] not in seen:
                seen.add(edge["target"])
                todo.append(edge["target"])
    return seen


# --- storage ----------------------------------------------------------------------------------

def _clean_nodes(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in node.items() if v is not None} for node in nodes]


def owned(owner_id: str, flow_id: str) -> Flow:
    flow = db.session.get(Flow, flow_id)
    if flow is None or flow.owner_id != owner_id:
        raise NotFound("No such flow.")
    return flow


def list_flows(owner_id: str, page: int, per_page: int, search: str | None = None,
               status: str | None = None) -> Page:
    statement = sa.select(Flow).where(Flow.owner_id == owner_id)
    if search:
        pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        statement = statement.where(sa.or_(sa.func.lower(Flow.name).like(pattern, escape="\\"),
                                           sa.func.lower(Flow.description).like(pattern, escape="\\")))
    if status:
        statement = statement.where(Flow.status == status)
    return paginate(statement.order_by(Flow.created_at.desc(), Flow.id.desc()), page, per_page)


def create(owner_id: str, body: dict[str, Any]) -> Flow:
    nodes, edges = _clean_nodes(body["nodes"]), body["edges"]
    validate(owner_id, nodes, edges)
    now = utcnow()
    flow = Flow(owner_id=owner_id, name=body["name"], description=body.get("description") or "",
                status=body.get("status") or "active", version=1, nodes=nodes, edges=edges,
                meta=body.get("metadata") or {}, created_at=now, updated_at=now)
    db.session.add(flow)
    service.flush()
    db.session.add(FlowVersion(flow_id=flow.id, version=1, nodes=nodes, edges=edges, created_at=now))
    service.commit()
    return flow


def update(owner_id: str, flow_id: str, body: dict[str, Any]) -> Flow:
    flow = owned(owner_id, flow_id)
    for name in ("name", "description", "status"):
        if name in body:
            setattr(flow, name, body[name])
    if "metadata" in body:
        flow.meta = body["metadata"] or {}
    if "nodes" in body or "edges" in body:
        nodes = _clean_nodes(body["nodes"]) if "nodes" in body else flow.nodes
        edges = body["edges"] if "edges" in body else flow.edges
        validate(owner_id, nodes, edges)
        if nodes != flow.nodes or edges != flow.edges:
            flow.version += 1
            flow.nodes, flow.edges = nodes, edges
            db.session.add(FlowVersion(flow_id=flow.id, version=flow.version, nodes=nodes, edges=edges,
                                       created_at=utcnow()))
    service.commit()
    return flow


def delete(owner_id: str, flow_id: str) -> None:
    db.session.delete(owned(owner_id, flow_id))
    db.session.commit()


def versions(owner_id: str, flow_id: str, page: int, per_page: int) -> Page:
    flow = owned(owner_id, flow_id)
    statement = (sa.select(FlowVersion).where(FlowVersion.flow_id == flow.id)
                 .order_by(FlowVersion.version.desc()))
    return paginate(statement, page, per_page)


def version_of(flow: Flow, version: int | None) -> FlowVersion:
    found = db.session.get(FlowVersion, (flow.id, version or flow.version))
    if found is None:
        raise ValidationFailed({"version": [f"The flow has no version {version} (latest: {flow.version})."]})
    return found
