"""clxai_utils: the code the numbered notebooks run, one subpackage per stage of the pipeline.

    data -> train -> explain -> evaluate -> analysis   (and neurons, the second paper)
    all on core; tools (sweeps, Slurm, launching, publishing, benchmarks) drives them

Every stage function takes a `core.run.Run` (dataset, profile, seed) first; the run knows
where each artefact lives, and the next stage reads what the previous one wrote there. The
notebooks, in the order they run, with the stage function each calls and what it reads and
writes, are listed once, in `core.notebooks.NOTEBOOKS`.

Subpackages, from the bottom up (a package imports only those before it; `tools` may import
everything and nothing imports `tools`; `tests/test_architecture.py` enforces it):

* `core`: the run and its paths, profiles (`config`), registries of losses, methods and
  metrics, the notebook list, validation, seeding, numeric precision, atomic artefacts,
  progress bars, CPU threads;
* `data`: the data sets as specifications (`datasets`), sources and decoding (`sources`), the
  evaluation crop (`geometry`), ImageNet-S50 (`imagenet_s`), object masks (`masks`, `realmask`),
  streamed training images (`stream`), the run's subsets and manifest (`prepare`), batched
  augmentations (`augment`);
* `analysis`: Table 4 (`tables`), paired tests (`stats`), the paper's claims and the seed
  policy (`claims`), the losses at matched accuracy (`confound`), coherence on mosaics against
  real photographs (`coherence`), the report files (`report`);
* `train`: networks (`models`), SupCon and triplet losses (`losses`), the training loop
  (`trainer`), its files (`checkpoints`), several processes per run (`distributed`: the
  gather and the global losses; `processes`: starting them; `worker`: what each runs),
  linear probes and accuracy (`probe`);
* `explain`: Grad-CAM and Eigen-CAM (`cams`), stored maps (`store`), 2x2 mosaics (`mosaics`);
* `neurons`: labelling the units of the trained networks (the CSP paper);
* `evaluate`: the batched metrics (`metrics`), the scoring engine (`scoring`), stage 06's
  per-image table (`facets`), every training snapshot scored the same way (`snapshots`),
  the bf16 diagnostic (`diagnostics`);
* `figures`: every figure the notebooks draw;
* `tools`: the machinery: sweeps over seeds with papermill (`plan`, `execute`, `sweep`), Slurm
  through submitit (`cluster`, `launch`), notebook kernels (`kernel`), publishing executed
  notebooks and the result blocks of the docs (`publish`), speed measurements (`benchmark`,
  `throughput`).
"""
