"""Shared fixtures and helpers of the tests: mostly for the Streamlit page tests (``tests/test_page_*.py``).

``app_at(page=None, n=32, **query)`` returns an :class:`~streamlit.testing.v1.AppTest` of ``app.py``
that has already run once, on ``page`` (default: the app's default page), with a small sample batch (the
sidebar slider ``n`` takes its start value from the ``n`` query parameter)::

    def test_ranking(app_at, assert_app_ok):
        at = app_at("ranking")                    # or "app_pages/ranking.py"
        assert_app_ok(at)
        assert at.get("plotly_chart")
        at.selectbox(key="layer-ranking").set_value("layer2").run()
        assert_app_ok(at)

``assert_app_ok(at)`` checks the last run (no exception, no ``st.error``); ``chart_specs(at)`` returns the drawn
plotly figures as raw dicts, ``chart_figures(at)`` as ``go.Figure`` objects (``fig.data[0].z`` a numpy array,
``fig.layout.title.text``).

Extra keyword arguments become query parameters before the first run: ``a=``/``b=`` pick the models by
checkpoint name (e.g. ``b="digits_resnet8_baseline_s1"``; by default A is ``digits_resnet8_baseline_s0``
and B ``digits_resnet8_tffd_s0`` or, while that one is not trained, the first shipped Tf-FD checkpoint),
``split="train"``, ``seed=1``, page-specific ones such as ``lambda_intra="0.001"``. Page tests skip when
the shipped checkpoints (or page files) they need are not in the tree.

Page tests import ``DEFAULT_MODELS`` (query parameters of the default models A and B), ``CHECKPOINTS`` and
``plotly_array`` (one array of a raw spec as numpy) with ``from conftest import ...``. Modules of small tensor tests
run on one torch thread with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = Path(os.environ.get("TFFD_VIZ_APP") or ROOT / "app.py")
"""The app under test (``TFFD_VIZ_APP`` may point at another main script, e.g. one declaring fewer pages)."""
CHECKPOINTS = ROOT / "checkpoints"
DEFAULT_TIMEOUT = 120.0


def page_path(page: str) -> str:
    """``"ranking"`` or ``"app_pages/ranking.py"`` -> ``"app_pages/ranking.py"`` (relative to app.py)."""
    if page.endswith(".py"):
        return page
    return f"app_pages/{page}.py"


def shipped(name: str) -> bool:
    """Whether the shipped checkpoint ``checkpoints/<name>.safetensors`` exists."""
    return (CHECKPOINTS / f"{name}.safetensors").is_file()


CIFAR_ROOT = os.environ.get("TFFD_DATA") or str(ROOT.parent / "shared" / "data")
"""Where the CIFAR tests look for the data: ``$TFFD_DATA``, else ``../shared/data`` beside the project."""
CIFAR_FILES = {"cifar10": ("cifar10.zip", "cifar10"), "cifar100": ("cifar100.zip", "cifar100-jpeg.npz", "cifar100")}


def cifar_pair(dataset: str) -> tuple[str, str]:
    """The shipped resnet20 pair ``(baseline, tffd)`` of ``dataset``, or ``pytest.skip`` where it or the data is absent."""
    pair = (f"{dataset}_resnet20_baseline_s0", f"{dataset}_resnet20_tffd_s0")
    if not all(shipped(name) for name in pair):
        pytest.skip(f"the {dataset} pair {pair} is not shipped yet")
    if not any((Path(CIFAR_ROOT) / f).exists() for f in CIFAR_FILES[dataset]):
        pytest.skip(f"no {dataset} files in {CIFAR_ROOT}")
    return pair


DEFAULT_MODELS: dict[str, str] = {} if shipped("digits_resnet8_tffd_s0") else {"b": "digits_resnet8_tffd-paper_s0"}
"""``app_at`` query parameters for the default models (A = digits_resnet8_baseline_s0, B = digits_resnet8_tffd_s0):
until the chosen-lambda Tf-FD checkpoint is shipped, B is the paper-lambda one."""


def declared_pages() -> list[str]:
    """The page files ``app.py`` declares with ``st.Page`` (relative to app.py)."""
    return re.findall(r"st\.Page\(\s*[\"']([^\"']+\.py)[\"']", APP.read_text())


def _require_app(page: str | None, models: tuple[str, ...]) -> None:
    pytest.importorskip("streamlit")
    absent_pages = [p for p in declared_pages() if not (APP.parent / p).is_file()]
    if absent_pages:
        pytest.skip(f"app.py declares pages not in the tree yet: {', '.join(absent_pages)}")
    if page is not None and not (APP.parent / page_path(page)).is_file():
        pytest.skip(f"{page_path(page)} is not in the tree yet")
    absent = [m for m in models if not shipped(m)]
    if absent:
        pytest.skip(f"shipped checkpoint(s) missing in {CHECKPOINTS}: {', '.join(absent)}")


@pytest.fixture
def app_at() -> Callable[..., object]:
    """Factory ``app_at(page=None, n=32, timeout=120, **query) -> AppTest`` (already run).

    Parameters
    ----------
    page : str, optional
        Page file (``"ranking"`` or ``"app_pages/ranking.py"``); the app's default page (overview) when None.
    n : int
        Sample-batch size (query parameter ``n``, picked up by the sidebar slider with key ``"n"``).
    timeout : float
        Seconds each ``run()`` may take (``AppTest(default_timeout=...)``).
    **query
        Further query parameters, set before the first run (values converted with ``str``).
    """
    from streamlit.testing.v1 import AppTest

    def make(page: str | None = None, n: int = 32, timeout: float = DEFAULT_TIMEOUT, **query: object):
        models = (str(query.get("a", "digits_resnet8_baseline_s0")),) + ((str(query["b"]),) if "b" in query else ())
        _require_app(page, models)
        if "b" not in query and not any(CHECKPOINTS.glob("*_tffd*.safetensors")):
            pytest.skip(f"no shipped Tf-FD checkpoint in {CHECKPOINTS} yet (model B)")
        at = AppTest.from_file(str(APP), default_timeout=timeout)
        at.query_params["n"] = str(n)
        for key, value in query.items():
            at.query_params[key] = str(value)
        if page is not None:
            # before the first run the page is found by its file name (app.py gives no custom url_path), so the
            # default page (overview) is not computed first
            at.switch_page(page_path(page))
        at.run()
        return at

    return make


def _messages(elements) -> list[str]:
    return [str(getattr(e, "value", e)) for e in elements]


@pytest.fixture
def assert_app_ok() -> Callable[[object], None]:
    """Checker ``assert_app_ok(at)``: the last run raised no exception and showed no ``st.error``."""

    def check(at) -> None:
        assert not at.exception, f"exceptions: {_messages(at.exception)}"
        assert not at.error, f"errors shown: {_messages(at.error)}"

    return check


@pytest.fixture
def chart_specs() -> Callable[[object], list[dict]]:
    """``chart_specs(at)``: the plotly figures the last run drew, as dicts ``{"data": [...], "layout": {...}}``."""
    import json

    def specs(at) -> list[dict]:
        return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]

    return specs


def decoded_spec(obj):
    """A plotly JSON spec with its typed arrays (``{"dtype", "bdata", "shape"}``) decoded to numpy arrays."""
    import base64

    import numpy as np

    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
            shape = obj.get("shape")
            if shape:
                arr = arr.reshape([int(v) for v in str(shape).split(",")])
            return arr
        return {k: decoded_spec(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decoded_spec(v) for v in obj]
    return obj


def plotly_array(value):
    """One array of a plotly JSON spec as numpy: a typed-array dict decoded (its dtype kept), a list as float."""
    import numpy as np

    decoded = decoded_spec(value)
    return decoded if isinstance(decoded, np.ndarray) else np.asarray(decoded, dtype=float)


@pytest.fixture
def chart_figures() -> Callable[[object], list]:
    """``chart_figures(at)``: the plotly figures the last run drew, as ``go.Figure`` (typed arrays decoded)."""
    import json

    import plotly.graph_objects as go

    def figures(at) -> list:
        return [go.Figure(decoded_spec(json.loads(el.proto.spec)), skip_invalid=True) for el in at.get("plotly_chart")]

    return figures


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op torch thread for a module's tests, restored afterwards.

    The tests use tiny tensors on a shared, busy 2-core machine, where two OpenMP threads spin-wait for each
    other and make them up to ~10x slower. Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
