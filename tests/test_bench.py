"""Smoke tests of the benchmark suite (``bench/``): every benchmark in a tiny quick mode.

These assert the structure of the results, the equality checks the benchmarks make, and values that can
be restated independently (CKA values, stored feature sizes, ratios derived from the medians, summary
statistics, peak memory of a known allocation). They never assert timings.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import BENCHMARKS, GPU_BENCHMARKS, load_benchmark
from bench.__main__ import main as bench_main
from bench.common import MemoryProbe, Options, result_path, summary, target, write_result
from bench.report import format_value, load_results, render_report, write_report

ROOT = Path(__file__).resolve().parents[1]

TINY: dict[str, dict] = {
    "train_step": {"repeats": 2, "warmup": 0, "batch_size": 8},
    "cka": {"n_images": 64, "minibatch": 16, "repeats": 1, "warmup": 1, "batch_size": 64},
    "extract": {"repeats": 2, "warmup": 0, "batch_size": 8},
    "scaling": {"sizes": [16, 32], "batch_size": 8, "repeats": 1},
}


def tiny_options(name: str, out: Path, **extra: object) -> Options:
    return Options(quick=True, device="cpu", threads=1, out=out, overrides={**TINY.get(name, {}), **extra},
                   command=f"pytest tiny {name}")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each GPU-relevant benchmark run once in tiny quick mode on the CPU (and written to a temp folder)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bench-results")
    done = {}
    for name in GPU_BENCHMARKS:
        result = load_benchmark(name).run(tiny_options(name, out))
        write_result(result, out)
        done[name] = result
    done["_out"] = out  # type: ignore[assignment]
    return done


def _rows(result: dict) -> list[dict]:
    return [row for tab in result["tables"] for row in tab["rows"]]


def _check_common(result: dict, name: str) -> None:
    assert result["benchmark"] == name
    assert result["quick"] is True and result["status"] == "ok"
    assert result["command"] == f"pytest tiny {name}"
    machine = result["machine"]
    assert machine["device"] == "cpu" and machine["torch"] == torch.__version__
    assert machine["torch_threads"] == 1 and machine["cpu"] and machine["cpu_usable"] >= 1
    assert all(c["ok"] for c in result["checks"]), [c for c in result["checks"] if not c["ok"]]
    for t in result["targets"]:
        assert t["passed"] in (True, False, None)
        if t["value"] is not None:
            assert t["passed"] == target(t["name"], t["value"], t["op"], t["threshold"])["passed"]
    json.dumps(result)  # every result is plain JSON


# --------------------------------------------------------------------------------------------------
# helpers of bench.common
# --------------------------------------------------------------------------------------------------


def test_summary_matches_numpy_percentiles() -> None:
    values = [0.5, 0.1, 0.4, 0.2, 0.9, 0.3]
    s = summary(values)
    assert s["median"] == pytest.approx(np.median(values))
    assert s["q1"] == pytest.approx(np.percentile(values, 25))
    assert s["q3"] == pytest.approx(np.percentile(values, 75))
    assert s["iqr"] == pytest.approx(np.percentile(values, 75) - np.percentile(values, 25))
    assert (s["min"], s["max"], s["n"]) == (0.1, 0.9, 6)
    with pytest.raises(ValueError):
        summary([])


def test_target_verdicts() -> None:
    assert target("a", 1.04, "<=", 1.05)["passed"] is True
    assert target("a", 1.06, "<=", 1.05)["passed"] is False
    assert target("a", 0.9, ">=", 0.9)["passed"] is True
    assert target("a", 1.0, "<", 1.0)["passed"] is False
    assert target("a", None, "<", 1.0)["passed"] is None
    with pytest.raises(ValueError):
        target("a", 1.0, "==", 1.0)


def test_memory_probe_sees_a_known_allocation() -> None:
    size = 64 * 2**20
    with MemoryProbe(torch.device("cpu")) as probe:
        block = torch.ones(size // 8, dtype=torch.float64)  # 64 MiB, touched
        del block
    assert probe.result["peak_bytes"] >= 0.9 * size, probe.result
    with MemoryProbe(torch.device("cpu")) as idle:
        pass
    assert idle.result["peak_bytes"] < 0.5 * size, idle.result


def test_result_paths_name_the_device(tmp_path: Path) -> None:
    assert result_path("cka", "cpu", tmp_path) == tmp_path / "cka.json"
    assert result_path("cka", "cuda", tmp_path) == tmp_path / "cka-cuda.json"


def test_gpu_benchmarks_import_only_core_modules() -> None:
    code = ("import sys; import bench.train_step, bench.cka, bench.extract, bench.scaling, bench.profile_step, "
            "bench.report; print(sorted(m for m in ('streamlit', 'plotly', 'captum', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------------
# the benchmarks
# --------------------------------------------------------------------------------------------------


def test_train_step_result(results: dict) -> None:
    r = results["train_step"]
    _check_common(r, "train_step")
    rows = _rows(r)
    assert [(row["format"].split()[0], row["variant"]) for row in rows] == [
        (f, v) for f in ("channels_last", "contiguous") for v in ("baseline", "baseline_logged", "tffd", "teacher_fitnets")]
    for fmt in ("channels_last", "contiguous"):
        fr = {row["variant"]: row for row in rows if row["format"].startswith(fmt)}
        base = fr["baseline"]["median"]
        for row in fr.values():
            assert row["median"] > 0 and row["stats"]["n"] == 2
            assert row["ratio"] == pytest.approx(row["median"] / base)
            assert row["images_per_s"] == pytest.approx(8 / row["median"])
        target_row = next(t for t in r["targets"] if fmt in t["name"])
        assert target_row["value"] == pytest.approx(fr["tffd"]["median"] / base)
        first = r["first_step"][fmt]
        assert first["tffd"]["loss"] == pytest.approx(first["tffd"]["ce"] + first["tffd"]["tffd_total"], rel=1e-6)
        assert first["tffd"]["tffd_total"] > 0
        assert first["teacher_fitnets"]["hint"] > 0
    assert "(train's)" in rows[0]["format"]  # channels_last is what train uses on the CPU
    assert len(r["checks"]) == 13


def test_cka_result_and_values(results: dict) -> None:
    from bench.cka import DEFAULTS as CKA_DEFAULTS
    from bench.cka import METHODS, heatmap_features
    from bench.cka import QUICK as CKA_QUICK
    from bench.common import settings_for

    r = results["cka"]
    _check_common(r, "cka")
    rows = {row["implementation"]: row for row in _rows(r)}
    assert list(rows) == list(METHODS)
    assert "digits" in r["images"] and r["taps"] == ["layer1", "layer2", "layer3"]
    installed = {pkg: importlib.util.find_spec(mod) is not None for pkg, mod in (("pytorch-cka", "cka"),
                                                                               ("ckatorch", "ckatorch"))}
    for name, row in rows.items():
        pkg = METHODS[name].package
        if pkg != "tffd_viz" and not installed[pkg]:
            assert row["status"].startswith("unavailable"), row["status"]
            continue
        assert row["status"] == "ok"
        ours = next(v for k, v in rows.items() if METHODS[k].group == row["group"] and METHODS[k].package == "tffd_viz")
        diff = np.abs(np.array(row["heatmap"]) - np.array(ours["heatmap"])).max()
        assert row["max_abs_diff"] == pytest.approx(diff, abs=1e-15)
        assert row["equal"] and diff <= 1e-4
        assert row["peak_mib"] >= 0
    assert sum(t["passed"] is not None for t in r["targets"]) == sum(
        any(METHODS[k].package != "tffd_viz" and rows[k]["status"] == "ok" for k in rows if METHODS[k].group == g)
        for g in ("minibatch", "full_biased", "full_unbiased"))

    # independent restatement of both estimators on the very same features
    s = settings_for(CKA_DEFAULTS, CKA_QUICK, tiny_options("cka", Path(".")))
    fa, fb, _, _, _ = heatmap_features(s, torch.device("cpu"))
    fa, fb = [f.numpy() for f in fa], [f.numpy() for f in fb]

    def biased(x: np.ndarray, y: np.ndarray) -> float:
        n = x.shape[0]
        h = np.eye(n) - np.ones((n, n)) / n
        k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
        return float((k * l_).sum() / np.sqrt((k * k).sum() * (l_ * l_).sum()))

    def hsic1(k: np.ndarray, l_: np.ndarray) -> float:  # Song et al. (2012), diagonals zeroed
        n = k.shape[0]
        k, l_ = k - np.diag(np.diag(k)), l_ - np.diag(np.diag(l_))
        one = np.ones(n)
        return float((np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
                      - 2 / (n - 2) * (one @ k @ l_ @ one)) / (n * (n - 3)))

    def minibatch(x: np.ndarray, y: np.ndarray, m: int) -> float:
        xy = xx = yy = 0.0
        for start in range(0, x.shape[0], m):
            k, l_ = x[start:start + m] @ x[start:start + m].T, y[start:start + m] @ y[start:start + m].T
            xy, xx, yy = xy + hsic1(k, l_), xx + hsic1(k, k), yy + hsic1(l_, l_)
        return xy / np.sqrt(xx * yy)

    full = np.array(rows["tffd_viz linear_cka"]["heatmap"])
    mini = np.array(rows["tffd_viz MinibatchCKA"]["heatmap"])
    for i in range(3):
        for j in range(3):
            assert full[i, j] == pytest.approx(biased(fa[i], fb[j]), abs=1e-10)
            assert mini[i, j] == pytest.approx(minibatch(fa[i], fb[j], 16), abs=1e-10)


def test_extract_result(results: dict) -> None:
    r = results["extract"]
    _check_common(r, "extract")
    rows = {row["variant"]: row for row in _rows(r)}
    assert list(rows) == ["forward", "extract_taps", "extract_taps+logits", "forward (stream)",
                          "extract_features (stream)"]
    assert rows["forward"]["throughput_ratio"] == pytest.approx(1.0)
    assert rows["extract_taps"]["throughput_ratio"] == pytest.approx(rows["forward"]["median"]
                                                                     / rows["extract_taps"]["median"])
    assert r["targets"][0]["value"] == pytest.approx(rows["extract_taps"]["throughput_ratio"])
    assert rows["forward (stream)"]["images"] == 8 * 2
    assert len(r["checks"]) == 3


def test_scaling_result(results: dict) -> None:
    from tffd_viz.models import create_model, tap_info

    r = results["scaling"]
    _check_common(r, "scaling")
    rows = _rows(r)
    assert [(row["what"], row["n"]) for row in rows] == [
        ("extract (stored)", 16), ("extract (stored)", 32), ("CKA streaming", 16), ("CKA streaming", 32)]
    per_image = sum(int(np.prod(info.shape)) for info in tap_info(create_model("resnet8", 10, 1), None,
                                                                  (1, 32, 32)).values())
    for row in rows[:2]:  # both models' full float32 maps
        assert row["stored_mib"] * 2**20 == 2 * row["n"] * per_image * 4
    for row in rows:
        assert row["peak_mib"] >= 0 and row["median"] > 0
    assert r["targets"][0]["value"] == pytest.approx(
        (rows[3]["peak_mib"] * 2**20) / max(rows[2]["peak_mib"] * 2**20, 1.0))


@pytest.mark.slow
def test_app_latency_quick(tmp_path: Path) -> None:
    pytest.importorskip("streamlit")
    r = load_benchmark("app_latency").run(Options(quick=True, device="cpu", threads=1, out=tmp_path,
                                                  command="pytest tiny app_latency"))
    assert [t["threshold"] for t in r["targets"]] == [10.0, 1.0, 0.2]
    if r["status"] != "ok":  # the app pages are still being written: the failure must be recorded
        assert r["status"].startswith("error") and not r["checks"][0]["ok"]
        assert all(t["passed"] is None for t in r["targets"])
        pytest.skip(f"the app does not run yet: {r['status'][:300]}")
    _check_common(r, "app_latency")
    rows = _rows(r)
    assert [row["step"] for row in rows] == ["start to first chart", "widget change (seed)", "cached redraw"]
    run = r["runs"][0]
    assert run["charts"] > 0 and run["start_to_first_chart"] >= run["first_run_s"] > 0
    assert rows[0]["median"] == pytest.approx(run["start_to_first_chart"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_step_on_cuda(tmp_path: Path) -> None:
    opts = tiny_options("train_step", tmp_path)
    opts.device = "cuda"
    r = load_benchmark("train_step").run(opts)
    assert r["machine"]["device_name"] == torch.cuda.get_device_name()
    assert all(c["ok"] for c in r["checks"])
    assert result_path("train_step", "cuda", tmp_path).name == "train_step-cuda.json"


# --------------------------------------------------------------------------------------------------
# report and command line
# --------------------------------------------------------------------------------------------------


def test_format_value() -> None:
    assert format_value(0.01234, "ms") == "12.34 ms"
    assert format_value(1.5, "s") == "1.500 s"
    assert format_value(1.04, "ratio") == "1.040x"
    assert format_value(None, "ms") == "–"
    assert format_value(True, "bool") == "yes"
    assert format_value(12345.6, "int") == "12,346"


def test_report_renders_every_result(results: dict, tmp_path: Path) -> None:
    out = results["_out"]
    loaded = load_results(out)
    assert [r["benchmark"] for r in loaded] == [n for n in BENCHMARKS if n in GPU_BENCHMARKS]
    text = render_report(loaded)
    for r in loaded:
        assert f"## {r['title']}" in text
        for t in r["targets"]:
            assert t["name"] in text
    assert text.count("Quick smoke run") == len(loaded)
    assert "**FAILED**" not in text
    verdicts = sum(1 for r in loaded for _ in r["targets"])
    assert text.count("**PASS**") + text.count("**MISS**") + text.count("| n/a |") >= 2 * verdicts
    path = write_report(out, tmp_path / "B.md")
    assert path.read_text().startswith("# Benchmarks")
    assert "No results yet" in render_report([])


def test_cli_report_and_unknown_name(results: dict, tmp_path: Path) -> None:
    output = tmp_path / "BENCH.md"
    assert bench_main(["report", "--results", str(results["_out"]), "--output", str(output)]) == 0
    assert "## Summary" in output.read_text()
    assert bench_main(["no_such_benchmark"]) == 2


def test_cli_runs_a_benchmark(tmp_path: Path) -> None:
    argv = ["extract", "--quick", "--device", "cpu", "--threads", "1", "--out", str(tmp_path), "--repeats", "1",
            "--warmup", "0", "--batch-size", "4"]
    assert bench_main(argv) == 0
    r = json.loads((tmp_path / "extract.json").read_text())
    assert r["command"] == "python -m bench " + " ".join(argv)
    assert r["settings"]["batch_size"] == 4 and r["settings"]["repeats"] == 1
