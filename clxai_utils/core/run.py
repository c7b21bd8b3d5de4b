"""A run: one (dataset, profile, seed) and the folder that holds every artefact it writes.

Every stage function takes a `Run` first, and asks it where to read and write, so the
layout below is spelled here and nowhere else. The default root is
`outputs/runs/<dataset>-<profile>-seed<k>/` whether a notebook runs in JupyterLab, under
papermill or in a sweep, so runs of different profiles or seeds never collide and
10_analysis finds all of them. `Run.layout()` lists every artefact with an example path;
docs/artefacts.md is generated from it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from clxai_utils.core.config import DATASETS, DatasetProfile, load_profile
from clxai_utils.core.paths import display_path, runs_root
from clxai_utils.core.registry import LOSSES, METHODS
from clxai_utils.core.validate import check_choice, check_seed

#: The kinds of stored explanations: the test images; one 2x2 mosaic per test image (data sets whose test images
#: carry no masks, with 4+ classes); the external images with masks (CIFAR-10's real photographs, `mask_source`).
EXPLANATION_KINDS: tuple[str, ...] = ("test", "mosaics", "masks")
#: The result tables of a run (in `<root>/results/`), by kind; 10_analysis gathers them from every run.
RESULT_TABLES: dict[str, str] = {
    "accuracy": "accuracy.csv",
    "facets": "facets.csv",
    "pf_curves": "pf_curves.csv",
    "snapshots": "snapshot_facets.csv",
    "coherence_masks": "coherence_masks.csv",
    "ablation": "protocol_ablation.csv",
    "faithfulness": "faithfulness.csv",
    "faithfulness_curves": "faithfulness_curves.csv",
    "randomisation": "randomisation.csv",
    "random_logit": "random_logit.csv",
}


@dataclass(frozen=True)
class Run:
    """One (dataset, profile, seed), validated on creation, with every artefact path below `root`."""

    dataset: str
    profile: str
    seed: int
    root: Path = field(default=None, compare=False)  # type: ignore[assignment]  # filled in by __post_init__

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        object.__setattr__(self, "seed", check_seed(self.seed))
        load_profile(self.profile).for_dataset(self.dataset)  # unknown profile or uncovered dataset: an error now
        root = runs_root() / self.id if self.root is None else Path(self.root)
        object.__setattr__(self, "root", root.resolve())

    @property
    def id(self) -> str:
        """The run id, e.g. `cifar10-quick-seed0`: also the name of its folder."""
        return f"{self.dataset}-{self.profile}-seed{self.seed}"

    @functools.cached_property
    def settings(self) -> DatasetProfile:
        """The profile's settings for this run's data set."""
        return load_profile(self.profile).for_dataset(self.dataset)

    def __str__(self) -> str:
        return f"{self.id} ({display_path(self.root)})"

    # ------------------------------------------------------------------ artefacts, by stage

    @property
    def manifest_path(self) -> Path:
        """The data manifest 00_data writes and every later stage reads."""
        return self.root / "data" / "manifest.json"

    def model_dir(self, loss: str) -> Path:
        """Checkpoint, history, final model and (SupCon/TL) probe of one loss."""
        return self.root / "models" / check_choice("loss", loss, LOSSES)

    @property
    def accuracy_path(self) -> Path:
        """The accuracy table of 04_linear_probe (a JSON copy lies beside it)."""
        return self.root / "results" / RESULT_TABLES["accuracy"]

    def explanation_path(self, loss: str, method: str, kind: str = "test") -> Path:
        """Stored maps of one (model, method, kind)."""
        check_choice("method", method, METHODS)
        suffix = "" if check_choice("kind", kind, EXPLANATION_KINDS) == "test" else f"_{kind}"
        return self.root / "explanations" / check_choice("loss", loss, LOSSES) / f"{method}{suffix}.pt"

    @property
    def facets_paths(self) -> dict[str, Path]:
        """The three files of 06_metrics: the per-image table, its JSON sidecar, the mean PF curves."""
        table = self.root / "results" / RESULT_TABLES["facets"]
        return {
            "table": table,
            "sidecar": table.with_suffix(".json"),
            "curves": table.parent / RESULT_TABLES["pf_curves"],
        }

    @property
    def coherence_masks_path(self) -> Path:
        """06's coherence on the external images with masks (CIFAR-10's real photographs), when they were given."""
        return self.root / "results" / RESULT_TABLES["coherence_masks"]

    @property
    def snapshot_paths(self) -> dict[str, Path]:
        """The files of 07: the per-image facets of every snapshot, their accuracies, the JSON sidecar."""
        table = self.root / "results" / RESULT_TABLES["snapshots"]
        return {
            "table": table,
            "accuracy": table.parent / "snapshot_accuracy.csv",
            "sidecar": table.with_suffix(".json"),
        }

    @property
    def ablation_paths(self) -> dict[str, Path]:
        """The files of 08_protocol: the per-image facets under every protocol and their JSON sidecar."""
        table = self.root / "results" / RESULT_TABLES["ablation"]
        return {"table": table, "sidecar": table.with_suffix(".json")}

    @property
    def faithfulness_paths(self) -> dict[str, Path]:
        """The files of the faithfulness stage: per-image measures, mean curves, sanity checks, cascade maps, sidecar."""
        results = self.root / "results"
        table = results / RESULT_TABLES["faithfulness"]
        return {
            "table": table,
            "curves": results / RESULT_TABLES["faithfulness_curves"],
            "randomisation": results / RESULT_TABLES["randomisation"],
            "random_logit": results / RESULT_TABLES["random_logit"],
            "maps": results / "randomisation_maps.pt",
            "sidecar": table.with_suffix(".json"),
        }

    def snapshot_block_path(self, loss: str, epoch: int) -> Path:
        """One snapshot's scored rows (a rerun reuses a block whose weights and protocol still match)."""
        return self.root / "results" / "snapshots" / f"{check_choice('loss', loss, LOSSES)}-epoch{epoch:04d}.csv"

    def neuron_activations_path(self, loss: str, layer: str) -> Path:
        """Activations of every unit of one layer on the test images (11); `neurons.units` checks the layer."""
        if not (isinstance(layer, str) and layer.isidentifier()):
            raise ValueError(f"layer must be a module name such as 'layer4', got {layer!r}")
        return self.root / "neurons" / check_choice("loss", loss, LOSSES) / f"activations_{layer}.pt"

    @property
    def neuron_paths(self) -> dict[str, Path]:
        """The tables of 10: planted-concept trials and recovery, units, loss tests, summaries, CLIP labels.

        The Markdown summaries feed docs/results.md; the text labels with their simulation
        correlation exist only when a CLIP model is given.
        """
        names = ("planted_trials", "planted", "units", "loss_tests", "clip_labels")
        paths = {name: self.root / "results" / f"neuron_{name}.csv" for name in names}
        paths |= {f"{name}_md": self.root / "results" / f"neuron_{name}.md" for name in ("planted", "units")}
        return paths

    def figures_dir(self, notebook: str) -> Path:
        """Where a notebook saves its figures, e.g. `run.figures_dir("00_data")`."""
        return self.root / "figures" / notebook

    @property
    def notebooks_dir(self) -> Path:
        """Executed notebooks, logs and completion markers of a sweep."""
        return self.root / "notebooks"

    def layout(self) -> list[tuple[str, Path, str]]:
        """Every artefact accessor with an example path (first loss, method and kind) and its docstring's first line.

        `docs/artefacts.md` is generated from this (`clxai_utils.tools.publish`), so the documented
        layout is the one the code uses.
        """
        loss, method = LOSSES[0], METHODS[0]
        examples: list[tuple[str, Path | dict[str, Path]]] = [
            ("manifest_path", self.manifest_path),
            (f"model_dir({loss!r})", self.model_dir(loss)),
            ("accuracy_path", self.accuracy_path),
            *(
                (f"explanation_path({loss!r}, {method!r}, {k!r})", self.explanation_path(loss, method, k))
                for k in EXPLANATION_KINDS
            ),
            ("facets_paths", self.facets_paths),
            ("coherence_masks_path", self.coherence_masks_path),
            ("snapshot_paths", self.snapshot_paths),
            ("ablation_paths", self.ablation_paths),
            ("faithfulness_paths", self.faithfulness_paths),
            (f"snapshot_block_path({loss!r}, 5)", self.snapshot_block_path(loss, 5)),
            (f"neuron_activations_path({loss!r}, 'layer4')", self.neuron_activations_path(loss, "layer4")),
            ("neuron_paths", self.neuron_paths),
            ("figures_dir('00_data')", self.figures_dir("00_data")),
            ("notebooks_dir", self.notebooks_dir),
        ]
        rows = []
        for call, value in examples:
            doc = (getattr(Run, call.split("(")[0]).__doc__ or "").strip().split("\n")[0]
            paths = value.items() if isinstance(value, dict) else [("", value)]
            for key, path in paths:
                rows.append((f"{call}[{key!r}]" if key else call, path.relative_to(self.root), doc))
        return rows
