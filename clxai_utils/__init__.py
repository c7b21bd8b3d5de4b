"""clxai_utils: the code the numbered notebooks run, one subpackage per stage of the pipeline.

    data -> train -> explain -> evaluate -> analysis, driven by pipeline (sweeps), on core

Every stage function takes a `core.run.Run` (dataset, profile, seed) first; the run knows
where each artefact lives, and the next stage reads what the previous one wrote there.

| notebook               | stage function                                   | reads -> writes (below the run folder)        |
|------------------------|--------------------------------------------------|-----------------------------------------------|
| 00_data                | `data.prepare.prepare_data(run, data_source)`    | data source -> data/manifest.json              |
| 01/02/03_train_<loss>  | `train.trainer.run_training(run, loss)`          | manifest -> models/<loss>/                     |
| 04_linear_probe        | `train.probe.probe_and_evaluate(run, losses)`    | models -> models/<loss>/probe.pt, results/accuracy.csv |
| 05_explanations        | `explain.store.run_explanations(run, losses)`    | models -> explanations/<loss>/<method>[_mosaics].pt |
| 06_metrics             | `evaluate.facets.evaluate_facets(run, losses)`   | explanations -> results/facets.csv, .json, pf_curves.csv |
| 07_analysis            | `analysis.tables.load_results()` and the report  | every run's results -> outputs/report/         |
| 08_neuron_labels       | `neurons.units.run_activations(run, loss)`, then `neurons.planted.run_trials` and `neurons.comparison.unit_table` | models -> neurons/<loss>/, results/neuron_*.csv |
| 09_accuracy_confound   | `evaluate.snapshots.evaluate_snapshots(run, losses)` | snapshots -> results/snapshot_{facets,accuracy}.csv |

Subpackages:

* `core`: the run and its paths, profiles (`config`), registries of losses, methods and
  metrics, validation, seeding, numeric precision (`precision`), atomic artefacts, progress bars;
* `data`: the data sets as specifications (`datasets`: cifar10, imagenet_s50, any image
  folder), sources, archives, decoding and the image cache (`sources`), the evaluation crop
  (`geometry`), the ImageNet-S50 layout and masks (`imagenet_s`), object masks (`masks`) and
  CIFAR-10's real photographs with masks (`realmask`), training images streamed from disk
  (`stream`, `throughput`), generated test data (`fixtures`), the run's subsets and manifest
  (`prepare`), batched augmentations (`augment`);
* `train`: networks (`models`), SupCon and triplet losses (`losses`), the resumable
  trainer (`trainer`), linear probes and accuracy (`probe`), several processes per run
  (`distributed`: the gather with gradients and the global losses; `launch`: the entry
  point torchrun or submitit starts);
* `explain`: Grad-CAM and Eigen-CAM (`cams`), stored maps (`store`), 2x2 mosaics (`mosaics`);
* `evaluate`: the batched metrics (`metrics`), the per-image facets table (`facets`), every
  training snapshot scored the same way (`snapshots`);
* `analysis`: Table 4 (`tables`), paired tests (`stats`), the paper's claims and the seed
  policy (`claims`), the losses at matched accuracy (`confound`), coherence on mosaics against
  real photographs (`coherence`), the report files (`report`);
* `neurons`: labelling the units of the trained networks (the CSP paper): unit
  activations, the scorers, INVERT, interpretability and faithfulness scores, open_clip
  encoders, the vocabulary, the planted-concept experiment (`planted`) and the comparison
  of the losses' units (`comparison`);
* `pipeline`: sweeps over seeds with papermill (`plan`, `execute`, `sweep`), on Slurm
  through submitit (`cluster`), publishing executed notebooks (`publish`), this machine's
  speed per precision (`benchmark`);
* `figures`: every figure the notebooks draw.
"""

#: Each pipeline notebook and the stage function it runs (dotted path below clxai_utils).
NOTEBOOK_STAGES: dict[str, str] = {
    "00_data": "data.prepare.prepare_data",
    "01_train_ce": "train.trainer.run_training",
    "02_train_supcon": "train.trainer.run_training",
    "03_train_triplet": "train.trainer.run_training",
    "04_linear_probe": "train.probe.probe_and_evaluate",
    "05_explanations": "explain.store.run_explanations",
    "06_metrics": "evaluate.facets.evaluate_facets",
    "07_analysis": "analysis.tables.load_results",
    "08_neuron_labels": "neurons.units.run_activations",
    "09_accuracy_confound": "evaluate.snapshots.evaluate_snapshots",
}
