"""How fast the training stream decodes: images/s of decode + RandomResizedCrop + flip per worker count.

Whether ImageNet-S50 training is bound by the GPU or by JPEG decoding depends on the
machine's cores, so the number is measured rather than guessed. Each worker count gets a
warm-up pass (starts the workers, brings the files into the page cache) that is not timed;
then whole passes are timed by the wall clock, from asking for the first batch to receiving
the last, so start-up of the pipeline within a pass is counted and nothing is extrapolated.

With 0 workers the batches are also collated in this process, with torch's intra-op
threads (column `torch_threads`); on a busy 2-core machine two threads made each batch's
`torch.stack` about 100 times slower than one thread (torch.set_num_threads(1) avoids it).

    python -m clxai_utils.tools.throughput FOLDER [--workers 0 1 2] [--batch-size 32] [--passes 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from clxai_utils.core.validate import check_positive_int, int_at_least
from clxai_utils.data.geometry import EVAL_SIZE
from clxai_utils.data.imagenet_s import IMAGE_SUFFIXES
from clxai_utils.data.sources import DataError
from clxai_utils.data.stream import RandomResizedCropStream, make_loader


def image_files(folder: str | Path) -> list[Path]:
    """The JPEG/PNG files below `folder`, sorted."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder} holds no .JPEG/.jpg/.png image (searched recursively)")
    return files


def measure_throughput(
    folder: str | Path,
    workers: Sequence[int] = (0, 1, 2),
    size: int = EVAL_SIZE,
    batch_size: int = 32,
    passes: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """Images/s of the training stream (one view) over the images below `folder`, one row per worker count."""
    files = image_files(folder)
    dataset = RandomResizedCropStream([(path, 0) for path in files], size=size, seed=seed)
    passes = check_positive_int("passes", passes)
    rows = []
    for num_workers in workers:
        loader = make_loader(dataset, batch_size, num_workers, shuffle_seed=seed)
        for _ in loader:  # warm-up pass, not timed
            pass
        images = 0
        start = time.perf_counter()
        for _ in range(passes):
            for batch, _labels in loader:
                images += len(batch)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "workers": num_workers,
                "torch_threads": torch.get_num_threads() if num_workers == 0 else 1,
                "images": images,
                "seconds": round(seconds, 3),
                "images_per_s": round(images / seconds, 1),
            }
        )
        del loader  # shuts its persistent workers down before the next count starts its own
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a folder of JPEG/PNG images (searched recursively)")
    parser.add_argument("--workers", type=int_at_least(0), nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int_at_least(1), default=EVAL_SIZE)
    parser.add_argument("--batch-size", type=int_at_least(1), default=32)
    parser.add_argument("--passes", type=int_at_least(1), default=2)
    args = parser.parse_args(argv)
    table = measure_throughput(args.folder, args.workers, args.size, args.batch_size, args.passes)
    print(f"{len(image_files(args.folder))} images below {args.folder}, RandomResizedCrop({args.size}) + flip")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
