"""The numbered notebooks in the order they run: the one list the sweep, publishing, the README table and the links read.

Part I reproduces the feature-attribution paper (data, one training notebook per loss, the
probe, the maps, the metrics, the snapshots at matched accuracy, then the analysis that reads
every run); Part II is the second paper's neuron labelling, which reads only the trained
models. A notebook's number is its place in this list, so renumbering means editing it here
(and renaming the file); `tests/core/test_notebooks.py` checks the files, their footer links
and the sweep's plan against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Notebook:
    """One numbered notebook: its file stem, what it does, the package call it makes, what it reads and writes.

    `scope` "run" runs once per (dataset, profile, seed) run; "report" once over every run.
    """

    key: str
    name: str
    title: str
    summary: str
    stage: str
    reads: str
    writes: str
    part: Literal["I", "II"] = "I"
    scope: Literal["run", "report"] = "run"

    @property
    def file(self) -> str:
        return f"{self.name}.ipynb"

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0]


NOTEBOOKS: tuple[Notebook, ...] = (
    Notebook(
        "data",
        "00_data",
        "Data",
        "loads and checks the data set and its object masks, draws the profile's subsets",
        "data.prepare.prepare_data",
        "the data source",
        "data/manifest.json",
    ),
    Notebook(
        "train_ce",
        "01_train_ce",
        "Training with cross-entropy",
        "trains backbone + linear head with cross-entropy",
        "train.trainer.run_training",
        "the manifest",
        "models/ce/",
    ),
    Notebook(
        "train_supcon",
        "02_train_supcon",
        "Training with SupCon",
        "trains backbone + projection head with the supervised contrastive loss",
        "train.trainer.run_training",
        "the manifest",
        "models/supcon/",
    ),
    Notebook(
        "train_triplet",
        "03_train_triplet",
        "Training with the triplet loss",
        "trains backbone + projection head with the triplet loss (semi-hard mining)",
        "train.trainer.run_training",
        "the manifest",
        "models/triplet/",
    ),
    Notebook(
        "probe",
        "04_linear_probe",
        "Linear probe",
        "fits linear probes for SupCon and TL, measures every model's test accuracy",
        "train.probe.probe_and_evaluate",
        "models/",
        "models/<loss>/probe.pt, results/accuracy.csv",
    ),
    Notebook(
        "explanations",
        "05_explanations",
        "Saliency maps",
        "Grad-CAM and Eigen-CAM by hand, then every model's maps, stored once",
        "explain.store.run_explanations",
        "models/",
        "explanations/<loss>/<method>[_mosaics|_masks].pt",
    ),
    Notebook(
        "metrics",
        "06_metrics",
        "Metrics",
        "the five facets of every stored map, one row per loss, method and image",
        "evaluate.facets.evaluate_facets",
        "explanations/",
        "results/facets.csv (+ facets.json, pf_curves.csv, coherence_masks.csv)",
    ),
    Notebook(
        "accuracy_confound",
        "07_accuracy_confound",
        "Facets at matched accuracy",
        "every training snapshot explained and scored like the final models",
        "evaluate.snapshots.evaluate_snapshots",
        "models/<loss>/snapshots/",
        "results/snapshot_{facets,accuracy}.csv",
    ),
    Notebook(
        "protocol",
        "08_protocol",
        "The authors' protocol",
        "the same maps scored under the corrected protocol, the authors' and each of their deviations alone",
        "evaluate.ablation.run_ablation",
        "results/facets.csv, explanations/",
        "results/protocol_ablation.{csv,json}",
    ),
    Notebook(
        "faithfulness",
        "09_faithfulness",
        "Faithfulness beyond Pixel Flipping",
        "the maps scored on the logit, by insertion, ROAD and F-Fidelity; model and class randomisation checks",
        "evaluate.faithfulness_stage.run_faithfulness",
        "explanations/, results/facets.csv",
        "results/faithfulness*.csv, randomisation.csv, random_logit.csv, faithfulness.json",
    ),
    Notebook(
        "analysis",
        "10_analysis",
        "Analysis",
        "Table 4, paired tests with Holm correction, the claims and their verdicts, over every run",
        "analysis.tables.load_results",
        "every run's results/",
        "outputs/report/",
        scope="report",
    ),
    Notebook(
        "neuron_labels",
        "11_neuron_labels",
        "Neuron labels",
        "labels the networks' units with text (Contrastive Semantic Projection)",
        "neurons.units.run_activations",
        "models/",
        "neurons/<loss>/, results/neuron_*.csv",
        part="II",
    ),
)

NOTEBOOK: dict[str, Notebook] = {nb.key: nb for nb in NOTEBOOKS}
#: The notebooks that run once per run, in order (the sweep's steps).
RUN_NOTEBOOKS: tuple[str, ...] = tuple(nb.name for nb in NOTEBOOKS if nb.scope == "run")
#: The notebook that reads every run (the sweep's last step, `make report`).
REPORT_NOTEBOOK: str = next(nb.name for nb in NOTEBOOKS if nb.scope == "report")


def footer(name: str) -> str:
    """The navigation line a notebook ends with: links to the notebooks before and after it in `NOTEBOOKS`."""
    names = [nb.name for nb in NOTEBOOKS]
    i = names.index(name)
    links = []
    if i > 0:
        before = NOTEBOOKS[i - 1]
        links.append(f"[← {before.number} · {before.title}]({before.file})")
    if i + 1 < len(NOTEBOOKS):
        after = NOTEBOOKS[i + 1]
        links.append(f"[{after.number} · {after.title} →]({after.file})")
    return " · ".join(links)
