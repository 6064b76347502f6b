"""Evaluation protocols and the evaluator (importable as ``dsdistill.evaluators``)."""

from dsdistill.evaluators.protocols import DC, TM, Protocol, protocol_for
from dsdistill.evaluators.report import EvalReport, RunResult
from dsdistill.evaluators.standard import evaluate
from dsdistill.evaluators.graph import GRAPH, GraphProtocol, evaluate_graph  # noqa: E402  (registers "graph")

__all__ = ["evaluate", "EvalReport", "RunResult", "Protocol", "protocol_for", "DC", "TM"]
