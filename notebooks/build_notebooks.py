"""Write the teaching notebooks of ``notebooks/`` from the cell sources below (no outputs).

The notebooks are generated so they can be reviewed as code: edit the cells here, then run

    python notebooks/build_notebooks.py            # (re)write the .ipynb files
    python notebooks/build_notebooks.py --check    # exit 1 if a committed notebook differs

Each notebook has a parameter cell (tagged ``parameters``) with ``QUICK = False``; the tests set the
environment variable ``TFFD_QUICK=1`` (read in that cell) to run a small version on a CPU in about a
minute. Notebooks only import ``tffd_viz``; every figure is one of :mod:`tffd_viz.plots`, the app's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

Cell = tuple[str, str]  # ("md" | "code" | "params", source)

PARAMETERS = '''
import os

# Parameters. QUICK = True runs a small version (fewer images, epochs and steps) in about a minute on a
# CPU; the tests switch it on with the environment variable TFFD_QUICK=1. Keep False for the full version.
QUICK = False
QUICK = QUICK or os.environ.get("TFFD_QUICK") == "1"
'''

PAIR_PARAMETERS = '''
# The shipped pair to compare: "digits" (ResNet-8, embedded data), "cifar10" or "cifar100" (ResNet-20: need
# those checkpoints in checkpoints/ and the CIFAR files under DATA_ROOT, else $TFFD_DATA, else ./data).
PAIR = os.environ.get("TFFD_PAIR", "digits")
DATA_ROOT = None
'''

SETUP = '''
import sys
from pathlib import Path

REPO = Path.cwd().resolve().parent if Path.cwd().name == "notebooks" else Path.cwd().resolve()
if str(REPO) not in sys.path:  # only needed when tffd_viz is not pip-installed
    sys.path.insert(0, str(REPO))
CKPT = REPO / "checkpoints"

import pandas as pd
import plotly.io as pio
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

from tffd_viz import plots

if QUICK:
    pio.renderers.default = "json"  # no browser and no network needed
torch.manual_seed(0)
torch.set_printoptions(precision=4, sci_mode=False, linewidth=110)
'''

QUICK_NOTE = '''
if QUICK:
    print("QUICK mode: a small version (fewer images, epochs and steps) for the tests. Figures are not rendered "
          "in QUICK mode (each is emitted as plotly JSON): set QUICK = False to see them.")
'''

# --------------------------------------------------------------------------------------------------
# 01: Tf-FD in ten minutes
# --------------------------------------------------------------------------------------------------

NB01: list[Cell] = [
    ("md", '''
# Tf-FD in ten minutes

**Teacher-free Feature Distillation** (Tf-FD, Lujun Li, ECCV 2022) adds two feature terms to the
cross-entropy of an ordinary training run, without any teacher network:

* **intra-layer**: inside one layer, the less salient half of the channels learns to mimic the more
  salient half, channel for channel;
* **inter-layer**: a shallow layer learns to mimic a deeper layer (the deeper one is detached and acts
  as the teacher).

This notebook takes both terms apart on one batch of images, step by step, with small printed
tensors, then trains a small network for a few epochs and follows the terms. Every computation is a
`tffd_viz` function and every figure is one the app draws (`tffd_viz.plots`). With `QUICK = True` (the
tests) the figures are not rendered and the training runs are too short to learn; the cells that
draw conclusions then say so instead of reading the numbers.
'''),
    ("params", PARAMETERS),
    ("code", SETUP + QUICK_NOTE + '''
from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.losses import (
    PAPER_LAMBDA_INTER,
    PAPER_LAMBDA_INTRA,
    TfFD,
    channel_saliency,
    inter_fd,
    intra_fd,
    salient_order,
)
from tffd_viz.models import create_model, extract_taps
from tffd_viz.similarity import inter_layer_alignment, paired_channel_cosine

N = 64 if QUICK else 256
'''),
    ("md", '''
## 1. A model and a batch

The shipped baseline ResNet-8 trained on the scikit-learn digits (8x8 digits upsampled to 32x32, one
channel), or an untrained one when the checkpoint is not there. Tf-FD works on the outputs of the
network's **stages** (`layer1`, `layer2`, `layer3` for the CIFAR ResNets): `extract_taps` returns
them from one forward pass.
'''),
    ("code", '''
path = CKPT / "digits_resnet8_baseline_s0.safetensors"
if path.is_file():
    model, card = load_checkpoint(path)
    print(f"loaded {path.name}: {card['arch']}, test top-1 {card['final_acc']:.2f} %")
else:
    model = create_model("resnet8", num_classes=10, in_chans=1).eval()
    print("no shipped checkpoint found: using an untrained resnet8")

images, labels = sample_batch("digits", split="test", n=N, seed=0)
with torch.no_grad():
    feats = extract_taps(model, images)  # stage name -> (N, C, H, W), shallow to deep
for name, f in feats.items():
    print(f"{name}: {tuple(f.shape)}")
'''),
    ("md", '''
## 2. Saliency of a channel

`channel_saliency` divides each image's map of a channel by its L2 norm over the positions, then
averages over images and positions. For a post-ReLU map (no negative values) this is largest for a
channel that fires evenly over the whole map and smallest for one that fires at a single position
(and 0 for one that never fires).
'''),
    ("code", '''
f = feats["layer1"]
sal = channel_saliency(f)
print(f"saliency of the {f.shape[1]} channels of layer1:")
print(sal)

# the same number by hand for channel 0: normalise each image's map, then average
by_hand = F.normalize(f[:, 0].flatten(1), dim=1).mean()
print(f"channel 0 by hand: {float(by_hand):.6f}   channel_saliency: {float(sal[0]):.6f}")
'''),
    ("code", '''
plots.saliency_bars_figure({"A · baseline": sal}, tap="layer1").show()
'''),
    ("md", '''
## 3. Sorting, and the two halves

`salient_order` sorts the channels by descending saliency (ties keep the lower index first). With
`k = C // 2` the first `k` are the **salient** half and the last `k` the **redundant** half; they are
paired in order: the most salient channel with the first channel of the bottom half, and so on (for
an odd `C` the middle channel is left out).
'''),
    ("code", '''
order = salient_order(f)
C = f.shape[1]
k = C // 2
salient, redundant = order[:k], order[C - k:]
print("channels by saliency:", order.tolist())
print("salient half:        ", salient.tolist())
print("redundant half:      ", redundant.tolist())
print("pairs (salient, redundant):", list(zip(salient.tolist(), redundant.tolist())))
'''),
    ("code", '''
# one image's maps: each salient channel above the redundant channel it is paired with
plots.paired_maps_figure(f[0], order, max_pairs=8).show()
'''),
    ("md", '''
## 4. The intra-layer term

The term is the mean squared difference between the redundant half and the salient half, pair by
pair. In the reference implementation both halves receive gradient (the salient half is not
detached). The cosine of each pair shows how alike the paired channels are.
'''),
    ("code", '''
ordered = f[:, order]  # channels in saliency order
by_hand = F.mse_loss(ordered[:, C - k:], ordered[:, :k])
print(f"intra_fd(layer1) = {float(intra_fd(f)):.6f}   by hand = {float(by_hand):.6f}")

pair_cos = paired_channel_cosine(f, order)
print("cosine of each pair:", pair_cos)
plots.paired_similarity_figure({"A · baseline": pair_cos}, tap="layer1").show()
'''),
    ("md", '''
## 5. The inter-layer term: pooling and channel cropping

A shallow stage has larger maps and fewer channels than a deep one. `inter_fd` average-pools the
larger map down to the smaller size, keeps the first `min(C_shallow, C_deep)` channels of both and
takes the mean squared difference, with the deep side detached (it is the teacher).
'''),
    ("code", '''
shallow, deep = feats["layer1"], feats["layer3"]
size = (min(shallow.shape[2], deep.shape[2]), min(shallow.shape[3], deep.shape[3]))
pooled = F.adaptive_avg_pool2d(shallow, size)
m = min(shallow.shape[1], deep.shape[1])
print(f"shallow {tuple(shallow.shape)} -> pooled {tuple(pooled.shape)}; deep {tuple(deep.shape)}; "
      f"the first {m} channels are compared")
print("image 0, channel 0, pooled shallow map (top-left 4x4):")
print(pooled[0, 0, :4, :4])
print("image 0, channel 0, deep map (top-left 4x4):")
print(deep[0, 0, :4, :4])

by_hand = F.mse_loss(pooled[:, :m], deep[:, :m])
print(f"inter_fd(layer1, layer3) = {float(inter_fd(shallow, deep)):.6f}   by hand = {float(by_hand):.6f}")
'''),
    ("code", '''
# per channel: cosine between the pooled shallow channel c and the deep channel c
taps = list(feats)
alignment = {f"{a}->{b}": inter_layer_alignment(feats[a], feats[b])
             for i, a in enumerate(taps) for b in taps[i + 1:]}
plots.alignment_figure({"A · baseline": alignment}).show()
'''),
    ("md", '''
## 6. All the terms at once

`TfFD` computes every intra term (one per stage) and every inter term (one per pair of stages) and
weighs them: `total = λ_intra · mean(intra terms) + λ_inter · mean(inter terms)` with the paper's
`λ_intra = 8e-4`, `λ_inter = 5e-4`. Training minimises `CE + warmup_weight(epoch, warmup) · total`.
'''),
    ("code", '''
out = TfFD()(feats)
print("intra:", {k: round(float(v), 4) for k, v in out.intra.items()})
print("inter:", {k: round(float(v), 4) for k, v in out.inter.items()})
total = (PAPER_LAMBDA_INTRA * torch.stack(list(out.intra.values())).mean()
         + PAPER_LAMBDA_INTER * torch.stack(list(out.inter.values())).mean())
print(f"TfFD total = {float(out.total):.6g}   by hand = {float(total):.6g}")
plots.terms_bar_figure({"A · baseline": {"intra": out.intra, "inter": out.inter}}, log_y=True).show()
'''),
    ("md", '''
### The per-family mean vs the circulating snippet's sum

The paper's objective (and `tffd_viz`) **averages** each family over its terms. The "core code"
snippet that circulates with the paper **sums** them (three intra terms and three inter terms on a
three-stage network), and weighs the inter sum by `λ_intra` instead of `λ_inter`. At the same
lambdas the per-family mean trained here is therefore 3x weaker than the snippet's sum: a lambda
tuned with the snippet corresponds to 3x that lambda in `tffd_viz` (`reduction="sum"` gives the
summed variant).
'''),
    ("code", '''
mean_total = TfFD(reduction="mean")(feats).total
sum_total = TfFD(reduction="sum")(feats).total
snippet_total = PAPER_LAMBDA_INTRA * (torch.stack(list(out.intra.values())).sum()
                                      + torch.stack(list(out.inter.values())).sum())  # λ_intra on both sums
print(f"{len(out.intra)} intra terms, {len(out.inter)} inter terms")
print(f"mean per family (tffd_viz, the paper): {float(mean_total):.6g}")
print(f"sum per family (reduction='sum'):      {float(sum_total):.6g} = "
      f"{float(sum_total / mean_total):.3f} x the mean")
print(f"the snippet (sums, λ_intra on both):   {float(snippet_total):.6g} = "
      f"{float(snippet_total / mean_total):.3f} x the mean")
'''),
    ("md", '''
## 7. A short training

Three ResNet-8 on digits from the same seed, for a few epochs with `tffd_viz.train` (the loop of
`tffd-viz train --recipe digits`): a **baseline** (cross-entropy only; its Tf-FD terms are still
computed and logged), Tf-FD with the **paper's lambdas**, and Tf-FD with a **large lambda** (0.5 for
both families), all without warm-up. Each epoch's history row holds the mean of every term over the
epoch's batches. In QUICK mode the runs see 128 training images for 2 epochs, too little to leave
chance; the conclusion cell below then says so instead of reading the numbers.
'''),
    ("code", '''
from tffd_viz.train import config_from_recipe, train

EPOCHS = 2 if QUICK else 6
LARGE = 0.5
common = dict(epochs=EPOCHS, warmup=0.0, out=None, quiet=True, probe_size=32 if QUICK else 256,
              limit_train=128 if QUICK else None)
settings = {
    "baseline": dict(method="baseline"),
    "Tf-FD, paper λ": dict(method="tffd", lambda_intra=PAPER_LAMBDA_INTRA, lambda_inter=PAPER_LAMBDA_INTER),
    f"Tf-FD, λ = {LARGE:g}": dict(method="tffd", lambda_intra=LARGE, lambda_inter=LARGE),
}
models, runs = {}, {}
for name, setting in settings.items():
    models[name], runs[name] = train(config_from_recipe("digits", **setting, **common))
    print(f"{name}: test top-1 after {EPOCHS} epochs = {runs[name]['final_acc']:.2f} %")
'''),
    ("code", '''
# one line per family (the mean over its stages or pairs) and run: 6 lines in the terms panel instead of
# 18, with short names; the per-stage values are in the table below
SHORT = dict(zip(runs, ["baseline", "paper λ", f"λ = {LARGE:g}"]))


def family_means(history):
    """Each epoch's row with its intra and inter terms replaced by their mean over stages / pairs."""
    rows = []
    for row in history:
        row = dict(row)
        for family in ("intra", "inter"):
            values = [v for v in (row.get(family) or {}).values() if v is not None]
            row[family] = {"mean": sum(values) / len(values)} if values else {}
        rows.append(row)
    return rows


plots.training_curves_figure({SHORT[name]: family_means(card["history"]) for name, card in runs.items()},
                             title="Training curves (terms: mean over stages / over pairs)").show()
'''),
    ("code", '''
rows = []
for name, card in runs.items():
    first, last = card["history"][0], card["history"][-1]
    for family in ("intra", "inter"):
        for term, start in first[family].items():
            end = last[family][term]
            rows.append({"run": name, "term": f"{family} {term}", "epoch 1": start, f"epoch {EPOCHS}": end,
                         "change (%)": 100.0 * (end / start - 1.0)})
terms_table = pd.DataFrame(rows)
terms_table
'''),
    ("md", '''
### The same terms on held-out images, and scale-free

An MSE between channels also falls when the maps shrink as a whole, whether or not the channels come
to resemble each other (BatchNorm and weight decay make shrinking cheap). So each run is measured on
the whole digits test split (eval mode, in batches, with the spread over batches:
`tffd_viz.heldout.heldout_terms`), and every term is also divided by the activation energy of the maps
it compares (`tffd_viz.heldout.scale_free_terms`: `intra / mean(F²)` of the stage, `inter / mean(F²)`
of the deep side as the term reads it). A raw term that falls while its scale-free version does not is
shrinkage, not mimicry.
'''),
    ("code", '''
from tffd_viz.data import load_dataset
from tffd_viz.heldout import heldout_terms

test_split = load_dataset("digits").test
held = {name: heldout_terms(net, test_split) for name, net in models.items()}
some = next(iter(held.values()))
print(f"held out: {some['n']} test images in {some['batches']} batches of {some['batch_size']}")
rows = []
for name, h in held.items():
    for family, energy in (("intra", h["energy"]), ("inter", None)):
        for term, raw in h[family].items():
            rows.append({"run": name, "term": f"{family} {term}", "raw": raw,
                         "raw / energy": h[f"{family}_rel"][term],
                         "energy of the compared maps": energy[term] if energy is not None
                         else raw / h[f"{family}_rel"][term]})
scale_free = pd.DataFrame(rows)
fig = plots.terms_bar_figure({SHORT[name]: {"intra": h["intra_rel"], "inter": h["inter_rel"]}
                              for name, h in held.items()},
                             title="Tf-FD terms / energy of the compared maps (held out)")
fig.update_yaxes(title_text="term / mean(F²) of the compared maps").show()
scale_free
'''),
    ("code", '''
from tffd_viz.verdicts import batch_noise, difference_verdict, sampling_noise, term_verdict

CHANCE = 100.0 / len(load_dataset("digits").classes)
TRAINED = 50.0  # below this top-1 a run has barely left chance: its features say nothing about Tf-FD
accuracy = {name: card["final_acc"] for name, card in runs.items()}
if min(accuracy.values()) < TRAINED:
    lines = [
        "**Trained to chance: no conclusion.** Test top-1 "
        + ", ".join(f"{name} {acc:.1f} %" for name, acc in accuracy.items())
        + f" (chance {CHANCE:.0f} %; every run needs at least {TRAINED:.0f} % before its terms are read). "
        + ("QUICK mode trains on 128 images for 2 epochs: set QUICK = False for the runs this section is about."
           if QUICK else "Train for more epochs before reading the terms.")
    ]
else:
    a = held["baseline"]

    def verdict(family, term, b):
        raw, rel = family, f"{family}_rel"
        ratio = (b[raw][term] / b[rel][term]) / (a[raw][term] / a[rel][term])
        return term_verdict(
            (a[raw][term], b[raw][term], batch_noise(a[f"{raw}_std"][term], b[f"{raw}_std"][term], a["batches"])),
            (a[rel][term], b[rel][term], batch_noise(a[f"{rel}_std"][term], b[f"{rel}_std"][term], a["batches"])),
            ratio)

    lines = ["The terms also move without Tf-FD (the features change as the network learns), so each Tf-FD run "
             f"is compared with the baseline after the same {EPOCHS} epochs, on the held-out split:"]
    for name in list(runs)[1:]:
        b = held[name]
        acc = difference_verdict(a["accuracy"], b["accuracy"], sampling_noise(a["accuracy"], b["accuracy"], a["n"]))
        lines.append(f"\\n**A = baseline, B = {name}** (held-out top-1 A {a['accuracy']:.2f} %, "
                     f"B {b['accuracy']:.2f} %: {acc})")
        for stage in a["intra"]:
            energy = difference_verdict(a["energy"][stage], b["energy"][stage],
                                        batch_noise(a["energy_std"][stage], b["energy_std"][stage], a["batches"]))
            lines.append(f"* energy {stage}: A {a['energy'][stage]:.3g}, B {b['energy'][stage]:.3g}: {energy}")
        lines += [f"* intra {t}: {verdict('intra', t, b)}" for t in a["intra"]]
        lines += [f"* inter {t}: {verdict('inter', t, b)}" for t in a["inter"]]
    lines.append("\\nThe noise reference here is the spread over batches of one run per setting; the spread "
                 "over seeds is not measured here (notebook 02 uses the shipped seeds). Notebook 03 measures how "
                 "hard each term pulls on each stage.")
display(Markdown("\\n".join(lines)))
'''),
    ("md", '''
## 8. Tf-FD next to teacher-based feature distillation

Feature distillation usually has a **teacher**, a larger trained network whose intermediate features
a student learns to reproduce:

* **FitNets** (Romero et al., ICLR 2015): a student layer, passed through a *learned* regressor (a
  small conv), regresses the teacher's "hint" layer by an MSE. The regressor learns which student
  channels stand for which teacher channels.
* **Attention transfer** (Zagoruyko & Komodakis, ICLR 2017): student and teacher match their
  normalised spatial attention maps, the sum over channels of `|F_c|^p`. Summing over the channels
  makes the term free of any channel-to-channel correspondence.

Tf-FD keeps an MSE on features but takes both sides from the network being trained: the salient half
of the same layer (intra) and a deeper stage (inter, detached as the "teacher"). Two consequences:

* **The inter term's channel pairing is arbitrary.** Channel *i* of the pooled shallow stage is
  compared with channel *i* of the deep stage, for `i < min(C_shallow, C_deep)`. There is no regressor
  (FitNets) and no sum over channels (attention transfer), and nothing in the network makes channel 3
  of `layer1` and channel 3 of `layer3` stand for the same thing. The term falls if each shallow channel
  copies whichever deep channel shares its index, or if the maps shrink.
* **Both halves of the intra term receive gradient.** The reference does not detach the salient half:
  the MSE pulls each salient channel towards its redundant partner exactly as hard as the other way
  round. `intra_fd(f, detach_salient=True)` (and `TfFD(detach_salient=True)`) gives the one-way variant
  in which only the redundant half learns.

Both measured on the baseline batch of sections 1-5:
'''),
    ("code", '''
g = f.detach().clone().requires_grad_(True)  # layer1 of the baseline batch (sections 2-4)
rows = []
for detach in (False, True):
    (grad,) = torch.autograd.grad(intra_fd(g, detach_salient=detach), g)
    rows.append({"detach_salient": detach, "‖grad‖ on the salient half": float(grad[:, salient].norm()),
                 "‖grad‖ on the redundant half": float(grad[:, redundant].norm())})
pd.DataFrame(rows)
'''),
    ("code", '''
# the index pairing of inter_fd(layer1, layer3) against random pairings of the same m deep channels:
# only the pairing changes, not the maps nor their energy
gen = torch.Generator().manual_seed(0)
by_index = float(inter_fd(shallow, deep))
shuffled = []
for _ in range(200):
    perm = torch.cat([torch.randperm(m, generator=gen), torch.arange(m, deep.shape[1])])
    shuffled.append(float(inter_fd(shallow, deep[:, perm])))
shuffled = torch.tensor(shuffled)
rank = float((shuffled < by_index).float().mean())
print(f"inter_fd(layer1, layer3), channel i with channel i: {by_index:.4f}")
print(f"over 200 random pairings of the same {m} channels: min {float(shuffled.min()):.4f}, "
      f"median {float(shuffled.median()):.4f}, max {float(shuffled.max()):.4f}")
print(f"{100 * rank:.0f} % of the random pairings give a lower term than the index pairing: "
      + ("the index pairing is better than chance in this model." if rank < 0.05 else
         "in this model the index pairing is no better than a random one."))
'''),
    ("md", '''
## Questions and exercises

Predict first, then check.

1. **λ x10.** Set `LARGE = 5` (10x) in section 7 and rerun. What happens to the activation energy of
   each stage, to the raw terms and to the scale-free terms (`raw / energy`)? *Check:* the held-out
   table and the conclusion of section 7 (`heldout_terms(net, test_split)["energy"]`, `["intra_rel"]`);
   `checkpoints/digits_sweep.csv` also has runs at `λ_intra = 5`: what is their accuracy?
2. **Scale.** Multiply every stage map by 0.1. By what factor does each intra term change, and each
   `intra / energy`? *Check:* `scale_free_terms({k: 0.1 * v for k, v in feats.items()})` against
   `scale_free_terms(feats)` (`from tffd_viz.heldout import scale_free_terms`). What does the answer say
   about reading a falling raw term as "the channels became alike"?
3. **Weight decay.** Retrain the large-λ run with `weight_decay=0.0` added to `common`. Does the energy
   still fall (BatchNorm's scale can still shrink)? *Check:* the energy rows of the conclusion of
   section 7.
4. **Sum vs mean.** Which `λ_intra` with `TfFD(reduction="sum")` gives the same total as the paper's
   with the mean? *Check:* the snippet cell at the end of section 6.
5. **Pairing.** Reverse the order of `layer3`'s channels before the inter term: should
   `inter_fd(layer1, layer3)` change for a method that passes knowledge from deep to shallow? Does it?
   *Check:* `inter_fd(shallow, deep.flip(1))` and the random pairings of section 8; for a trained Tf-FD
   model, load `checkpoints/digits_resnet8_tffd_s0.safetensors` and rerun section 8 on its features.
6. **One-way intra.** With `detach_salient=True`, which channels' gradient vanishes, and what could the
   redundant half still do to lower the term without copying anything? *Check:* the gradient table of
   section 8, then `scale_free_terms` on the redundant channels (`f[:, redundant]`).
7. **Noise.** Rerun section 7 with `seed=1` in `common`. Which verdicts keep their direction?
   *Check:* the conclusion cell; notebook 02 compares the shipped seeds 0-2.
'''),
    ("md", '''
## Next

* `02_baseline_vs_tffd.ipynb` compares the shipped baseline and Tf-FD models (rankings, similarity,
  CKA, probes);
* `03_choosing_layers_and_lambdas.ipynb` shows how to pick lambdas, stages and pairs, also for a
  torchvision model;
* `tffd-viz report --a A.safetensors --b B.safetensors --out report.html` writes the same comparison
  as one HTML file, and `streamlit run app.py` explores it interactively.
'''),
]

# --------------------------------------------------------------------------------------------------
# 02: baseline vs Tf-FD
# --------------------------------------------------------------------------------------------------

NB02: list[Cell] = [
    ("md", '''
# Baseline vs Tf-FD: what changed, what did not

A shipped pair, trained with the same recipe and seed: **A** with cross-entropy only, **B** with
Tf-FD. By default the ResNet-8 pair on digits (`PAIR = "digits"`, no data needed); `"cifar10"` and
`"cifar100"` pick the ResNet-20 pairs where the CIFAR files are at hand (for CIFAR-100 the paper's
240-epoch pair `paper240`, or the 30-epoch `cpu30` pair where only that one is at hand: `tffd_viz.pairs`). This
notebook measures both models on the same test images: channel rankings, channel similarity, CKA
between layers, and linear probes.

Two models differ in every number; most differences are what another seed would give as well. So
each A-vs-B number here has a **noise reference**: the spread over the shipped seeds of the same
configuration (digits ships seeds 0-2), else the spread over batches of the test split. And every
Tf-FD term comes **raw and scale-free** (divided by the activation energy of the maps it compares):
an MSE between channels also falls when the maps merely shrink. The conclusions at the end are
written from the numbers, and only where a difference exceeds its noise.
'''),
    ("params", PARAMETERS + PAIR_PARAMETERS),
    ("code", SETUP + '''
from tffd_viz.checkpoints import list_checkpoints, load_checkpoint
from tffd_viz.data import ImageDataset, load_dataset, sample_batch
from tffd_viz.embeddings import pca_embedding, pooled_embedding, probe_table
from tffd_viz.features import batch_slices, confusion_matrix, extract_pair, predict_logits
from tffd_viz.importance import channel_scores, rank_agreement, tap_rankings
from tffd_viz.losses import salient_order
from tffd_viz.pairs import default_pair
from tffd_viz.similarity import MinibatchCKA, channel_cosine_matrix, paired_channel_cosine
from tffd_viz.summary import card_table, disagreements
from tffd_viz.terms import tffd_terms_on_batch
from tffd_viz.verdicts import effect_summary, lambda_text, pair_comparison, seed_siblings, what_changed_text

N = 128 if QUICK else (360 if PAIR == "digits" else 1000)  # the digits test split has 360 images
HELD_N = 120 if QUICK else None  # images of the test split for the noise references (None: all of it)
'''),
    ("md", '''
## The pair and the batch
'''),
    ("code", '''
# the shipped pair of PAIR's dataset (tffd_viz.pairs: for cifar100 the paper's 240-epoch pair where it ships,
# else the cpu30 one); raises, naming the files, where none is at hand
shipped = list_checkpoints(CKPT)
pair_key, name_a, name_b = default_pair(PAIR, {p.stem: card for p, card in shipped})
path_a, path_b = CKPT / f"{name_a}.safetensors", CKPT / f"{name_b}.safetensors"
print(f"pair {pair_key}: A = {name_a}, B = {name_b}")
model_a, card_a = load_checkpoint(path_a)
model_b, card_b = load_checkpoint(path_b)
A = "A · baseline"
B = (f"B · Tf-FD λ {card_b['lambda_intra']:g}/{card_b['lambda_inter']:g}" if card_b.get("method") == "tffd"
     else f"B · {card_b['method']}")
print(f"B: {lambda_text(card_b)}")
display(card_table({"A": card_a, "B": card_b}, names={"A": path_a.stem, "B": path_b.stem}))

images, labels = sample_batch(card_a["dataset"], split="test", n=N, seed=0, root=DATA_ROOT)
classes = load_dataset(card_a["dataset"], DATA_ROOT).classes
feats_a, feats_b = extract_pair(model_a, model_b, images)  # tap -> (N, C, H, W), the same images for both
taps = list(feats_a)
logits = {A: predict_logits(model_a, images), B: predict_logits(model_b, images)}
preds = {label: lg.argmax(1) for label, lg in logits.items()}
n_differ = len(disagreements(preds[A], preds[B], labels))
confusions = {label: confusion_matrix(pred, labels, len(classes)) for label, pred in preds.items()}
print(f"disagree on {n_differ} of {N} images")
plots.class_error_figure(confusions, classes, title=f"Errors per class on {N} test images").show()
'''),
    ("md", '''
## Noise references: the other seeds, the whole test split

Every other shipped seed of A's and of B's configuration is loaded, and all of them are measured on
the test split in eval mode (`pair_comparison`): the held-out Tf-FD terms (raw, divided by the
activation energy, and the energy itself), the paired cosine against the cosine of random channel
pairs, the inter-layer alignment and the CKA of each layer of A with the same layer of B. A
difference counts only when it exceeds 2 standard deviations of the difference of two single runs
(from the seeds; without seeds, from the batches of the split).
'''),
    ("code", '''
others = {key: [load_checkpoint(p)[0] for p in seed_siblings(card, shipped) if p.resolve() != path.resolve()]
          for key, card, path in (("A", card_a, path_a), ("B", card_b, path_b))}
test = load_dataset(card_a["dataset"], DATA_ROOT).test
held = test if HELD_N is None else ImageDataset(test.images[:HELD_N], test.labels[:HELD_N], test.mean, test.std)
comp = pair_comparison({"A": model_a, "B": model_b}, held, seeds=others,
                       heldouts={"A": card_a.get("heldout_terms"), "B": card_b.get("heldout_terms")})
print(f"{comp['n']} test images; seeds: A {comp['seeds']['A']}, B {comp['seeds']['B']}; noise from "
      + ("the seeds" if max(comp["seeds"].values()) >= 2 else "the batches (no second seed shipped)"))
what = pd.DataFrame(comp["rows"])
what
'''),
    ("md", '''
## Channel rankings

The Tf-FD saliency of every channel, sorted, per layer (the axis does not start at 0: the salient and
redundant halves differ by a few percent); then how much of the total saliency the salient half
holds, and how well other importance criteria agree with the Tf-FD ranking.
'''),
    ("code", '''
rank_a, rank_b = tap_rankings(feats_a, "tffd"), tap_rankings(feats_b, "tffd")
for tap in taps:
    plots.saliency_gap_figure({A: rank_a[tap].scores, B: rank_b[tap].scores}, tap=tap).show()

def salient_share(ranking):
    return 100.0 * ranking.scores[ranking.salient].sum() / ranking.scores.sum()

share = pd.DataFrame({"layer": taps, A: [salient_share(rank_a[t]) for t in taps],
                      B: [salient_share(rank_b[t]) for t in taps]})
share  # % of the layer's total saliency held by the salient half
'''),
    ("code", '''
CRITERIA = ("tffd", "l1", "l2", "bn_gamma", "taylor")  # "mean" ranks like "l1" after a ReLU: left out
rows, agreement = [], {}
for label, model, feats in ((A, model_a, feats_a), (B, model_b, feats_b)):
    for tap in taps:
        scores = {c: channel_scores(c, features=feats[tap], model=model, images=images, labels=labels,
                                    tap=tap) for c in CRITERIA}
        agreement[label, tap] = rank_agreement(scores)
        rho = agreement[label, tap]["spearman"][0]
        rows.append({"model": label, "layer": tap, **{f"ρ(tffd, {c})": rho[j] for j, c in enumerate(CRITERIA) if j}})
display(pd.DataFrame(rows))
deepest = taps[-1]
'''),
    ("md", '''
## Channel similarity

The intra-layer loss pulls each redundant channel towards its salient partner, an MSE that also falls
when the maps shrink. The **paired cosine** is scale-free: it measures how alike the partners are, and
means something only against the cosine of **random channel pairs** of the same layer (equal values:
no pair structure). The first figure is over the whole test split with its spread over batches; the
cosine matrices are sorted by saliency, salient half first.
'''),
    ("code", '''
plots.cosine_reference_figure({A: comp["measures"]["A"]["cosine"], B: comp["measures"]["B"]["cosine"]}).show()
paired = {label: {tap: paired_channel_cosine(f[tap], salient_order(f[tap])) for tap in taps}
          for label, f in ((A, feats_a), (B, feats_b))}
for tap in taps:
    plots.paired_similarity_figure({A: paired[A][tap], B: paired[B][tap]}, tap=tap).show()
for label, feats in ((A, feats_a), (B, feats_b)):
    f = feats[deepest]
    plots.cosine_matrix_figure(channel_cosine_matrix(f), order=salient_order(f),
                               title=f"Channel cosine, sorted by saliency — {label} · {deepest}").show()
what[what["quantity"].str.contains("cosine")]
'''),
    ("md", '''
## CKA between layers

Linear CKA, 1 = the same representation up to rotation and scale, 0 = unrelated, estimated over
minibatches with the unbiased HSIC_1 (`MinibatchCKA`). Two seeds of one configuration never give 1:
the second figure sets the A-vs-B value of each layer against the seed-to-seed CKA.
'''),
    ("code", '''
cka = MinibatchCKA(len(taps), len(taps))
for sl in batch_slices(N, 128):
    if sl.stop - sl.start >= 4:
        cka.update([feats_a[t][sl] for t in taps], [feats_b[t][sl] for t in taps])
cka_ab = cka.compute().numpy()
plots.cka_heatmap_figure(cka_ab, taps, taps, title="Linear CKA, A (rows) vs B (columns)", label_a=A,
                         label_b=B).show()
plots.cka_reference_figure(comp["cka_ab"], comp["cka_seeds"]).show()
'''),
    ("md", '''
## Linear probes and embeddings

A logistic regression on each layer's globally pooled features (a held-out 30 % of the batch) tells
how linearly separable the classes are at that depth; the PCA shows the deepest layer. One split of
one batch has no noise reference here, so the probes are not part of the conclusions.
'''),
    ("code", '''
probes = {label: probe_table({t: pooled_embedding(feats[t]) for t in taps}, labels.numpy(), seed=0)
          for label, feats in ((A, feats_a), (B, feats_b))}
plots.probe_accuracy_figure(probes).show()
display(pd.DataFrame([{"model": label, **row} for label, rows in probes.items() for row in rows]))
for label, feats in ((A, feats_a), (B, feats_b)):
    coords, ratio = pca_embedding(pooled_embedding(feats[deepest]))
    axes = (f"PC 1 ({100 * ratio[0]:.0f} %)", f"PC 2 ({100 * ratio[1]:.0f} %)")
    plots.embedding_figure(coords, labels.numpy(), classes, title=f"PCA of {deepest} — {label}",
                           axis_names=axes).show()
'''),
    ("md", '''
## The Tf-FD terms: raw, scale-free, and the energy

Held-out (eval mode, the test split in batches that each rank their own channels), mean ± std over
batches. Left: the raw term; middle: the term divided by the activation energy of the maps it
compares; right: the energy (mean square) of each stage. A raw drop with an unchanged middle panel
is a drop of activation energy, not mimicry.
'''),
    ("code", '''
held_terms = {A: comp["measures"]["A"]["heldout"], B: comp["measures"]["B"]["heldout"]}
plots.heldout_terms_figure(held_terms, "intra").show()
plots.heldout_terms_figure(held_terms, "inter").show()
reports = {A: tffd_terms_on_batch(model_a, images, labels), B: tffd_terms_on_batch(model_b, images, labels)}
pd.DataFrame({label: {"ce": r.ce, **{f"intra {k}": v for k, v in r.intra.items()},
                      **{f"inter {k}": v for k, v in r.inter.items()}} for label, r in reports.items()})
'''),
    ("md", '''
## What changed and what did not

Written from the rows of the table above (rerun the notebook and the text follows the new numbers):
a conclusion only where the difference exceeds its noise reference.
'''),
    ("code", '''
plots.noise_ratio_figure(comp["rows"]).show()
display(Markdown(f"**{B}** ({lambda_text(card_b)}).\\n\\n**Finding.** {effect_summary(comp['rows'])}\\n\\n"
                 + "\\n".join(what_changed_text(comp["rows"]))))
if comp["mean_rows"]:  # every shipped seed: the mean of A's configuration against the mean of B's
    display(Markdown(f"**Over all shipped seeds** (A {comp['seeds']['A']}, B {comp['seeds']['B']}): "
                     + effect_summary(comp["mean_rows"])))
'''),
    ("md", '''
## Questions and exercises

1. Which of B's raw intra terms fell with the activation energy only, and which also scale-free? What
   would you expect of a layer whose relative term is unchanged but whose energy fell 10x?
2. Predict, then check with `tffd-viz train --lambda-intra ...` and this notebook: with λ ten times
   larger, what happens to the energy per stage, the relative terms and the accuracy? With λ at the
   paper's value (`digits_resnet8_tffd-paper_s0`)?
3. The CKA of A with B lies within the seed-to-seed CKA in which layers? What does that say about
   "Tf-FD changed what the layer computes"?
4. Set `HELD_N = 120` and rerun: which verdicts change with fewer images, and why does the batch
   noise grow?
5. Is the paired cosine above the random-pair cosine for A already? What would a paired cosine
   *below* it mean?
6. Teacher-based feature distillation (FitNets, attention transfer) matches a student's maps to a
   fixed teacher's; Tf-FD matches a network's channels to its own. Here both halves of a pair receive
   gradient, and the inter term pairs channel c of one stage with channel c of another, an arbitrary
   pairing of indices. How could each of these let the loss fall without the channels becoming more
   alike?
'''),
]

# --------------------------------------------------------------------------------------------------
# 03: choosing layers and lambdas
# --------------------------------------------------------------------------------------------------

NB03: list[Cell] = [
    ("md", '''
# Choosing layers and lambdas

Tf-FD has four knobs: `λ_intra`, `λ_inter`, the stages that take the intra term and the pairs that
take the inter term. This notebook measures what they do before any training run:

1. how hard each weighted term pulls on each stage's parameters next to the cross-entropy (the
   **gradient-norm share**), and what lambda would give a chosen pull;
2. what the **sweep table** (`tffd-viz sweep`, shipped as `checkpoints/digits_sweep.csv`) says;
3. how to do the same for a **new architecture**: a torchvision ResNet-18 with layers picked by name.
'''),
    ("params", PARAMETERS),
    ("code", SETUP + QUICK_NOTE + '''
import torchvision

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.heldout import scale_free_terms
from tffd_viz.losses import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA, TfFD
from tffd_viz.models import create_model, default_taps, extract_taps, tap_info
from tffd_viz.terms import gradient_norm_share, tffd_terms_on_batch
from tffd_viz.train import LAYER_PRESETS

N = 64 if QUICK else 256
STEPS = 3 if QUICK else 30
images, labels = sample_batch("digits", split="test", n=N, seed=0)
'''),
    ("md", '''
## 1. Gradient-norm share

`gradient_norm_share` takes the gradient of the cross-entropy and of every **weighted** Tf-FD term
separately and reports its L2 norm on each parameter group (`stem`, one group per stage, `head`).
The heatmap shows each term's share of a group's summed norms.

It is measured on the **baseline** (trained without Tf-FD): the lambdas are chosen before a Tf-FD run,
and a model already trained with Tf-FD has shrunk the maps its terms compare, so its terms send less
gradient and every lambda computed from it comes out too large (compared at the end of this section).
'''),
    ("code", '''
path = CKPT / "digits_resnet8_baseline_s0.safetensors"
if path.is_file():
    model, card = load_checkpoint(path)
    print(f"model: {path.name}")
else:
    model = create_model("resnet8", num_classes=10, in_chans=1).eval()
    print("no shipped checkpoint found: using an untrained resnet8")
share = gradient_norm_share(model, images, labels, PAPER_LAMBDA_INTRA, PAPER_LAMBDA_INTER)
plots.grad_share_figure(share["norms"], share["terms"], share["groups"],
                        title="Gradient norm share, paper lambdas").show()
'''),
    ("md", '''
The weighted terms are linear in their lambda, so a term's gradient norm scales with it. That gives
a starting point for a sweep: the lambda at which a stage's own intra term sends, say, 10 % of the
gradient norm the cross-entropy sends to that stage. (A heuristic for where to start, not a rule from
the paper.)
'''),
    ("code", '''
def suggested_lambdas(share, lambda_intra, target=0.10):
    """λ_intra per stage that makes its intra term's gradient norm `target` x the CE's on that stage."""
    norms = pd.DataFrame(share["norms"], index=share["terms"], columns=share["groups"])
    rows = []
    for stage in [g for g in share["groups"] if g in norms.index]:
        ce, intra = norms.loc["ce", stage], norms.loc[stage, stage]
        rows.append({"stage": stage, "CE grad norm": ce, "intra grad norm": intra, "ratio": intra / ce,
                     f"λ_intra for {100 * target:.0f} %": lambda_intra * target * ce / intra})
    return pd.DataFrame(rows)

suggested_lambdas(share, PAPER_LAMBDA_INTRA)
'''),
    ("code", '''
# the same heuristic measured on a model already trained with Tf-FD (the mistake this section avoids)
tffd_path = CKPT / "digits_resnet8_tffd_s0.safetensors"
if path.is_file() and tffd_path.is_file():
    tffd_model, _ = load_checkpoint(tffd_path)
    column = "λ_intra for 10 %"
    on_base = suggested_lambdas(share, PAPER_LAMBDA_INTRA).set_index("stage")[column]
    on_tffd = suggested_lambdas(gradient_norm_share(tffd_model, images, labels, PAPER_LAMBDA_INTRA,
                                                    PAPER_LAMBDA_INTER), PAPER_LAMBDA_INTRA).set_index("stage")[column]
    ratio = on_tffd / on_base
    display(pd.DataFrame({"on the baseline": on_base, f"on {tffd_path.stem}": on_tffd, "ratio": ratio}))
    print(f"measured on the Tf-FD model the suggested λ_intra is {ratio.min():.2g}x to {ratio.max():.2g}x "
          "the one measured on the baseline")
else:
    print("the shipped digits baseline and Tf-FD checkpoints are needed for this comparison")
'''),
    ("code", '''
rows = []
for factor in (1, 10, 100):
    s = gradient_norm_share(model, images, labels, factor * PAPER_LAMBDA_INTRA, factor * PAPER_LAMBDA_INTER)
    tffd = [i for i, kind in enumerate(s["kinds"]) if kind != "ce"]
    for j, group in enumerate(s["groups"]):
        rows.append({"lambdas": f"{factor} x paper", "group": group,
                     "Tf-FD share of the group's gradient (%)": 100 * s["share"][tffd, j].sum()})
pd.DataFrame(rows).pivot(index="group", columns="lambdas",
                         values="Tf-FD share of the group's gradient (%)").loc[share["groups"]]
'''),
    ("md", '''
## 2. The sweep table

One row per short training run: lambdas, layer preset, seed, final accuracy and the last epoch's
terms. The heatmap averages the final accuracy over seeds in each cell.
'''),
    ("code", '''
sweep_path = CKPT / "digits_sweep.csv"
sweep = pd.read_csv(sweep_path)
columns = ["method", "layers", "lambda_intra", "lambda_inter", "seed", "final_acc", "best_acc", "tffd_total"]
display(sweep[columns])
facet = "layers" if sweep["layers"].nunique() > 1 else None
plots.sweep_heatmap_figure(sweep.to_dict("records"), value="final_acc", x="lambda_inter", y="lambda_intra",
                           facet=facet).show()
'''),
    ("code", '''
setting = ["layers", "lambda_intra", "lambda_inter"]
per_setting = sweep.groupby(setting)["final_acc"].agg(["mean", "std", "count"])
best = per_setting["mean"].idxmax()
baseline = sweep.loc[sweep["method"] == "baseline", "final_acc"]
spread = per_setting["std"].dropna()
text = (f"The table has {len(sweep)} run(s) over {len(per_setting)} setting(s). The best mean final "
        f"accuracy, {per_setting.loc[best, 'mean']:.2f} %, is at layers={best[0]}, λ_intra={best[1]:g}, "
        f"λ_inter={best[2]:g}; "
        + (f"the baseline runs average {baseline.mean():.2f} %. " if len(baseline) else "there is no baseline run. "))
text += (f"Across seeds, a setting's accuracy varies by a standard deviation of up to {spread.max():.2f} "
         "points: "
         "smaller differences between settings are within seed noise." if len(spread) else
         "Every setting has a single seed, so the table cannot separate a difference from seed noise; "
         "add seeds (`tffd-viz sweep --seeds 0,1,2`) before choosing.")
display(Markdown(text))
display(per_setting)
'''),
    ("md", '''
### Try a lambda before training with it

The sweep answers for a fixed grid, after full trainings. `tffd_viz.whatif` answers for any lambda in
seconds: from the baseline it fine-tunes a **control** (CE only), a **Tf-FD arm** (same batches and
augmentations, CE + the weighted terms) and a **second control** on another batch order, whose distance
from the first is the noise floor; every arm is evaluated on the held-out digits test split before and
after, raw and relative to the maps' mean square (the app's "Try lambdas" page, `tffd-viz whatif`).
'''),
    ("code", '''
from tffd_viz.data import load_dataset
from tffd_viz.plots import whatif_curves_figure, whatif_heldout_figure
from tffd_viz.whatif import WhatIf, WhatIfConfig, whatif_answer

if path.is_file():
    what_if = WhatIf(model, load_dataset("digits"), WhatIfConfig(lambda_intra=1.0, lambda_inter=0.0,
                                                                 steps=5 if QUICK else 100), card=card)
    step_rows = pd.DataFrame(what_if.run())  # one row per arm and step, as they come
    result = what_if.result()
    print(whatif_answer(result))
    whatif_curves_figure(what_if.rows).show()
    whatif_heldout_figure(result).show()
'''),
    ("md", '''
## 3. Stages and pairs

`tffd_viz.train.LAYER_PRESETS` names common choices. Every term is computed once on the batch; the
weighted total of each preset then needs no new forward pass (`TermsReport.weighted`).
'''),
    ("code", '''
report = tffd_terms_on_batch(model, images, labels)
n_taps = len(report.taps)
rows = []
for name, preset in LAYER_PRESETS.items():
    stages, pairs = preset(n_taps)
    w = report.weighted(PAPER_LAMBDA_INTRA, PAPER_LAMBDA_INTER, stages, pairs)
    intra, inter = report.selected(stages, pairs)
    rows.append({"preset": name, "intra stages": ", ".join(intra) or "—",
                 "inter pairs": ", ".join(inter) or "—", "weighted intra": w["intra"],
                 "weighted inter": w["inter"], "Tf-FD / CE": w["tffd"] / w["ce"]})
pd.DataFrame(rows)
'''),
    ("md", '''
## 4. A new architecture: torchvision ResNet-18

Any `nn.Module` works: taps are module names. Here an untrained `torchvision.models.resnet18` with 10
classes (no pretrained weights) on the digits, repeated to 3 channels. At 32x32 its stem divides the
size by 4, so `layer4` is 1x1: a 1x1 "map" normalised by its own L2 norm is 1 wherever the channel
fires, so its saliency only counts how often a channel fires. We keep the first three stages and tap
them inside, at the output of their **first** block (`layer1.0`, `layer2.0`, `layer3.0`: post-ReLU,
the stage's shape, one block before the stage output). A tap on the *last* block (`layer1.1`) would
only rename the default tap: a stage is a `Sequential` of blocks, so its last block's output is the
stage output, the same tensor. The cell after the table checks that the chosen taps are not such
aliases.
'''),
    ("code", '''
torch.manual_seed(0)
net = torchvision.models.resnet18(num_classes=10).eval()
x = images.repeat(1, 3, 1, 1)  # grey digits -> 3 channels
print("default taps:", default_taps(net))
TAPS = ["layer1.0", "layer2.0", "layer3.0"]
PAIRS = [("layer2.0", "layer3.0")]  # e.g. every stage takes the intra term, one inter pair
info = tap_info(net, list(default_taps(net)) + TAPS + ["layer1.1"], input_shape=(3, 32, 32))
display(pd.DataFrame([{"tap": t.name, "shape (C, H, W)": t.shape, "reduction": t.reduction}
                      for t in info.values()]))
'''),
    ("code", '''
# the chosen taps are not aliases of a stage output (the same tensor under another name); layer1.1 is
stages = list(default_taps(net))
with torch.no_grad():
    maps = extract_taps(net, x, stages + TAPS + ["layer1.1"])
aliases = {t: [s for s in stages if maps[s].shape == maps[t].shape and torch.equal(maps[s], maps[t])]
           for t in TAPS + ["layer1.1"]}
print("tap -> stage outputs with the very same tensor:", aliases)
assert aliases["layer1.1"] == ["layer1"], "the last block's output is the stage output"
assert not any(aliases[t] for t in TAPS), f"a chosen tap is an alias of a stage output: {aliases}"

taps = {t: maps[t] for t in TAPS}
out = TfFD(pairs=PAIRS)(taps)
print("intra:", {k: round(float(v), 4) for k, v in out.intra.items()})
print("inter:", {k: round(float(v), 4) for k, v in out.inter.items()})
'''),
    ("code", '''
share_tv = gradient_norm_share(net, x, labels, PAPER_LAMBDA_INTRA, PAPER_LAMBDA_INTER, taps=TAPS, pairs=PAIRS)
plots.grad_share_figure(share_tv["norms"], share_tv["terms"], share_tv["groups"],
                        title="resnet18: gradient norm share, paper lambdas").show()
suggested_lambdas(share_tv, PAPER_LAMBDA_INTRA)
'''),
    ("md", '''
Tf-FD in your own training loop: one forward pass gives the logits and the taps, and the loss is
`CE + warm-up weight · TfFD(taps).total`. A few SGD steps on this batch:
'''),
    ("code", '''
loss_fn = TfFD(pairs=PAIRS)
opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
history = []
net.train()
for step in range(1, STEPS + 1):
    logits, taps = extract_taps(net, x, TAPS, return_logits=True)
    ce = F.cross_entropy(logits, labels)
    out = loss_fn(taps)
    if step == 1:  # raw and scale-free terms and energies before any update (train mode, as the loss sees them)
        before = scale_free_terms({k: v.detach() for k, v in taps.items()}, pairs=PAIRS)
    loss = ce + 1.0 * out.total  # warm-up weight 1 here; see tffd_viz.losses.warmup_weight
    opt.zero_grad()
    loss.backward()
    opt.step()
    history.append({"epoch": step, "ce": ce.item(), "intra": {k: v.item() for k, v in out.intra.items()},
                    "inter": {k: v.item() for k, v in out.inter.items()},
                    "train_acc": 100.0 * float((logits.argmax(1) == labels).float().mean())})
with torch.no_grad():
    after = scale_free_terms(extract_taps(net, x, TAPS), pairs=PAIRS)  # after the last update, train mode
net.eval()
plots.training_curves_figure({"resnet18 · Tf-FD": history},
                             title=f"resnet18 on one batch, {STEPS} SGD steps (x axis: step)").show()
'''),
    ("md", '''
A falling term is not yet mimicry: the maps may just have shrunk. Before the first and after the last
step (train mode, BatchNorm on the batch's statistics, as the loss sees the maps), each term next to
the term divided by the energy of the maps it compares (`tffd_viz.heldout.scale_free_terms`), and the
energy `mean(F²)` of each tap:
'''),
    ("code", '''
rows = []
for family in ("intra", "inter"):
    for term in before[family]:
        rows.append({"term": f"{family} {term}", "raw before": before[family][term],
                     "raw after": after[family][term], "raw / energy before": before[f"{family}_rel"][term],
                     "raw / energy after": after[f"{family}_rel"][term]})
display(pd.DataFrame(rows))
pd.DataFrame({"energy before": before["energy"], "energy after": after["energy"]})
'''),
    ("md", '''
## A checklist for a new architecture

1. List the candidate taps with `tap_info`: post-ReLU stage outputs with a spatial size of at least
   2x2 and at least 2 channels. Two names can hold the same tensor (a stage and its last block):
   compare the maps with `torch.equal` as in section 4.
2. Compute the terms once (`tffd_terms_on_batch` or `TfFD`) and the gradient-norm share at the paper
   lambdas; scale the lambdas so the Tf-FD terms pull a modest fraction of the cross-entropy's
   gradient (`suggested_lambdas` above gives a starting value per stage).
3. Sweep around that value and over a few layer presets with several seeds
   (`tffd-viz sweep --lambda-intra ... --lambda-inter ... --layers all,last2 --seeds 0,1,2`) and
   compare the differences with the seed-to-seed spread.
4. Compare the chosen model with its baseline: `tffd-viz report --a baseline --b tffd`.
'''),
    ("md", '''
## Questions and exercises

Predict first, then check.

1. **Which model to measure.** Section 1 measures the gradient share on the baseline. Which stage's
   suggested lambda changes most when it is measured on the Tf-FD model, and why? *Check:* the
   comparison cell at the end of section 1, and the energy of each stage of both models:
   `heldout_terms(model, load_dataset("digits").test)["energy"]` (`tffd_viz.heldout`).
2. **λ x10.** From the share at 1x the paper's lambdas, predict the Tf-FD share of each group's
   gradient at 10x and 100x (the norms are linear in λ; the share is not). *Check:* the lambdas table
   of section 1.
3. **Collapse.** The sweep's `λ_intra = 5` runs end near 50 % accuracy. At which stage does the intra
   term's gradient norm exceed the cross-entropy's at that lambda? *Check:*
   `gradient_norm_share(model, images, labels, 5.0, 5.0)["norms"]`, the `ce` row against the others.
4. **A pre-ReLU tap.** Tap `layer1.0.bn2` (inside a block, before the residual sum and the ReLU). The
   saliency averages each map divided by its L2 norm: what can it do on a map with negative values?
   *Check:* `channel_saliency(extract_taps(net, x, ["layer1.0.bn2"])["layer1.0.bn2"])`
   (`tffd_viz.losses`).
5. **Shrink or mimic.** Rerun section 4's SGD steps with `TfFD(8e-2, 5e-2, pairs=PAIRS)` (100x). Predict
   the raw terms, the energy and `raw / energy` after the steps. *Check:* the before/after tables at the
   end of section 4.
6. **Channel counts.** For the pair `("layer1.0", "layer3.0")`, how many channels does the inter term
   compare, and which ones of `layer3.0` are never pulled towards anything? *Check:* `tap_info` and
   `min(C_shallow, C_deep)` (section 5 of notebook 01).
'''),
]

NOTEBOOKS: dict[str, list[Cell]] = {
    "01_tffd_in_ten_minutes.ipynb": NB01,
    "02_baseline_vs_tffd.ipynb": NB02,
    "03_choosing_layers_and_lambdas.ipynb": NB03,
}


def build(cells: list[Cell]) -> nbformat.NotebookNode:
    """Return a notebook (nbformat 4, no outputs, stable cell ids) from ``(kind, source)`` cells."""
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source) in enumerate(cells):
        text = dedent(source).strip("\n")
        cell = new_markdown_cell(text) if kind == "md" else new_code_cell(text)
        cell.id = f"cell-{i:02d}"
        if kind == "params":
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def rendered(name: str) -> str:
    """The file content of notebook ``name`` as this script writes it."""
    return nbformat.writes(build(NOTEBOOKS[name])) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the notebooks are up to date")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = HERE / name
        text = rendered(name)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python notebooks/build_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
