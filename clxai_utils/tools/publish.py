"""Publish executed notebooks into `notebooks/`, so a reader sees tables and figures without running anything.

    python -m clxai_utils.tools.publish --run outputs/runs/cifar10-quick-seed0 --report outputs/report

It also rewrites the result blocks of the README and docs/results.md from the report
(`sync_blocks`): each sits between ``<!-- report: table4.md -->`` and ``<!-- /report -->``
and is copied from that file of the report, never typed by hand.

The executed copies papermill wrote are cleaned before they replace the sources: papermill's
metadata (absolute input/output paths, start and end times of every cell) is dropped, and
a notebook with an error output or above the size limit is refused, so what is committed
is a complete, portable run. Outputs themselves are kept as they are: CI re-executes the
published notebooks with nbval and compares the cells marked NBVAL_CHECK_OUTPUT.
"""

from __future__ import annotations

import argparse
import ast
import base64
import io
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from clxai_utils.core.artifacts import atomic_path
from clxai_utils.core.notebooks import NOTEBOOK, NOTEBOOKS, REPORT_NOTEBOOK, RUN_NOTEBOOKS
from clxai_utils.core.paths import repo_root, report_dir
from clxai_utils.core.run import Run
from clxai_utils.core.validate import check_choices

PUBLISHED = (*RUN_NOTEBOOKS, REPORT_NOTEBOOK)  # what `--only` may name
MAX_KB = 600  # a published notebook above this embeds too much (figures at too high a resolution)
MAX_WIDTH = 640  # embedded PNG figures wider than this are scaled down (the saved figure files keep full size)


class PublishError(ValueError):
    """An executed notebook that must not be published as is."""


def shrink_png(encoded: str, max_width: int = MAX_WIDTH) -> str:
    """A base64 PNG at most `max_width` pixels wide with a 256-colour palette, or the input if that is smaller."""
    image = Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB")
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.quantize(256).save(buffer, format="PNG", optimize=True)
    smaller = base64.b64encode(buffer.getvalue()).decode("ascii")
    return smaller if len(smaller) < len(encoded) else encoded


def _tagged(notebook: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return [cell for cell in notebook["cells"] if tag in cell["metadata"].get("tags", [])]


def _assignments(source: str) -> dict[str, str]:
    """`name -> value source` of the top-level assignments of a cell (papermill writes plain `name = value`)."""
    values: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [target.id for target in targets if isinstance(target, ast.Name)]
            if node.value is not None and len(names) == len(targets):
                for target_name in names:
                    values[target_name] = ast.get_source_segment(source, node.value) or ""
    return values


def set_parameters(source: str, values: dict[str, str]) -> tuple[str, set[str]]:
    """A parameters cell's `source` with the value of each `name = ...` line in `values` replaced.

    `values` maps names to source text (e.g. `repr(value)`); annotations and comments stay.
    Returns the new source and the names that were found.
    """
    lines = source.splitlines()
    found = set()
    for i, line in enumerate(lines):
        node = ast.parse(line).body[0] if line.strip() and not line.lstrip().startswith("#") else None
        if not isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) or node.value is None:
            continue
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        if isinstance(target, ast.Name) and target.id in values:
            value = node.value
            lines[i] = line[: value.col_offset] + values[target.id] + line[value.end_col_offset :]
            found.add(target.id)
    return "\n".join(lines), found


def fold_injected_parameters(notebook: dict[str, Any], name: str) -> dict[str, Any]:
    """Write papermill's injected values into the `parameters` cell and drop the injected cell.

    A reader who opens the notebook in JupyterLab then sees, and can edit, the values it was
    run with in one place: with the injected cell left in, an edit of the parameters cell
    would be silently overridden by the cell after it.
    """
    injected = _tagged(notebook, "injected-parameters")
    if not injected:
        return notebook
    parameters = _tagged(notebook, "parameters")
    if len(parameters) != 1 or len(injected) != 1:
        raise PublishError(f"{name} needs exactly one 'parameters' and one 'injected-parameters' cell")
    values = _assignments("".join(injected[0]["source"]))
    source, found = set_parameters("".join(parameters[0]["source"]), values)
    if missing := sorted(set(values) - found):
        raise PublishError(f"{name} was run with parameters {missing} that its parameters cell does not define")
    parameters[0]["source"] = source
    notebook["cells"] = [cell for cell in notebook["cells"] if cell is not injected[0]]
    return notebook


def clean(notebook: dict[str, Any], name: str) -> dict[str, Any]:
    """The notebook without papermill's machine-specific metadata, injected cell and widget state, figures at most MAX_WIDTH wide.

    An error output is refused.
    """
    notebook = fold_injected_parameters(json.loads(json.dumps(notebook)), name)  # on a deep copy of plain JSON
    notebook["metadata"].pop("papermill", None)
    notebook["metadata"].pop("widgets", None)  # stale widget state: the progress bars are plain text
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


def _cell_sources(notebook: dict[str, Any]) -> list[tuple[str, str]]:
    """(type, source) of every cell but the parameters cells, whose values may differ from run to run."""
    skipped = {"parameters", "injected-parameters"}
    return [
        (cell["cell_type"], "".join(cell["source"]))
        for cell in notebook["cells"]
        if not skipped & set(cell["metadata"].get("tags", []))
    ]


def check_current(executed: dict[str, Any], committed: dict[str, Any], name: str) -> None:
    """Refuse an executed copy whose text is not the committed notebook's: it would undo later edits.

    A run's copy keeps the markdown and code of the notebook as it was when the run executed it; a
    sweep that resumes an older run, or a run made before an edit, would bring the old text back.
    """
    old, new = _cell_sources(executed), _cell_sources(committed)
    if old == new:
        return
    first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
    kind = (new if first < len(new) else old)[first][0]
    where = f"cell {first + 1} of the cells besides 'parameters' ({kind})"
    raise PublishError(
        f"{name} was executed from another version of the notebook it would replace (first difference: {where}):"
        f" rerun it (a run's notebook: delete its .done.json and rerun the sweep; the report: make report),"
        f" or leave it out with --only"
    )


def publish(sources: list[Path], dest: Path, max_kb: int = MAX_KB) -> list[Path]:
    """Clean every executed notebook in `sources` and write it (atomically) to `dest/<same name>`.

    Each must have been executed from the text it replaces (`check_current`).
    """
    cleaned = {}
    for source in sources:
        notebook = clean(json.loads(source.read_text()), source.name)
        text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
        if len(text.encode()) > max_kb * 1024:
            raise PublishError(
                f"{source.name} is {len(text.encode()) // 1024} KB, above max_kb={max_kb}: embed smaller figures"
            )
        if not (dest / source.name).is_file():
            raise PublishError(
                f"{source.name} does not replace a notebook in {dest}: only executed pipeline notebooks are published"
            )
        check_current(notebook, json.loads((dest / source.name).read_text()), source.name)
        cleaned[dest / source.name] = text
    for target, text in cleaned.items():  # all checked before anything is replaced
        with atomic_path(target) as tmp:
            tmp.write_text(text)
    return list(cleaned)


_BLOCK = re.compile(r"(<!-- report: (?P<name>[A-Za-z0-9_.-]+) -->\n)(?P<body>.*?)(<!-- /report -->)", re.S)


def sync_blocks(text: str, folders: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> str:
    """`text` with every report block replaced by the current content of that file in the first of `folders` holding it."""
    searched = [Path(folders)] if isinstance(folders, (str, os.PathLike)) else [Path(f) for f in folders]

    def body(match: re.Match[str]) -> str:
        source = next((folder / match["name"] for folder in searched if (folder / match["name"]).is_file()), None)
        if source is None:
            where = " or ".join(str(folder / match["name"]) for folder in searched)
            raise FileNotFoundError(
                f"the document shows {match['name']}, but {where} does not exist: run `make report`"
            )
        return match.group(1) + source.read_text() + match.group(4)

    return _BLOCK.sub(body, text)


def artefacts_markdown() -> str:
    """docs/artefacts.md: every artefact of a run, from `Run.layout()` (so the page cannot drift from the code)."""
    run = Run("cifar10", "smoke", 0, root=Path("run"))
    lines = [
        "# The artefacts of a run",
        "",
        "<!-- generated by `make publish` (clxai_utils.tools.publish.artefacts_markdown) from clxai_utils/core/run.py -->",
        "",
        "Every stage writes below its run's folder, `outputs/runs/<dataset>-<profile>-seed<k>/`, and the next",
        "stage reads from there (`clxai_utils.core.run.Run`). Paths are shown for the first loss and method;",
        "the others sit beside them. Tables are CSV; `.pt` files load with `torch.load(..., weights_only=True)`;",
        "every file is written atomically (a stopped run leaves the previous file or none).",
        "",
        "| `Run` accessor | path below the run folder | what it holds |",
        "|---|---|---|",
    ]
    lines += [f"| `{call}` | `{path.as_posix()}` | {doc} |" for call, path, doc in run.layout()]
    lines += ["", "The cross-run report (10_analysis) writes its tables and figures to `outputs/report/`.", ""]
    return "\n".join(lines)


def notebooks_markdown(durations: dict[str, float] | None = None) -> str:
    """The README's notebook table, from `core.notebooks.NOTEBOOKS`, with each notebook's seconds when known."""
    durations = durations or {}
    lines = ["| # | notebook | what it does | seconds |", "|---|---|---|---:|"]
    for nb in NOTEBOOKS:
        seconds = f"{durations[nb.name]:.0f}" if nb.name in durations else ""
        part = " (Part II)" if nb.part == "II" else ""
        lines.append(f"| {nb.number} | [{nb.title}](notebooks/{nb.file}){part} | {nb.summary} | {seconds} |")
    return "\n".join(lines) + "\n"


def executed_durations(notebooks: list[Path]) -> dict[str, float]:
    """Seconds each executed notebook took, from papermill's metadata (before `clean` drops it)."""
    durations = {}
    for path in notebooks:
        if path.is_file():
            meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
            if meta.get("duration") is not None:
                durations[path.stem] = float(meta["duration"])
    return durations


def run_notebooks(run_dir: Path, report_dir: Path) -> list[Path]:
    """The executed notebooks of one run (in `NOTEBOOKS` order) and the report notebook, as the sweep left them."""
    return [run_dir / "notebooks" / f"{name}.ipynb" for name in RUN_NOTEBOOKS] + [
        report_dir / f"{REPORT_NOTEBOOK}.ipynb"
    ]


def write_blocks(documents: list[Path], folders: list[Path], check: bool = False) -> int:
    """Rewrite (or with `check` only compare) the report blocks of `documents`; the number of stale documents."""
    stale = 0
    for document in documents:
        text = document.read_text()
        synced = sync_blocks(text, folders)
        if synced == text:
            continue
        stale += 1
        if check:
            print(f"{document} differs from {', '.join(map(str, folders))}: run make publish", file=sys.stderr)
            continue
        with atomic_path(document) as tmp:
            tmp.write_text(synced)
        print(f"{document}: {len(_BLOCK.findall(text))} block(s) written from {', '.join(map(str, folders))}")
    return stale


def main(argv: list[str] | None = None) -> int:
    """Publish a run's executed notebooks into notebooks/ and its report into the README and docs/results.md."""
    parser = argparse.ArgumentParser(prog="python -m clxai_utils.tools.publish", description=main.__doc__)
    parser.add_argument("--run", type=Path, required=True, help="the run folder, e.g. outputs/runs/cifar10-quick-seed0")
    parser.add_argument("--report", type=Path, default=report_dir(), help="the report folder (default outputs/report)")
    parser.add_argument(
        "--to", type=Path, default=repo_root() / "notebooks", help="folder of the notebooks they replace"
    )
    parser.add_argument(
        "--documents",
        type=Path,
        nargs="+",
        default=[repo_root() / "README.md", repo_root() / "docs" / "results.md"],
        help="Markdown files whose <!-- report: NAME --> blocks are rewritten",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NOTEBOOK",
        help=f"publish only these notebooks (names without .ipynb, of {', '.join(PUBLISHED)}); default all",
    )
    parser.add_argument("--max-kb", type=int, default=MAX_KB, help="largest notebook file accepted")
    parser.add_argument("--gallery", type=Path, default=None, help="copy the run's gallery figure (05) to this file")
    parser.add_argument(
        "--check", action="store_true", help="only say whether the documents' blocks are current (exit 1 if not)"
    )
    args = parser.parse_args(argv)
    folders = [args.report, args.run / "results"]
    try:
        only = check_choices("--only", args.only or PUBLISHED, PUBLISHED)
    except ValueError as error:
        parser.error(str(error))
    try:
        if args.check:
            return int(write_blocks(args.documents, folders, check=True) > 0)
        sources = run_notebooks(args.run, args.report)
        chosen = [path for path in sources if path.stem in only]
        with atomic_path(args.report / "notebooks.md") as tmp:  # the README's notebook table, with seconds
            tmp.write_text(notebooks_markdown(executed_durations(sources)))
        written = publish(chosen, args.to, args.max_kb)
        write_blocks(args.documents, folders)
        with atomic_path(repo_root() / "docs" / "artefacts.md") as tmp:
            tmp.write_text(artefacts_markdown())
        if args.gallery is not None:
            shutil.copyfile(args.run / "figures" / NOTEBOOK["explanations"].name / "gallery.png", args.gallery)
    except (PublishError, FileNotFoundError) as error:
        parser.error(str(error))
    for path in written:
        print(f"published {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
