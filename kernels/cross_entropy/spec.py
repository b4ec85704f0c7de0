"""OpSpec for cross_entropy with mean reduction (see kernel.py for the math and the kernels)."""

from __future__ import annotations

import torch

from ..spec import Call, Case, OpSpec, Param, Tolerance, TuningSpace, common_strategy, generator, size_strategy, tensor


def reference(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore_index, reduction="mean")


def strategy(max_numel: int):
    from hypothesis import strategies as st

    # Logits ~1e3 are the point of a fused, max-shifted log-sum-exp. fp16 tops out at 65504:
    # Pareto tails, and lognormal times 1000, would overflow the *input*, so fp16 draws lighter
    # distributions at the large scale.
    commons = st.one_of(
        common_strategy(dtypes=("fp32", "bf16"), scales=(1.0, 1.0, 30.0, 1000.0)),
        common_strategy(dtypes=("fp16",), dists=("normal", "uniform", "laplace", "lognormal"), scales=(1.0, 30.0)),
        common_strategy(dtypes=("fp16",), dists=("normal", "uniform", "laplace"), scales=(1000.0,)),
    )

    @st.composite
    def cases(draw):
        vocab = draw(size_strategy(1, max(1, min(max_numel, 65536))))
        rows = draw(size_strategy(1, max(1, min(64, max_numel // vocab))))
        # A pad id inside the vocab (0) ignores rows by a real class, not by an out-of-range value.
        ignore_index = draw(st.sampled_from([-100, -100, -1] + ([0] if vocab >= 2 else [])))
        common = draw(commons)
        return Case(params={"rows": rows, "vocab": vocab, "ignore_index": ignore_index}, **common)

    return cases()


def build(case: Case) -> Call:
    p = case.params
    rows, vocab, ignore_index = p["rows"], p["vocab"], p["ignore_index"]
    gen = generator(case.seed)
    logits = tensor((rows, vocab), case.dtype, case.dist, case.scale, gen, case.layout)
    if 0 <= ignore_index < vocab:
        # Valid rows draw from the vocab minus the ignored class.
        target = torch.randint(0, vocab - 1, (rows,), generator=gen, dtype=torch.int64)
        target = target + (target >= ignore_index).to(torch.int64)
    else:
        target = torch.randint(0, vocab, (rows,), generator=gen, dtype=torch.int64)
    if rows >= 2:
        # Some rows ignored (padding), never all of them: the mean over zero rows is NaN.
        n_ignored = 1 + int(torch.randint(0, max(1, rows // 3), (1,), generator=gen))
        target[torch.randperm(rows, generator=gen)[:min(n_ignored, rows - 1)]] = ignore_index
    kwargs = {} if ignore_index == -100 else {"ignore_index": ignore_index}
    return Call(args=(logits, target), kwargs=kwargs)


def shape_key(call: Call) -> dict:
    return {"vocab": int(call.args[0].shape[-1])}


def default_config(key) -> dict:
    vocab = int(key["vocab"])
    block = min(1 << max(0, (max(vocab, 1) - 1).bit_length()), 8192)
    return {"BLOCK_V": block, "num_warps": 4 if block <= 1024 else 8 if block <= 4096 else 16}


def _constraint(config, params) -> str | None:
    vocab = params.get("vocab")
    if vocab is not None and int(config["BLOCK_V"]) >= 2 * max(int(vocab), 1) and int(config["BLOCK_V"]) > 256:
        return "BLOCK_V is at least twice the vocab: half the lanes would idle"
    return None


def _bytes(call: Call) -> float:
    logits, target = call.args
    return logits.numel() * logits.element_size() + target.numel() * target.element_size() + logits.element_size()


OPSPEC = OpSpec(
    name="cross_entropy",
    doc="cross_entropy(logits, target, ignore_index=-100): mean NLL of log-softmax; logits (rows, vocab), "
        "target int64 (rows,)",
    reference=reference,
    strategy=strategy,
    build=build,
    # The log-sum-exp sums `vocab` terms per row; the mean sums `rows` losses.
    tolerance=Tolerance(ulps=8.0, torch_factor=4.0,
                        reduction_length=lambda call: call.args[0].shape[-1] + call.args[0].shape[0]),
    # max, subtract, exp, add per logit
    flops=lambda call: 4.0 * call.args[0].numel(),
    bytes=_bytes,
    tuning_space=TuningSpace(
        params=[Param("BLOCK_V", [256, 512, 1024, 2048, 4096, 8192, 16384, 32768]),
                Param("num_warps", [1, 2, 4, 8, 16, 32])],
        constraint=_constraint,
    ),
    default_config=default_config,
    shape_key=shape_key,
    # Llama-3 (128256) and Llama-2 (32000) vocabularies at training-batch token counts.
    bench_cases=[{"rows": 4096, "vocab": 128256, "ignore_index": -100},
                 {"rows": 8192, "vocab": 32000, "ignore_index": -100},
                 {"rows": 16384, "vocab": 128256, "ignore_index": -100}],
)
