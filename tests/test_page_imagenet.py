"""Every app page with a pair of 224-pixel torchvision ResNet-18s on a lazily decoded image folder (AppTest).

The pair is random-init (two seeds), saved in the project's format into a folder the sidebar lists through
``$TFFD_CHECKPOINTS``; the data is a tiny generated image-folder tree with a ``val/`` split.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import APP, declared_pages, plotly_array
from PIL import Image

from tffd_viz.checkpoints import save_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.models import create_model
from tffd_viz.similarity import channel_similarity_views

pytestmark = pytest.mark.slow
N = 4
PAIR = {"a": "inet_resnet18_baseline_s0", "b": "inet_resnet18_tffd_s1"}


@pytest.fixture(scope="module")
def imagenet_pair(tmp_path_factory) -> dict[str, str]:
    pytest.importorskip("streamlit")
    base = tmp_path_factory.mktemp("inet_app")
    rng = np.random.default_rng(0)
    for split, k in (("train", 2), ("val", 3)):
        for c in ("ant", "bee", "cat"):
            folder = base / "tree" / split / c
            folder.mkdir(parents=True)
            for i in range(k):
                small = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
                Image.fromarray(small).resize((96, 80), Image.BILINEAR).save(folder / f"{i}.png")
    for seed, name in enumerate(PAIR.values()):
        torch.manual_seed(seed)
        model = create_model("resnet18", num_classes=3)
        save_checkpoint(
            model, {"dataset": "imagefolder", "method": name.split("_")[2], "seed": seed}, base / "ck" / name
        )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TFFD_CHECKPOINTS", str(base / "ck"))
        yield {"root": str(base / "tree")}


def _run(page: str, root: str, **query: object):
    from streamlit.testing.v1 import AppTest

    assert f"app_pages/{page}.py" in declared_pages(), f"app_pages/{page}.py is not declared by {APP.name}"
    at = AppTest.from_file(str(APP), default_timeout=600)
    for key, value in {**PAIR, "n224": N, "dataset": "imagefolder", "root": root, **query}.items():
        at.query_params[key] = str(value)
    at.switch_page(f"app_pages/{page}.py")
    at.run()
    assert not at.exception, [str(e.value)[:500] for e in at.exception]
    assert not at.error, [str(e.value)[:500] for e in at.error]
    return at


@pytest.mark.parametrize(
    "page",
    [
        "overview",
        "ranking",
        "ranking_stability",
        "losses",
        "gradients",
        "attribution",
        "embeddings",
        "evolution",
    ],
)
def test_page_runs_on_the_imagenet_pair(imagenet_pair, page):
    at = _run(page, imagenet_pair["root"])
    if page != "evolution":  # random-init checkpoints have no training history to draw
        assert at.get("plotly_chart")
    assert at.slider(key="n").value == N and at.slider(key="n").max == 9  # the 9 images of val/


def test_feature_maps_are_56_by_56(imagenet_pair):
    import json

    at = _run("feature_maps", imagenet_pair["root"], feature_maps_layer="layer1")
    for chart in at.get("plotly_chart"):  # A and B: every tile is a 56x56 map
        assert {plotly_array(t["z"]).shape for t in json.loads(chart.proto.spec)["data"] if "z" in t} == {
            (56, 56)
        }


def test_similarity_matches_the_library_on_the_same_batch(imagenet_pair):
    import json

    at = _run("similarity", imagenet_pair["root"], similarity_layer="layer1")
    assert any("224x224" in str(c.value) for c in at.caption)
    drawn = plotly_array(json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]["z"])
    images, _ = sample_batch("imagefolder", "test", n=N, seed=0, root=imagenet_pair["root"], image_size=224)
    torch.manual_seed(0)
    view = channel_similarity_views(create_model("resnet18", num_classes=3).eval(), images, "layer1")
    order = view["order"].numpy() if hasattr(view["order"], "numpy") else np.asarray(view["order"])
    cosine = np.asarray(view["cosine"])
    assert drawn.shape == (64, 64)
    np.testing.assert_allclose(drawn, cosine[order][:, order], atol=1e-4)


def test_cka_says_how_it_computes_at_224(imagenet_pair):
    at = _run("cka", imagenet_pair["root"], cka_n=8)
    assert any("200,704" in str(i.value) and "Gram" in str(i.value) for i in at.info)
    assert at.get("plotly_chart")


def test_what_changed_measures_the_whole_split_only_when_asked(imagenet_pair):
    at = _run("what_changed", imagenet_pair["root"])
    assert any("Not measured yet" in str(c.value) for c in at.caption)
    at.toggle(key="what_changed-whole-split").set_value(True).run()
    assert not at.exception and not at.error, [str(e.value)[:300] for e in [*at.exception, *at.error]]
    assert any("(9 images)" in str(c.value) for c in at.caption)  # the 9 images of val/, at 224 pixels


def test_bench_imagenet_quick(tmp_path):
    from bench import load_benchmark
    from bench.common import Options

    result = load_benchmark("imagenet").run(Options(quick=True, device="cpu", threads=1, out=tmp_path))
    assert result["status"] == "ok" and all(c["ok"] for c in result["checks"]), result["checks"]
    rows = result["tables"][0]["rows"]
    assert rows[0]["seconds"] > 0 and all(r["peak_rss_mib"] > 100 for r in rows)
