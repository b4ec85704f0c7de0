"""OpSpec for cross_entropy with mean reduction (see kernel.py for the math and the kernels)."""

from __future__ import annotations

import torch

from ..spec import (NEG_INF_CLASSES, PAST_CAP_ROWS, Call, Case, OpSpec, Param, Tolerance, TuningSpace, bench_strategy,
                    common_strategy, generator, many_rows_cap, mask_neg_inf, neg_inf_class, pick_class, size_strategy,
                    tensor)

# Llama-3 (128256) and Llama-2 (32000) vocabularies at training-batch token counts.
BENCH_CASES = [{"rows": 4096, "vocab": 128256, "ignore_index": -100},
               {"rows": 8192, "vocab": 32000, "ignore_index": -100},
               {"rows": 16384, "vocab": 128256, "ignore_index": -100}]


def reference(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore_index, reduction="mean")


def _past_cap_rows(max_numel: int) -> list[int]:
    return [r for r in PAST_CAP_ROWS if 64 < r <= min(many_rows_cap(max_numel), max_numel)]


def _bench_numel(c) -> int:
    return c["rows"] * c["vocab"]


def _shape_weights(max_numel: int) -> dict[str, int]:
    weights = {"plain": 7, "one_class": 1}
    if _past_cap_rows(max_numel):
        weights["many_rows"] = 1
    if bench_strategy(BENCH_CASES, _bench_numel, max_numel) is not None:
        weights["bench"] = 1
    return weights


def shape_classes(max_numel: int) -> tuple[str, ...]:
    return tuple(_shape_weights(max_numel))


def strategy(max_numel: int, pin=None):
    from hypothesis import strategies as st

    # Logits ~1e3 are the point of a fused, max-shifted log-sum-exp. fp16 tops out at 65504:
    # Pareto tails, and lognormal times 1000, would overflow the *input*, so fp16 draws lighter
    # distributions at the large scale.
    commons = st.one_of(
        common_strategy(dtypes=("fp32", "bf16"), scales=(1.0, 1.0, 30.0, 1000.0), pin=pin),
        common_strategy(dtypes=("fp16",), dists=("normal", "uniform", "laplace", "lognormal"), scales=(1.0, 30.0),
                        pin=pin),
        common_strategy(dtypes=("fp16",), dists=("normal", "uniform", "laplace"), scales=(1000.0,), pin=pin),
    )

    bench = bench_strategy(BENCH_CASES, _bench_numel, max_numel)
    many_hi = min(many_rows_cap(max_numel), max_numel)
    past = _past_cap_rows(max_numel)
    kinds = pick_class(_shape_weights(max_numel), pin)
    masks = pick_class(NEG_INF_CLASSES, pin, axis="neg_inf")

    @st.composite
    def cases(draw):
        kind = draw(kinds)
        common = draw(commons)
        if kind == "bench":
            params = dict(draw(bench))
        elif kind == "many_rows":
            # More rows than a capped row grid or one block of the final mean covers.
            rows = draw(st.one_of(st.sampled_from(past), st.integers(65, many_hi)))
            vocab = draw(size_strategy(1, max(1, min(64, max_numel // rows))))
        elif kind == "one_class":
            # A vocab of 1: every loss is exactly 0. Its own branch, so that the simplest draw
            # (a verify of one example) has a loss an all-zeros answer cannot match.
            vocab, rows = 1, draw(size_strategy(1, max(1, min(64, max_numel))))
        else:
            vocab = draw(size_strategy(min(2, max_numel), max(2, min(max_numel, 65536))))
            rows = draw(size_strategy(1, max(1, min(64, max_numel // vocab))))
        if kind != "bench":
            # A pad id inside the vocab (0) ignores rows by a real class, not by an out-of-range value.
            ignore_index = draw(st.sampled_from([-100, -100, -1] + ([0] if vocab >= 2 else [])))
            params = {"rows": rows, "vocab": vocab, "ignore_index": ignore_index}
        # Masked logits (some entries -inf, or all but the target's): the target logit and one
        # logit of every ignored row stay finite, so every loss and the mean stay finite.
        neg_inf = draw(masks)
        if neg_inf != "none":
            params["neg_inf"] = neg_inf
        return Case(params=params, shape_class=kind, **common)

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
        n_ignored = 1 + int(torch.randint(0, max(1, rows // 3), (1,), generator=gen, device="cpu"))
        target[torch.randperm(rows, generator=gen)[:min(n_ignored, rows - 1)]] = ignore_index
    if p.get("neg_inf"):
        ignored = target == ignore_index
        keep = torch.where(ignored, torch.randint(0, vocab, (rows,), generator=gen, dtype=torch.int64), target)
        mask_neg_inf(logits, p["neg_inf"], gen, keep=keep)
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
    bench_cases=BENCH_CASES,
    shape_classes=shape_classes,
    param_classes={"neg_inf": tuple(NEG_INF_CLASSES)},
    param_class_of=neg_inf_class,
)
