"""Evaluation protocols and the evaluator (importable as ``dsdistill.evaluators``)."""

from dsdistill.evaluators.protocols import DC, TM, Protocol, protocol_for
from dsdistill.evaluators.report import EvalReport, RunResult
from dsdistill.evaluators.standard import evaluate
from dsdistill.evaluators.graph import GRAPH, GraphProtocol, evaluate_graph  # noqa: E402  (registers "graph")
from dsdistill.evaluators.softlabel import SOFTLABEL, evaluate_softlabel  # noqa: E402  (registers "softlabel")

__all__ = ["evaluate", "evaluate_graph", "evaluate_softlabel", "EvalReport", "RunResult", "Protocol", "GraphProtocol",
           "protocol_for", "DC", "TM", "GRAPH", "SOFTLABEL"]
