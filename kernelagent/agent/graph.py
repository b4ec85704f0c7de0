"""The LangGraph wiring: which node follows which, and the named edges that route.

    START → gather_context → plan_round ─fan_out─► candidate × K ─► reflect ─decide─┬─ accept → END
                                  ▲                                                 ├─ retry ─┘(plan_round)
                                  └─────────────────────────────────────────────────┘
                                                                                    └─ stop → give_up → END

    candidate:  START → generate ─after_generate─┬─ has_code → static_checks ─after_static_checks─┬─ passed → verify → race → analyse → END
                                                 └─ rejected ───────────────────────────────────┴─ rejected ────────────────► analyse

``fan_out`` sends one ``CandidateState`` per slot (LangGraph ``Send``); the candidates run in
parallel and their attempts merge into the run's state through list/sum reducers. ``decide``
enforces the round cap and the token and wall-clock budgets held in the state.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from .nodes import Deps, Nodes
from .state import AgentState, CandidateOutput, CandidateState


def _state_graph(schema, output):
    try:
        return StateGraph(schema, output_schema=output)
    except TypeError:  # langgraph < 0.6 spelled it ``output``
        return StateGraph(schema, output=output)


def build_candidate_graph(nodes: Nodes):
    g = _state_graph(CandidateState, CandidateOutput)
    g.add_node("generate", nodes.generate)
    g.add_node("static_checks", nodes.static_checks)
    g.add_node("verify", nodes.verify)
    g.add_node("race", nodes.race)
    g.add_node("analyse", nodes.analyse)
    g.add_edge(START, "generate")
    g.add_conditional_edges("generate", nodes.after_generate, {"has_code": "static_checks", "rejected": "analyse"})
    g.add_conditional_edges("static_checks", nodes.after_static_checks, {"passed": "verify", "rejected": "analyse"})
    g.add_edge("verify", "race")
    g.add_edge("race", "analyse")
    g.add_edge("analyse", END)
    return g.compile()


def build_graph(deps: Deps, checkpointer=None):
    nodes = Nodes(deps)
    g = StateGraph(AgentState)
    g.add_node("gather_context", nodes.gather_context)
    g.add_node("plan_round", nodes.plan_round)
    g.add_node("candidate", build_candidate_graph(nodes))
    g.add_node("reflect", nodes.reflect)
    g.add_node("accept", nodes.accept)
    g.add_node("give_up", nodes.give_up)
    g.add_edge(START, "gather_context")
    g.add_edge("gather_context", "plan_round")
    g.add_conditional_edges("plan_round", nodes.fan_out, ["candidate"])
    g.add_edge("candidate", "reflect")
    g.add_conditional_edges("reflect", nodes.decide, {"accept": "accept", "retry": "plan_round", "stop": "give_up"})
    g.add_edge("accept", END)
    g.add_edge("give_up", END)
    return g.compile(checkpointer=checkpointer)
