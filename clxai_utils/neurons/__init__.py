"""Neuron labelling (notebook 11): Contrastive Semantic Projection and its baselines.

Second seed paper: Berend, Dreyer, Bouanani, Lapuschkin, Samek, "Contrastive Semantic
Projection: Faithful Neuron Labeling with Contrastive Examples" (arXiv 2604.22477; the
authors' code: github.com/oussamabouanani/neurolens). Formulas and defaults:
docs/method.md, "Part II: neuron labels".

    model -> units (activations, probe split, selection) -> scorers / invert -> labels
    images, labels -> encoders (open_clip or a stand-in) -> embeddings ----^
    labels -> faithfulness (simulation correlation, planted copies); examples -> interpretability

Modules:

* `units`: units = channels of a backbone stage (spatial mean; `layer4` by default),
  the batched activation pass and its stored artefact (`run_activations`), the 70/10/20
  probe split, unit selection and positives;
* `scorers`: the text scorers with one interface, `scorer(activations, image_embeddings,
  text_embeddings) -> (units, labels)`: `SemanticLens`, `CSP` (gamma in [0, 1]),
  `CLIPDissect` (soft-WPMI); CSP's contrastive set and projection as functions;
* `invert`: `Invert`, Boolean concept formulas by beam search scored by AUROC, and the
  vectorised `auroc`;
* `interpretability`: `clarity` and `polysemanticity` of a unit's examples;
* `faithfulness`: `simulation_correlation` on held-out images and `planted_copy_scores`
  (the CoSy analogue, AUC and MAD);
* `encoders`: `OpenClipEncoder` (a real open_clip model: pretrained tag, local weights file,
  or untrained), CSP's text templates, and `ConceptMeanStandIn`, an offline stand-in space
  that is not CLIP;
* `vocabulary`: the candidate labels (`configs/neuron_vocabulary.txt` or any other file).

The paper's vision-language-model stage (candidate labels from grids of positives and
contrastive examples) does not run on this repository's machines: candidate labels from
such a source can be merged into the vocabulary with `vocabulary.clean_labels`.
"""
