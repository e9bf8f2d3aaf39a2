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
`tffd_viz` function and every figure is one the app draws (`tffd_viz.plots`).
'''),
    ("params", PARAMETERS),
    ("code", SETUP + '''
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
## 7. A short training

Three ResNet-8 on digits from the same seed, for a few epochs with `tffd_viz.train` (the loop of
`tffd-viz train --recipe digits`): a **baseline** (cross-entropy only; its Tf-FD terms are still
computed and logged), Tf-FD with the **paper's lambdas**, and Tf-FD with a **large lambda** (0.5 for
both families), all without warm-up. Each epoch's history row holds the mean of every term over the
epoch's batches.
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
runs = {}
for name, setting in settings.items():
    _, runs[name] = train(config_from_recipe("digits", **setting, **common))
    print(f"{name}: test top-1 after {EPOCHS} epochs = {runs[name]['final_acc']:.2f} %")
'''),
    ("code", '''
labels_by_run = dict(zip(runs, ["A · baseline", "B · Tf-FD, paper λ", f"Tf-FD, λ = {LARGE:g}"]))
plots.training_curves_figure({labels_by_run[name]: card["history"] for name, card in runs.items()}).show()
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
    ("code", '''
last_mean = terms_table.groupby("run", sort=False)[f"epoch {EPOCHS}"].mean()
fell = terms_table.groupby("run", sort=False)["change (%)"].apply(lambda c: int((c < 0).sum()))
n_terms = len(terms_table) // len(runs)
display(Markdown(
    "The terms also move without Tf-FD, because the features change as the network learns, so compare the "
    f"runs at the same epoch. After {EPOCHS} epochs the mean term is "
    + ", ".join(f"{last_mean[name]:.3g} for {name}" for name in runs)
    + "; between epoch 1 and the last epoch "
    + ", ".join(f"{fell[name]} of {n_terms} terms fell for {name}" for name in runs)
    + ". Against the baseline at the last epoch, the mean term is "
    + ", ".join(f"{100 * (last_mean[name] / last_mean['baseline'] - 1):+.1f} % for {name}"
                for name in list(runs)[1:])
    + ". The paper's lambdas (8e-4 and 5e-4) weigh the terms lightly next to the cross-entropy; notebook 03 "
    "measures how hard each term pulls on each stage."
))
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
`"cifar100"` pick the ResNet-20 pairs where their checkpoints and the CIFAR files are at hand. This
notebook measures both models on the same test images: channel rankings, channel similarity, CKA
between layers, and linear probes. The conclusions at the end are written from the measured numbers,
whatever they turn out to be.
'''),
    ("params", PARAMETERS + PAIR_PARAMETERS),
    ("code", SETUP + '''
from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import load_dataset, sample_batch
from tffd_viz.embeddings import pca_embedding, pooled_embedding, probe_table
from tffd_viz.features import accuracy, batch_slices, confusion_matrix, extract_pair, predict_logits
from tffd_viz.importance import channel_scores, rank_agreement, salient_split, tap_rankings
from tffd_viz.losses import salient_order
from tffd_viz.similarity import (
    MinibatchCKA,
    channel_cosine_matrix,
    inter_layer_alignment,
    paired_channel_cosine,
)
from tffd_viz.summary import card_table, disagreements
from tffd_viz.terms import tffd_terms_on_batch

N = 128 if QUICK else (360 if PAIR == "digits" else 1000)  # the digits test split has 360 images
'''),
    ("md", '''
## The pair and the batch
'''),
    ("code", '''
PAIRS = {  # PAIR -> (model A, candidates for model B, first one present)
    "digits": ("digits_resnet8_baseline_s0", ("digits_resnet8_tffd_s0", "digits_resnet8_tffd-paper_s0")),
    "cifar10": ("cifar10_resnet20_baseline_s0", ("cifar10_resnet20_tffd_s0",)),
    "cifar100": ("cifar100_resnet20_baseline_s0", ("cifar100_resnet20_tffd_s0",)),
}
name_a, names_b = PAIRS[PAIR]
path_a = CKPT / f"{name_a}.safetensors"
found = [CKPT / f"{name}.safetensors" for name in names_b if (CKPT / f"{name}.safetensors").is_file()]
if not path_a.is_file() or not found:
    raise FileNotFoundError(f"the shipped {PAIR} checkpoints are missing from {CKPT}: see checkpoints/README.md")
path_b = found[0]
model_a, card_a = load_checkpoint(path_a)
model_b, card_b = load_checkpoint(path_b)
A, B = "A · baseline", f"B · {card_b['method']}"
display(card_table({"A": card_a, "B": card_b}, names={"A": path_a.stem, "B": path_b.stem}))

images, labels = sample_batch(card_a["dataset"], split="test", n=N, seed=0, root=DATA_ROOT)
classes = load_dataset(card_a["dataset"], DATA_ROOT).classes
feats_a, feats_b = extract_pair(model_a, model_b, images)  # tap -> (N, C, H, W), the same images for both
taps = list(feats_a)
logits = {A: predict_logits(model_a, images), B: predict_logits(model_b, images)}
acc = {label: accuracy(lg, labels) for label, lg in logits.items()}
preds = {label: lg.argmax(1) for label, lg in logits.items()}
n_differ = len(disagreements(preds[A], preds[B], labels))
print({label: f"{a:.2f} %" for label, a in acc.items()}, f"disagree on {n_differ} of {N} images")
'''),
    ("code", '''
for label, pred in preds.items():
    plots.confusion_figure(confusion_matrix(pred, labels, len(classes)), classes,
                           title=f"Confusion matrix, {label}").show()
'''),
    ("md", '''
## Channel rankings

The Tf-FD saliency of every channel, sorted, per layer; then how much of the total saliency the
salient half holds, and how well other importance criteria agree with the Tf-FD ranking.
'''),
    ("code", '''
rank_a, rank_b = tap_rankings(feats_a, "tffd"), tap_rankings(feats_b, "tffd")
for tap in taps:
    plots.saliency_bars_figure({A: rank_a[tap].scores, B: rank_b[tap].scores}, tap=tap).show()

def salient_share(ranking):
    return 100.0 * ranking.scores[ranking.salient].sum() / ranking.scores.sum()

share = pd.DataFrame({"layer": taps, A: [salient_share(rank_a[t]) for t in taps],
                      B: [salient_share(rank_b[t]) for t in taps]})
share  # % of the layer's total saliency held by the salient half
'''),
    ("code", '''
CRITERIA = ("tffd", "l1", "l2", "bn_gamma", "taylor")
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
plots.rank_agreement_figure(agreement[B, deepest]["spearman"], agreement[B, deepest]["names"],
                            title=f"Rank agreement between criteria — {B} · {deepest}").show()
'''),
    ("md", '''
## Channel similarity

Intra-layer Tf-FD trains each redundant channel to mimic its salient partner; the **paired cosine**
measures how alike the partners are. The cosine matrices are sorted by saliency, salient half first.
'''),
    ("code", '''
rows = []
paired = {A: {}, B: {}}
for label, feats in ((A, feats_a), (B, feats_b)):
    for tap in taps:
        f = feats[tap]
        paired[label][tap] = paired_channel_cosine(f, salient_order(f))
        rows.append({"model": label, "layer": tap, "mean paired cosine": float(paired[label][tap].mean())})
similarity = pd.DataFrame(rows).pivot(index="layer", columns="model", values="mean paired cosine").loc[taps]
display(similarity)
for tap in taps:
    plots.paired_similarity_figure({A: paired[A][tap], B: paired[B][tap]}, tap=tap).show()
for label, feats in ((A, feats_a), (B, feats_b)):
    f = feats[deepest]
    plots.cosine_matrix_figure(channel_cosine_matrix(f), order=salient_order(f),
                               title=f"Channel cosine, sorted by saliency — {label} · {deepest}").show()
alignment = {label: {f"{s}->{d}": inter_layer_alignment(feats[s], feats[d])
                     for i, s in enumerate(taps) for d in taps[i + 1:]}
             for label, feats in ((A, feats_a), (B, feats_b))}
plots.alignment_figure(alignment).show()
'''),
    ("md", '''
## CKA between layers

Linear CKA, 1 = the same representation up to rotation and scale, 0 = unrelated, estimated over
minibatches with the unbiased HSIC_1 (`MinibatchCKA`).
'''),
    ("code", '''
cka = MinibatchCKA(len(taps), len(taps))
for sl in batch_slices(N, 128):
    if sl.stop - sl.start >= 4:
        cka.update([feats_a[t][sl] for t in taps], [feats_b[t][sl] for t in taps])
cka_ab = cka.compute().numpy()
plots.cka_heatmap_figure(cka_ab, taps, taps, title="Linear CKA, A (rows) vs B (columns)", label_a=A,
                         label_b=B).show()
cka_diag = {t: float(cka_ab[i, i]) for i, t in enumerate(taps)}
cka_diag
'''),
    ("md", '''
## Linear probes and embeddings

A logistic regression on each layer's globally pooled features (a held-out 30 % of the batch) tells
how linearly separable the classes are at that depth; the PCA shows the deepest layer.
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
## The Tf-FD terms on this batch
'''),
    ("code", '''
reports = {A: tffd_terms_on_batch(model_a, images, labels), B: tffd_terms_on_batch(model_b, images, labels)}
plots.terms_bar_figure({label: {"intra": r.intra, "inter": r.inter} for label, r in reports.items()},
                       log_y=True).show()
pd.DataFrame({label: {"ce": r.ce, **{f"intra {k}": v for k, v in r.intra.items()},
                      **{f"inter {k}": v for k, v in r.inter.items()}} for label, r in reports.items()})
'''),
    ("md", '''
## What changed and what did not

Written from the numbers measured above (rerun the notebook and the text follows the new numbers).
'''),
    ("code", '''
def compare(a, b, tol):
    """'higher' / 'lower' / 'about the same' for B against A."""
    return "about the same" if abs(b - a) <= tol else ("higher" if b > a else "lower")

intra_lower = sum(reports[B].intra[t] < reports[A].intra[t] for t in taps)
paired_higher = [t for t in taps if similarity.loc[t, B] > similarity.loc[t, A]]
probe_acc = {label: {r["tap"]: r["test_acc"] for r in rows} for label, rows in probes.items()}
low_cka = [t for t in taps if cka_diag[t] < 0.9]
lines = [
    f"* **Accuracy** on these {N} images: A {acc[A]:.2f} %, B {acc[B]:.2f} % "
    f"({compare(acc[A], acc[B], 100.0 / N)} for B); the two disagree on {n_differ} image(s).",
    f"* **Intra-layer terms**: B's is lower than A's in {intra_lower} of {len(taps)} layers "
    f"(deepest layer: A {reports[A].intra[deepest]:.4g}, B {reports[B].intra[deepest]:.4g}).",
    f"* **Paired cosine** (salient vs its redundant partner): higher for B in {len(paired_higher)} of "
    f"{len(taps)} layers ({', '.join(paired_higher) or 'none'}); deepest layer A "
    f"{similarity.loc[deepest, A]:.3f}, B {similarity.loc[deepest, B]:.3f}.",
    f"* **Salient half's share of the saliency** in {deepest}: A {share[A].iloc[-1]:.1f} %, "
    f"B {share[B].iloc[-1]:.1f} %.",
    "* **CKA** between the same layer of A and B: "
    + ", ".join(f"{t} {cka_diag[t]:.3f}" for t in taps)
    + (" — every layer of B represents this batch much like the same layer of A (all ≥ 0.9)." if not low_cka
       else f" — below 0.9 in {', '.join(low_cka)}, where B's representation departs from A's."),
    "* **Linear probes** (test accuracy per layer): "
    + "; ".join(f"{t}: A {probe_acc[A][t]:.1f} %, B {probe_acc[B][t]:.1f} %" for t in taps) + ".",
]
display(Markdown("\\n".join(lines)))
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
    ("code", SETUP + '''
import torchvision

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
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
'''),
    ("code", '''
names = ("digits_resnet8_tffd_s0", "digits_resnet8_tffd-paper_s0", "digits_resnet8_baseline_s0")
path = next((CKPT / f"{n}.safetensors" for n in names if (CKPT / f"{n}.safetensors").is_file()), None)
if path is not None:
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
fires, so its saliency only counts how often a channel fires. We pick the outputs of the last block
of the first three stages instead.
'''),
    ("code", '''
torch.manual_seed(0)
net = torchvision.models.resnet18(num_classes=10).eval()
x = images.repeat(1, 3, 1, 1)  # grey digits -> 3 channels
print("default taps:", default_taps(net))
info = tap_info(net, list(default_taps(net)) + ["layer1.1", "layer2.1", "layer3.1"], input_shape=(3, 32, 32))
display(pd.DataFrame([{"tap": t.name, "shape (C, H, W)": t.shape, "reduction": t.reduction}
                      for t in info.values()]))

TAPS = ["layer1.1", "layer2.1", "layer3.1"]
PAIRS = [("layer2.1", "layer3.1")]  # e.g. every stage takes the intra term, one inter pair
with torch.no_grad():
    taps = extract_taps(net, x, TAPS)
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
    loss = ce + 1.0 * out.total  # warm-up weight 1 here; see tffd_viz.losses.warmup_weight
    opt.zero_grad()
    loss.backward()
    opt.step()
    history.append({"epoch": step, "ce": ce.item(), "intra": {k: v.item() for k, v in out.intra.items()},
                    "inter": {k: v.item() for k, v in out.inter.items()},
                    "train_acc": 100.0 * float((logits.argmax(1) == labels).float().mean())})
net.eval()
plots.training_curves_figure({"resnet18 · Tf-FD": history},
                             title=f"resnet18 on one batch, {STEPS} SGD steps (x axis: step)").show()
'''),
    ("md", '''
## A checklist for a new architecture

1. List the candidate taps with `tap_info`: post-ReLU stage outputs with a spatial size of at least
   2x2 and at least 2 channels.
2. Compute the terms once (`tffd_terms_on_batch` or `TfFD`) and the gradient-norm share at the paper
   lambdas; scale the lambdas so the Tf-FD terms pull a modest fraction of the cross-entropy's
   gradient (`suggested_lambdas` above gives a starting value per stage).
3. Sweep around that value and over a few layer presets with several seeds
   (`tffd-viz sweep --lambda-intra ... --lambda-inter ... --layers all,last2 --seeds 0,1,2`) and
   compare the differences with the seed-to-seed spread.
4. Compare the chosen model with its baseline: `tffd-viz report --a baseline --b tffd`.
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
