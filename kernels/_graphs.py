"""CUDA graphs for small, static library calls: ``graphed(fn, *example_args)``.

A library call costs a few microseconds of Python before its kernel launches (the hot path in
``_dispatch`` is a signature lookup and the launcher's own checks, then Triton's launch); for a
small op that is most of its time. A CUDA graph replays the captured launches with none of
that: ``g = graphed(kernelagent.kernels.rms_norm, x, w)`` captures one call, and ``g(x2, w2)``
copies the new inputs into the captured buffers, replays, and returns the captured output.

Static means static: every tensor argument must have the example's shape, dtype, strides and
device, and every other argument must equal the example's (a ``ValueError`` names the one that
differs). The output tensor is the same object at every replay and is overwritten by the next
one: clone it to keep it. Capture runs ``warmup`` calls on a side stream first, so that the
dispatch decision is made, the kernels are compiled and the caching allocator has the pools it
needs before capture. CUDA only; nothing here changes what the call computes.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["graphed", "GraphedCall"]


def _is_tensor(v: Any) -> bool:
    import torch

    return isinstance(v, torch.Tensor)


def _layout(t) -> tuple:
    return tuple(t.shape), t.dtype, tuple(t.stride()), t.device


class GraphedCall:
    """A captured call; see the module docstring. ``graph`` is the ``torch.cuda.CUDAGraph``."""

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, warmup: int = 3):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("graphed() needs a CUDA device: CUDA graphs capture GPU launches "
                               "(call the op directly on this machine)")
        values = (*args, *kwargs.values())
        tensors = [v for v in values if _is_tensor(v)]
        if not tensors or any(t.device.type != "cuda" for t in tensors):
            raise ValueError("graphed() needs the example's tensor arguments on a CUDA device")
        self._fn = fn
        # The captured graph reads these buffers: private copies, so the caller's tensors stay theirs.
        self._args = tuple(v.clone() if _is_tensor(v) else v for v in args)
        self._kwargs = {k: v.clone() if _is_tensor(v) else v for k, v in kwargs.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(max(1, int(warmup))):
                fn(*self._args, **self._kwargs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(*self._args, **self._kwargs)

    def _load(self, name: str, static: Any, value: Any) -> None:
        if _is_tensor(static):
            if not _is_tensor(value) or _layout(value) != _layout(static):
                got = _layout(value) if _is_tensor(value) else type(value).__name__
                raise ValueError(f"graphed call: argument {name} must match the captured one "
                                 f"(shape, dtype, strides, device) {_layout(static)}; got {got}; "
                                 "capture another graph for this shape")
            static.copy_(value)
        elif value is not static and value != static:
            raise ValueError(f"graphed call: argument {name} was {static!r} at capture; got {value!r}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) != len(self._args) or set(kwargs) != set(self._kwargs):
            raise ValueError(f"graphed call: expected {len(self._args)} positional arguments and keywords "
                             f"{sorted(self._kwargs)}, as captured")
        for i, (static, value) in enumerate(zip(self._args, args)):
            self._load(f"#{i}", static, value)
        for k, value in kwargs.items():
            self._load(k, self._kwargs[k], value)
        self.graph.replay()
        return self.output


def graphed(fn: Callable, *example_args: Any, warmup: int = 3, **example_kwargs: Any) -> GraphedCall:
    """Capture ``fn(*example_args, **example_kwargs)`` (a library op, or a function of several)
    into a CUDA graph and return the replayable call (see the module docstring)."""
    return GraphedCall(fn, example_args, example_kwargs, warmup)
