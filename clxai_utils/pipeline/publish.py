"""Publish executed notebooks into `notebooks/`, so a reader sees tables and figures without running anything.

    python -m clxai_utils.publish outputs/runs/cifar10-quick-seed0/notebooks/*.ipynb outputs/report/07_analysis.ipynb

The executed copies papermill wrote are cleaned before they replace the sources: papermill's
metadata (absolute input/output paths, start and end times of every cell) is dropped, and
a notebook with an error output or above the size limit is refused, so what is committed
is a complete, portable run. Outputs themselves are kept as they are: CI re-executes the
published notebooks with nbval and compares the cells marked NBVAL_CHECK_OUTPUT.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from clxai_utils.core.artifacts import atomic_path
from clxai_utils.core.paths import repo_root

MAX_KB = 600  # a published notebook above this embeds too much (figures at too high a resolution)
MAX_WIDTH = 640  # embedded PNG figures wider than this are scaled down (the saved figure files keep full size)


class PublishError(ValueError):
    """An executed notebook that must not be published as is."""


def shrink_png(encoded: str, max_width: int = MAX_WIDTH) -> str:
    """A base64 PNG at most `max_width` pixels wide with a 256-colour palette, or the input if that is smaller."""
    image = Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB")
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
    buffer = io.BytesIO()
    image.quantize(256).save(buffer, format="PNG", optimize=True)
    smaller = base64.b64encode(buffer.getvalue()).decode("ascii")
    return smaller if len(smaller) < len(encoded) else encoded


def clean(notebook: dict[str, Any], name: str) -> dict[str, Any]:
    """The notebook without papermill's machine-specific metadata, with figures at most MAX_WIDTH wide.

    An error output is refused.
    """
    notebook = json.loads(json.dumps(notebook))  # a deep copy of plain JSON
    notebook["metadata"].pop("papermill", None)
    for cell in notebook["cells"]:
        cell["metadata"].pop("papermill", None)
        cell["metadata"].pop("execution", None)
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            raise PublishError(
                f"{name} has an error output ({errors[0].get('ename')}): fix the run before publishing it"
            )
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                output["data"]["image/png"] = shrink_png("".join(output["data"]["image/png"]))
    return notebook


def publish(sources: list[Path], dest: Path, max_kb: int = MAX_KB) -> list[Path]:
    """Clean every executed notebook in `sources` and write it (atomically) to `dest/<same name>`."""
    cleaned = {}
    for source in sources:
        text = json.dumps(clean(json.loads(source.read_text()), source.name), indent=1, ensure_ascii=False) + "\n"
        if len(text.encode()) > max_kb * 1024:
            raise PublishError(
                f"{source.name} is {len(text.encode()) // 1024} KB, above max_kb={max_kb}: embed smaller figures"
            )
        if not (dest / source.name).is_file():
            raise PublishError(
                f"{source.name} does not replace a notebook in {dest}: only executed pipeline notebooks are published"
            )
        cleaned[dest / source.name] = text
    for target, text in cleaned.items():  # all checked before anything is replaced
        with atomic_path(target) as tmp:
            tmp.write_text(text)
    return list(cleaned)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clxai_utils.publish", description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+", type=Path, help="executed notebooks (papermill outputs)")
    parser.add_argument(
        "--to", type=Path, default=repo_root() / "notebooks", help="folder of the notebooks they replace"
    )
    parser.add_argument("--max-kb", type=int, default=MAX_KB, help="largest notebook file accepted")
    args = parser.parse_args(argv)
    try:
        written = publish(args.sources, args.to, args.max_kb)
    except PublishError as error:
        parser.error(str(error))
    for path in written:
        print(f"published {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
