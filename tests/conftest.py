"""Shared fixtures and helpers of the tests: mostly for the Streamlit page tests (``tests/test_page_*.py``).

``app_at(page=None, n=32, **query)`` returns an :class:`~streamlit.testing.v1.AppTest` of ``app.py``
that has already run once, on ``page`` (default: the app's default page), with a small sample batch (the
sidebar slider ``n`` takes its start value from the ``n`` query parameter)::

    def test_ranking(app_at, assert_app_ok):
        at = app_at("ranking")                    # or "app_pages/ranking.py"
        assert_app_ok(at)
        assert at.get("plotly_chart")
        at.selectbox(key="ranking-layer").set_value("layer2").run()
        assert_app_ok(at)

``assert_app_ok(at)`` checks the last run (no exception, no ``st.error``); ``chart_specs(at)`` returns the
drawn plotly figures as raw dicts, ``chart_figures(at)`` as ``go.Figure`` objects (``fig.data[0].z`` a numpy
array, ``fig.layout.title.text``).

Extra keyword arguments become query parameters before the first run: ``a=``/``b=`` pick the models by
checkpoint name (e.g. ``b="digits_resnet8_baseline_s1"``; by default A is ``digits_resnet8_baseline_s0``
and B ``digits_resnet8_tffd_s0``), ``split="train"``, ``seed=1``, page-specific ones (prefixed with the page's
name) such as ``losses_lambda_intra="0.001"``. A page file or shipped checkpoint that is missing fails the
test; only data absent from ``../shared`` (:func:`cifar_pair`) skips.

Page tests import ``CHECKPOINTS``, ``plotly_array`` (one array of a raw spec as numpy) and ``figure_titled``
(the drawn figure whose title starts so) with ``from conftest import ...``. Modules of small tensor tests
run on one torch thread with ``pytestmark = pytest.mark.usefixtures("single_thread")``. The checkpoint safety
tests import the malicious-pickle objects (``Gadget``, ``RunsShell``, ``OpensFile``, ``ExecsCode``) and their
control ``unpickle_without_restriction`` from here.
"""

from __future__ import annotations

import builtins
import gc
import io
import os
import pickle
import re
import shlex
import warnings
import zipfile
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
CIFAR_FILES = {
    "cifar10": ("cifar10.zip", "cifar10"),
    "cifar100": ("cifar100.zip", "cifar100-jpeg.npz", "cifar100"),
}


def cifar_pair(dataset: str) -> tuple[str, str]:
    """The shipped resnet20 pair ``(baseline, tffd)`` the app and notebooks compare on ``dataset``
    (:func:`tffd_viz.pairs.default_pair`: for cifar100 the paper's pair once finished, else ``cpu30``; one
    must be shipped), or ``pytest.skip`` where the data is absent from ``CIFAR_ROOT``."""
    from tffd_viz.checkpoints import list_checkpoints
    from tffd_viz.pairs import default_pair

    _, a, b = default_pair(dataset, {p.stem: card for p, card in list_checkpoints(CHECKPOINTS)})
    if not any((Path(CIFAR_ROOT) / f).exists() for f in CIFAR_FILES[dataset]):
        pytest.skip(f"no {dataset} files in {CIFAR_ROOT}")
    return a, b


def declared_pages() -> list[str]:
    """The page files ``app.py`` declares with ``st.Page`` (relative to app.py)."""
    return re.findall(r"st\.Page\(\s*[\"']([^\"']+\.py)[\"']", APP.read_text())


def _require_app(page: str | None, models: tuple[str, ...]) -> None:
    """Fail (not skip) when a page ``app.py`` declares, the page asked for
    or a shipped checkpoint is missing."""
    pytest.importorskip("streamlit")
    absent_pages = [p for p in declared_pages() if not (APP.parent / p).is_file()]
    assert not absent_pages, f"app.py declares pages missing in the tree: {', '.join(absent_pages)}"
    if page is not None:
        assert page_path(page) in declared_pages(), f"{page_path(page)} is not declared in {APP.name}"
    absent = [m for m in models if not shipped(m)]
    assert not absent, f"shipped checkpoint(s) missing in {CHECKPOINTS}: {', '.join(absent)}"


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
        models = (
            str(query.get("a", "digits_resnet8_baseline_s0")),
            str(query.get("b", "digits_resnet8_tffd_s0")),
        )
        _require_app(page, models)
        at = AppTest.from_file(str(APP), default_timeout=timeout)
        at.query_params["n"] = str(n)
        for key, value in query.items():
            at.query_params[key] = str(value)
        if page is not None:
            # before the first run the page is found by its file name (app.py gives no custom url_path), so
            # the default page (overview) is not computed first
            at.switch_page(page_path(page))
        at.run()
        return at

    return make


def figure_titled(figures: list, title_start: str):
    """The first of ``figures`` (``go.Figure``, from ``chart_figures``) whose title starts with
    ``title_start``; fails, listing the titles drawn, when there is none."""
    found = [f for f in figures if (f.layout.title.text or "").startswith(title_start)]
    assert found, f"no figure titled {title_start!r}: {[f.layout.title.text for f in figures]}"
    return found[0]


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
    """``chart_specs(at)``: the plotly figures the last run drew,
    as dicts ``{"data": [...], "layout": {...}}``."""
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
    """One array of a plotly JSON spec as numpy: a typed-array dict decoded (its dtype kept),
    a list as float."""
    import numpy as np

    decoded = decoded_spec(value)
    return decoded if isinstance(decoded, np.ndarray) else np.asarray(decoded, dtype=float)


@pytest.fixture
def chart_figures() -> Callable[[object], list]:
    """``chart_figures(at)``: the plotly figures the last run drew, as ``go.Figure``
    (typed arrays decoded)."""
    import json

    import plotly.graph_objects as go

    def figures(at) -> list:
        return [
            go.Figure(decoded_spec(json.loads(el.proto.spec)), skip_invalid=True)
            for el in at.get("plotly_chart")
        ]

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


# --------------------------------------------------------------------------------------- malicious pickles
class Gadget:
    """Pickles to ``fn(*args)``: what a malicious checkpoint runs when it is unpickled."""

    def __init__(self, fn: Callable[..., object], *args: object):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def touch_command(marker: Path) -> str:
    """A shell command that creates ``marker``."""
    return f"touch {shlex.quote(str(marker))}"


def creates_marker_source(marker: Path) -> str:
    """Python source that creates ``marker``."""
    return f"open({str(marker)!r}, 'w').close()"


class RunsShell(Gadget):
    """Pickles to ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path):
        super().__init__(os.system, touch_command(marker))


class OpensFile(Gadget):
    """Pickles to ``builtins.open(<marker>, "w")`` (creates the file when unpickled)."""

    def __init__(self, marker: Path):
        super().__init__(builtins.open, str(marker), "w")


class ExecsCode(Gadget):
    """Pickles to ``exec("open(<marker>, 'w').close()")``."""

    def __init__(self, marker: Path):
        super().__init__(builtins.exec, creates_marker_source(marker))


def unpickle_without_restriction(zip_bytes: bytes) -> object:
    """Unpickle a torch.save archive's ``data.pkl`` with the plain pickle module (tensor storages -> None).

    The control of the refusal tests: the gadgets in the archive run (tensors cannot be rebuilt without their
    storages, which fails after that and returns None).
    """
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        raw = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))

    class NoStorages(pickle.Unpickler):
        def persistent_load(self, pid):
            return None

    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", ResourceWarning
        )  # the file an OpensFile gadget opened is left to the GC
        try:
            result = NoStorages(io.BytesIO(raw)).load()
        except Exception:  # tensors cannot be rebuilt without storages; the gadget ran before that
            result = None
        gc.collect()
    return result
