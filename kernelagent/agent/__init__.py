"""The kernel-writing agent: a LangGraph loop of generate → static checks → verify → reflect.

Entry point: :func:`kernelagent.agent.run.generate` (what ``kernelagent generate`` calls).
The graph lives in ``graph.py``, its nodes in ``nodes.py``, the LLM behind a narrow interface
in ``llm.py`` (with record/replay in ``record.py``), and the parsing of untrusted replies in
``replies.py``. Model output is only ever parsed here (with ``ast``); it runs only inside the
harness's sandbox.
"""

from .run import GenerateOptions, RunResult, generate

__all__ = ["GenerateOptions", "RunResult", "generate"]
