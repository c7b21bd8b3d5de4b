"""How fast this machine trains, explains and flips pixels, per precision: `python -m clxai_utils.tools.benchmark`.

Which precision pays depends on the CPU (native bf16 or not, AMX or AVX-512 only) and on
the network's width, so the README's figures are this command's output on named machines,
and a user can measure their own before choosing (`CLXAI_PRECISION`). The network is the
profile's, untrained (BatchNorm statistics from one training-mode pass, so activations are
spread like a trained model's); the images are random. Every rate is wall-clock over whole
batches after warm-up steps, images per second.

Measured, per precision:

- ``train``: a CE training step (forward, backward, SGD) at the profile's CE batch size;
- ``forward``: inference at the metrics' batch size (on this kind of CPU, batches of a few
  hundred images run about twice as fast per image as batches of 2,048: cache size, not
  arithmetic, sets the pace of a narrow network);
- ``gradcam`` / ``eigencam``: maps (`explain.cams.explain`) at the explanation batch size;
- ``pixel_flipping``: images scored per second, and ``pf_over_forward``: its time divided by
  the time of plain forward passes over as many copies as it evaluates (the overhead of
  building the flipped copies).

``--compile`` adds ``float32+compile``: `torch.compile` of the channels-last float32 model,
with its compile time, to see whether it pays back within a run.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from functools import partial

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from clxai_utils.core.config import load_profile
from clxai_utils.core.precision import autocast, cpu_computes_bf16, inference_model, model_to_layout, to_layout
from clxai_utils.core.threads import warn_if_busy
from clxai_utils.core.validate import int_at_least
from clxai_utils.evaluate.metrics import pixel_flipping
from clxai_utils.explain.cams import explain
from clxai_utils.train.models import ExplainableClassifier, ModelSpec, build_training_model


def _rate(fn: Callable[[], object], images: int, repeats: int, warmup: int = 2) -> float:
    """Images per second of `fn` (which processes `images` images), after `warmup` calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return images * repeats / (time.perf_counter() - start)


def _model(spec: ModelSpec, size: int, generator: torch.Generator) -> ExplainableClassifier:
    """The profile's untrained classifier with BatchNorm statistics of random images."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
    model = build_training_model(spec)
    assert isinstance(model, ExplainableClassifier)
    with torch.no_grad():
        model.train()(torch.randn(256, 3, size, size, generator=generator))
    return model.eval()


def train_rate(spec: ModelSpec, batch: int, size: int, precision: str, repeats: int) -> float:
    """Images per second of CE training steps (forward, backward, SGD with momentum)."""
    generator = torch.Generator().manual_seed(0)
    model = model_to_layout(_model(spec, size, generator).train(), precision)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = to_layout(torch.randn(batch, 3, size, size, generator=generator), precision)
    y = torch.randint(0, spec.num_classes, (batch,), generator=generator)
    cpu = torch.device("cpu")

    def step() -> None:
        with autocast(precision, cpu):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return _rate(step, batch, repeats)


def inference_rates(
    spec: ModelSpec, size: int, precision: str, metric_batch: int, explain_batch: int, pixels_per_step: int, n: int
) -> dict[str, float]:
    """Forward, Grad-CAM, Eigen-CAM and Pixel Flipping rates, and Pixel Flipping's time over plain forwards'."""
    generator = torch.Generator().manual_seed(0)
    model = _model(spec, size, generator)
    x = torch.randn(n, 3, size, size, generator=generator)
    rates: dict[str, float] = {}
    pool = x.repeat(math.ceil(metric_batch / n), 1, 1, 1)  # at least one full batch, as Pixel Flipping's copies
    with inference_model(model, precision) as fast, torch.no_grad():
        rates["forward"] = _rate(lambda: [fast(b) for b in pool.split(metric_batch)], len(pool), 3)
    targets = torch.zeros(n, dtype=torch.long)
    with inference_model(model, precision) as fast:
        for method in ("gradcam", "eigencam"):
            rates[method] = _rate(partial(explain, fast, x, method, targets, explain_batch), n, 2, warmup=1)
        maps = explain(fast, x, "eigencam", None, explain_batch)
        baseline = torch.zeros(3)

        def flip() -> object:
            return pixel_flipping(
                fast, x, maps, targets, pixels_per_step=pixels_per_step, baseline=baseline, batch_size=metric_batch
            )

        rates["pixel_flipping"] = _rate(flip, n, 1, warmup=1)
    copies = n * (math.ceil(size * size / pixels_per_step) + 1)
    rates["pf_over_forward"] = (n / rates["pixel_flipping"]) / (copies / rates["forward"])
    return rates


def compiled_train_rate(spec: ModelSpec, batch: int, size: int, repeats: int) -> tuple[float, float]:
    """(images per second, compile seconds) of float32 channels-last training steps under `torch.compile`."""
    generator = torch.Generator().manual_seed(0)
    model = _model(spec, size, generator).train().to(memory_format=torch.channels_last)
    compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, generator=generator).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (batch,), generator=generator)

    def step() -> None:
        loss = F.cross_entropy(compiled(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    compile_seconds = time.perf_counter() - start
    return _rate(step, batch, repeats), compile_seconds


def benchmark(
    profile: str,
    dataset: str,
    repeats: int,
    images: int,
    compile_too: bool,
    width: float | None = None,
    train_batch: int | None = None,
    metrics_batch: int | None = None,
) -> pd.DataFrame:
    """One row per precision: the rates of the module docstring on the profile's network and batch sizes
    (or another `width`, training batch or metrics batch, to compare settings)."""
    settings = load_profile(profile).for_dataset(dataset)
    size = settings.data.image_size or (224 if settings.model.arch == "resnet50" else 32)
    spec = ModelSpec(settings.model.arch, width or settings.model.width, 10, "ce")
    train_batch = train_batch or settings.train["ce"].batch_size
    metrics_batch = metrics_batch or settings.metrics.batch_size
    precisions = ["float32", *(["bf16"] if cpu_computes_bf16() else [])]
    rows = []
    for precision in precisions:
        row: dict[str, object] = {"precision": precision}
        row["train"] = train_rate(spec, train_batch, size, precision, repeats)
        row |= inference_rates(
            spec,
            size,
            precision,
            metrics_batch,
            settings.explain.batch_size,
            settings.metrics.pixels_per_step,
            images,
        )
        rows.append(row)
    if compile_too:
        rate, seconds = compiled_train_rate(spec, train_batch, size, repeats)
        rows.append({"precision": "float32+compile", "train": rate, "compile_s": seconds})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--repeats", type=int, default=10, help="training steps timed per precision")
    parser.add_argument("--images", type=int, default=512, help="images explained and flipped per precision")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (float32 channels-last)")
    parser.add_argument("--width", type=float, help="network width instead of the profile's (resnet18_cifar only)")
    parser.add_argument("--train-batch", type=int_at_least(1), help="training batch instead of the profile's CE batch")
    parser.add_argument("--metrics-batch", type=int_at_least(1), help="Pixel Flipping batch instead of the profile's")
    args = parser.parse_args(argv)
    warn_if_busy("benchmark")
    table = benchmark(
        args.profile,
        args.dataset,
        args.repeats,
        args.images,
        args.compile,
        args.width,
        args.train_batch,
        args.metrics_batch,
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_computes_bf16()}")
    print(table.round(2).to_string(index=False))


if __name__ == "__main__":
    main()
