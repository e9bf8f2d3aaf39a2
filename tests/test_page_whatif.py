"""AppTest of the Try lambdas page: defaults from the Losses page's query parameters,
a run with its progress and the final comparison (equal to the library's),
a stopped run keeping what was done, the link from Losses."""

from __future__ import annotations

import math

import pytest
from conftest import CHECKPOINTS, CIFAR_ROOT, cifar_pair

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import load_dataset
from tffd_viz.whatif import ARM_LABELS, ARMS, WhatIf, WhatIfConfig, default_steps, train_command

pytestmark = pytest.mark.usefixtures("single_thread")
QUERY = {
    "whatif_lambda_intra": "1.0",
    "whatif_lambda_inter": "0.0",
    "whatif_stages": "layer2,layer3",
    "whatif_pairs": "",
}
CONFIG = WhatIfConfig(
    lambda_intra=1.0, lambda_inter=0.0, stages=("layer2", "layer3"), pairs=(), steps=3, lr=0.01, heldout_n=48
)


def library_run(steps: int | None = None) -> WhatIf:
    model, card = load_checkpoint(str(CHECKPOINTS / "digits_resnet8_baseline_s0.safetensors"))
    w = WhatIf(model, load_dataset("digits"), CONFIG, card=card)
    list(w.run(steps))
    return w


def set_small(at) -> None:
    at.number_input(key="whatif-steps").set_value(3)
    at.number_input(key="whatif-heldout").set_value(48)


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == pytest.approx(b, rel=1e-6) if isinstance(b, float) else a == b


def test_whatif_reads_the_losses_choices_runs_and_states_the_answer(app_at, assert_app_ok, chart_figures):
    at = app_at("whatif", n=16, **QUERY)
    assert_app_ok(at)
    assert at.title[0].value == "Try lambdas"
    assert at.number_input(key="whatif-li").value == 1.0 and at.number_input(key="whatif-le").value == 0.0
    assert at.multiselect(key="whatif-stages").value == ["layer2", "layer3"]
    assert at.multiselect(key="whatif-pairs").value == []
    assert at.number_input(key="whatif-lr").value == pytest.approx(0.01)  # a tenth of the digits recipe's 0.1
    assert any("Press **Run**" in i.value or "press **Run**" in i.value for i in at.info)
    set_small(at)
    at.button(key="whatif-start").click().run()
    assert_app_ok(at)
    progress = at.get("progress")[0].proto
    assert progress.value == 100 and progress.text.startswith("step 3 of 3 per arm")
    w = library_run()
    result = w.result()
    assert at.code[0].value == train_command(w.settings) == result["command"]
    assert "--stages layer2,layer3 --pairs none" in at.code[0].value
    answer = next(m.value for m in at.markdown if m.value.startswith("- After 3 steps"))
    assert "layer2 intra term (held-out)" in answer and "noise floor" in answer
    table = next(d.value for d in at.dataframe if "beyond_noise" in d.value.columns)
    assert len(table) == len(result["comparison"])
    for got, want in zip(table.to_dict("records"), result["comparison"], strict=True):
        assert all(
            same(got[k], want[k]) for k in ("quantity", "control", "tffd", "control2", "change", "noise")
        ), (got, want)
    curves = next(f for f in chart_figures(at) if f.layout.title.text.startswith("What-if: training curves"))
    ce = {t.name: list(t.y) for t in curves.data if t.xaxis == "x"}  # the first panel: cross-entropy
    for arm in ARMS:
        assert ce[ARM_LABELS[arm]] == pytest.approx([r["ce"] for r in w.rows if r["arm"] == arm], rel=1e-6)
    assert {t.name for t in curves.data} == set(ARM_LABELS.values())
    # Cancel after the run: a plain rerun that keeps the results
    at.button(key="whatif-cancel").click().run()
    assert_app_ok(at)
    assert at.get("progress")[0].proto.value == 100 and at.code[0].value == result["command"]
    assert (
        at.query_params["whatif_lambda_intra"] == "1.0"
        and at.query_params["whatif_stages"] == "layer2,layer3"
    )
    assert at.query_params["whatif_steps"] == "3" and at.query_params["whatif_heldout"] == "48"


def test_steps_and_heldout_images_come_from_the_url_clamped_to_their_ranges(app_at, assert_app_ok):
    at = app_at("whatif", n=16, whatif_steps="7", whatif_heldout="3")
    assert_app_ok(at)
    assert at.number_input(key="whatif-steps").value == 7
    assert at.number_input(key="whatif-heldout").value == 8  # the least the what-if takes
    at = app_at("whatif", n=16, whatif_steps="many")
    assert at.number_input(key="whatif-steps").value == default_steps("digits")  # not a number: the default


def test_a_stopped_run_keeps_its_steps_and_compares_at_that_step(app_at, assert_app_ok):
    at = app_at("whatif", n=16, **QUERY)
    set_small(at)
    at.run()
    partial = library_run(steps=1)  # what a Cancel during step 2 leaves in the session
    at.session_state["whatif-run"] = partial
    at.run()
    assert_app_ok(at)
    assert at.get("progress")[0].proto.value == 33
    assert any("Stopped after 1 of 3 steps" in w.value for w in at.warning)
    table = next(d.value for d in at.dataframe if "beyond_noise" in d.value.columns)
    want = partial.result()["comparison"]
    assert [same(a, b) for a, b in zip(table["tffd"], [r["tffd"] for r in want], strict=True)] == [
        True
    ] * len(want)


def test_the_losses_page_links_to_the_whatif_with_its_choices(app_at, assert_app_ok):
    at = app_at(
        "losses", n=16, losses_lambda_intra="0.01", losses_stages="layer3", losses_pairs="layer1->layer2"
    )
    assert_app_ok(at)
    links = [e.proto for e in at.get("page_link") if "whatif" in e.proto.page]
    assert links, "no link to the Try lambdas page"
    query = links[0].query_string
    assert "whatif_lambda_intra=0.01" in query and "whatif_stages=layer3" in query and "losses_" not in query


@pytest.mark.slow
@pytest.mark.data
def test_whatif_runs_on_a_shipped_cifar_pair(app_at, assert_app_ok):
    a, b = cifar_pair("cifar10")
    at = app_at(
        "whatif",
        a=a,
        b=b,
        n=16,
        root=CIFAR_ROOT,
        timeout=600,
        whatif_lambda_intra="0.01",
        whatif_lambda_inter="0.01",
    )
    assert_app_ok(at)
    assert at.number_input(key="whatif-lr").value == pytest.approx(
        0.015
    )  # a tenth of the cpu30 recipe's 0.15
    at.number_input(key="whatif-steps").set_value(1)
    at.number_input(key="whatif-heldout").set_value(16)
    at.button(key="whatif-start").click().run()
    assert_app_ok(at)
    assert at.get("progress")[0].proto.value == 100
    assert "--recipe cpu30 --arch resnet20 --dataset cifar10" in at.code[0].value
    table = next(d.value for d in at.dataframe if "beyond_noise" in d.value.columns)
    assert set(table["quantity"]) >= {"accuracy", "intra layer3", "inter layer2->layer3 (relative)"}
