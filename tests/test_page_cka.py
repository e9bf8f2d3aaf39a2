"""AppTest of the CKA page: runs on the shipped digits models, reacts to its widgets,
shows the library's values."""

from __future__ import annotations

import numpy as np
from conftest import CHECKPOINTS, plotly_array

N_IMAGES = 32  # the page's own "Images" input (query parameter cka_n), not the sidebar batch


def tables(at) -> dict[str, np.ndarray]:
    """The three matrices of the "Numbers" expander, by the row-model column name."""
    out = {}
    for df, panel in zip([d.value for d in at.dataframe], ("AvA", "BvB", "AvB")):
        out[panel] = df.iloc[:, 1:].to_numpy(dtype=float)
    return out


def direct(at, **kw) -> dict:
    """layer_cka_matrices called directly on the models and images the page uses."""
    from tffd_viz.checkpoints import load_checkpoint
    from tffd_viz.data import sample_batch
    from tffd_viz.similarity import layer_cka_matrices

    models = [
        load_checkpoint(CHECKPOINTS / f"{at.selectbox(key=f'model-{s}').value}.safetensors")[0]
        for s in ("A", "B")
    ]
    images, _ = sample_batch("digits", "test", N_IMAGES, seed=0)
    return layer_cka_matrices(models[0], models[1], images, **kw)


def seed_values(at, **kw) -> dict[str, list[float]]:
    """Seed-to-seed CKA of every shipped seed of A's and of B's configuration, on the page's images."""
    from tffd_viz.checkpoints import list_checkpoints, load_checkpoint
    from tffd_viz.data import sample_batch
    from tffd_viz.verdicts import seed_cka, seed_siblings

    shipped = list_checkpoints(CHECKPOINTS)
    images, _ = sample_batch("digits", "test", N_IMAGES, seed=0)
    out: dict[str, list[float]] = {}
    for slot in ("A", "B"):
        card = load_checkpoint(CHECKPOINTS / f"{at.selectbox(key=f'model-{slot}').value}.safetensors")[1]
        models = [load_checkpoint(p)[0] for p in seed_siblings(card, shipped)]
        for layer, values in seed_cka(models, images, ["layer1", "layer2", "layer3"], **kw).items():
            out.setdefault(layer, []).extend(values)
    return out


def test_cka_page_values_and_widgets(app_at, assert_app_ok, chart_specs) -> None:
    at = app_at("cka", cka_n=N_IMAGES)
    assert_app_ok(at)
    charts = chart_specs(at)
    assert len(charts) == 2 and len(at.dataframe) == 4  # + the seed-to-seed reference and its verdicts
    got = tables(at)
    # default: linear, minibatch (always debiased), minibatch size 256 -> one minibatch of 32 images
    expected = direct(at, kind="linear", estimator="minibatch", batch_size=256)
    for panel in ("AvA", "BvB", "AvB"):
        np.testing.assert_allclose(got[panel], expected[panel][0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diag(got["AvA"]), np.ones(3), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["AvA"], got["AvA"].T, rtol=0, atol=1e-12)
    spec = charts[0]
    np.testing.assert_allclose(plotly_array(spec["data"][0]["z"]), expected["AvA"][0], rtol=0, atol=1e-12)
    assert [t["text"] for t in spec["layout"]["annotations"][:3]] == ["A vs A", "B vs B", "A vs B"]
    # the A-vs-B diagonal against the CKA between the shipped seeds of A's and B's configurations
    reference = charts[1]
    assert [t["name"] for t in reference["data"]] == ["seed to seed", "lowest seed-to-seed", "A vs B"]
    np.testing.assert_allclose(
        plotly_array(reference["data"][2]["y"]), np.diag(got["AvB"]), rtol=0, atol=1e-12
    )
    seeds = seed_values(at, kind="linear", estimator="minibatch", batch_size=256)
    np.testing.assert_allclose(
        plotly_array(reference["data"][1]["y"]), [min(seeds[t]) for t in seeds], atol=1e-12
    )
    verdicts = at.dataframe[3].value  # after the three matrices of "Numbers"
    assert verdicts["item"].tolist() == list(seeds) and verdicts["verdict"].str.len().min() > 0

    # RBF has no minibatch form: the page says so and uses the full-batch estimator
    at.radio(key="cka-kind").set_value("rbf").run()
    assert_app_ok(at)
    assert any("no streaming form" in i.value for i in at.info)
    expected = direct(at, kind="rbf", debiased=False, estimator="full", batch_size=256)
    np.testing.assert_allclose(tables(at)["AvB"], expected["AvB"][0], rtol=0, atol=1e-12)

    at.toggle(key="cka-debiased").set_value(True).run()
    assert_app_ok(at)
    expected = direct(at, kind="rbf", debiased=True, estimator="full", batch_size=256)
    debiased = tables(at)
    np.testing.assert_allclose(debiased["AvB"], expected["AvB"][0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diag(debiased["AvA"]), np.ones(3), rtol=0, atol=1e-12)

    # fewer layers of A, then B switched to A's checkpoint: A vs B equals A vs A
    at.multiselect(key="cka-layers-A").set_value(["layer1", "layer3"]).run()
    assert_app_ok(at)
    assert tables(at)["AvA"].shape == (2, 2) and tables(at)["AvB"].shape == (2, 3)
    at.selectbox(key="model-B").set_value(at.selectbox(key="model-A").value).run()
    assert_app_ok(at)
    same = tables(at)
    np.testing.assert_allclose(same["AvB"][:, [0, 2]], same["AvA"], rtol=0, atol=1e-12)


def test_cka_page_full_batch_linear_and_cap_message(app_at, assert_app_ok) -> None:
    at = app_at("cka", cka_n=N_IMAGES, cka_estimator="full")
    assert_app_ok(at)
    assert at.radio(key="cka-estimator").value == "full"
    assert any("at most" in c.value for c in at.caption)
    expected = direct(at, kind="linear", debiased=False, estimator="full", batch_size=256)
    for panel, matrix in tables(at).items():
        np.testing.assert_allclose(matrix, expected[panel][0], rtol=0, atol=1e-12)
    # the biased full-batch value is not the (debiased) minibatch one
    assert np.abs(tables(at)["AvB"] - direct(at)["AvB"][0]).max() > 1e-4
