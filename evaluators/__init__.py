"""Evaluation protocols and the evaluator (importable as ``dsdistill.evaluators``)."""

from dsdistill.evaluators.protocols import DC, TM, Protocol, protocol_for
from dsdistill.evaluators.report import EvalReport, RunResult
from dsdistill.evaluators.standard import evaluate
from dsdistill.evaluators.graph import GRAPH, GraphProtocol, evaluate_graph  # noqa: E402  (registers "graph")
from dsdistill.evaluators.softlabel import SOFTLABEL, evaluate_softlabel  # noqa: E402  (registers "softlabel")
from dsdistill.evaluators.infer import INFER  # noqa: E402  (registers "infer")
from dsdistill.evaluators.nrr import DBR  # noqa: E402  (registers "dbr", the nrr protocol)
from dsdistill.evaluators.hello import HELLO  # noqa: E402  (registers "hello"; open_clip imported lazily)

__all__ = ["evaluate", "evaluate_graph", "evaluate_softlabel", "EvalReport", "RunResult", "Protocol", "GraphProtocol",
           "protocol_for", "DC", "TM", "GRAPH", "SOFTLABEL", "INFER", "DBR", "HELLO"]
