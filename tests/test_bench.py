"""Smoke tests of the benchmark suite (``bench/``): every benchmark in a tiny quick mode.

These assert the structure of the results, the equality checks the benchmarks make, and values that can
be restated independently (CKA values, stored feature sizes, ratios derived from the medians, summary
statistics, peak memory of a known allocation). They never assert timings.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import BENCHMARKS, GPU_BENCHMARKS, load_benchmark
from bench.__main__ import main as bench_main
from bench.common import (
    BusyMachineError,
    MemoryProbe,
    Options,
    busy_reason,
    new_result,
    resolve_device,
    result_path,
    summary,
    target,
    write_result,
)
from bench.report import format_value, load_results, render_report, write_report
from tffd_viz.errors import TffdVizError

ROOT = Path(__file__).resolve().parents[1]

TINY: dict[str, dict] = {
    "train_step": {"repeats": 2, "warmup": 0, "batch_size": 8},
    "cka": {"n_images": 64, "minibatch": 16, "repeats": 1, "warmup": 1, "batch_size": 64},
    "extract": {"repeats": 2, "warmup": 0, "batch_size": 8},
    "scaling": {"sizes": [16, 32], "batch_size": 8, "repeats": 1},
    "cka_flat": {"n_minibatch": 32, "n_full": 16, "minibatch": 8, "batch_size": 16, "repeats": 1},
}


def tiny_options(name: str, out: Path, **extra: object) -> Options:
    return Options(
        quick=True,
        device="cpu",
        threads=1,
        out=out,
        overrides={**TINY.get(name, {}), **extra},
        command=f"pytest tiny {name}",
    )


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


def np_biased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Biased linear CKA from centred grams H K H (Kornblith et al. 2019), numpy float64."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float((k * l_).sum() / np.sqrt((k * k).sum() * (l_ * l_).sum()))


def np_hsic1(k: np.ndarray, l_: np.ndarray) -> float:
    """Unbiased HSIC_1 of Song et al. (2012), diagonals zeroed."""
    n = k.shape[0]
    k, l_ = k - np.diag(np.diag(k)), l_ - np.diag(np.diag(l_))
    one = np.ones(n)
    return float(
        (
            np.trace(k @ l_)
            + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ k @ l_ @ one)
        )
        / (n * (n - 3))
    )


def np_unbiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    k, l_ = x @ x.T, y @ y.T
    return np_hsic1(k, l_) / np.sqrt(np_hsic1(k, k) * np_hsic1(l_, l_))


def np_minibatch_cka(x: np.ndarray, y: np.ndarray, m: int) -> float:
    """HSIC_1 summed over consecutive minibatches of ``m`` (Nguyen et al. 2021), then normalised."""
    xy = xx = yy = 0.0
    for start in range(0, x.shape[0], m):
        k, l_ = x[start : start + m] @ x[start : start + m].T, y[start : start + m] @ y[start : start + m].T
        xy, xx, yy = xy + np_hsic1(k, l_), xx + np_hsic1(k, k), yy + np_hsic1(l_, l_)
    return xy / np.sqrt(xx * yy)


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
    with pytest.raises(ValueError, match="at least one sample"):
        summary([])


def test_target_verdicts() -> None:
    assert target("a", 1.04, "<=", 1.05)["passed"] is True
    assert target("a", 1.06, "<=", 1.05)["passed"] is False
    assert target("a", 0.9, ">=", 0.9)["passed"] is True
    assert target("a", 1.0, "<", 1.0)["passed"] is False
    assert target("a", None, "<", 1.0)["passed"] is None
    with pytest.raises(ValueError, match="target op must be one of"):
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


def test_resolve_device_uses_the_library_rule_and_measures_cpu_or_cuda_only() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(TffdVizError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():  # an explicit CUDA request is an error, not a silent CPU run
        with pytest.raises(ValueError, match="CUDA is not available here"):
            resolve_device("cuda")
    with pytest.raises(TffdVizError, match="mps"):
        resolve_device("mps")


def test_result_paths_name_the_device(tmp_path: Path) -> None:
    assert result_path("cka", "cpu", tmp_path) == tmp_path / "cka.json"
    assert result_path("cka", "cuda", tmp_path) == tmp_path / "cka-cuda.json"


def test_write_result_refuses_a_measurement_on_a_busy_machine(tmp_path: Path) -> None:
    result = new_result(
        "extract", "t", Options(quick=False, device="cpu", command="c"), torch.device("cpu"), {}
    )
    assert isinstance(result["machine"]["git_dirty"], bool) and len(result["machine"]["git_commit"]) == 40
    result["machine"].update(load_avg_1m=1.5, torch_threads=2, cpu_usable=2)
    with pytest.raises(BusyMachineError, match=r"1\.50 when extract started"):
        write_result(result, tmp_path, end_load=1.0)
    assert not (tmp_path / "extract.json").exists()
    result["machine"]["load_avg_1m"] = 0.4  # quiet at the start, but 3.5 > own share 2 + 1.0 at the end
    with pytest.raises(BusyMachineError, match=r"3\.50 when extract finished"):
        write_result(result, tmp_path, end_load=3.5)
    assert not (tmp_path / "extract.json").exists()
    path = write_result(result, tmp_path, end_load=2.9)
    assert json.loads(path.read_text())["load"] == {
        "start_1m": 0.4,
        "end_1m": 2.9,
        "max_1m": 1.0,
        "busy": None,
        "busy_allowed": False,
    }
    result["machine"]["load_avg_1m"] = 1.5
    written = json.loads(write_result(result, tmp_path, allow_busy=True, end_load=1.0).read_text())
    assert written["load"]["busy_allowed"] is True and "1.50" in written["load"]["busy"]
    assert busy_reason({**result, "quick": True}, end_load=9.0) is None  # smoke runs are not measurements
    assert busy_reason(result, max_load=2.0, end_load=1.0) is None


def test_cli_does_not_start_on_a_busy_machine_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.__main__ as cli
    import bench.common as common

    for module in (cli, common):  # the machine's load is the one input a test cannot set otherwise
        monkeypatch.setattr(module, "load_average_1m", lambda: 3.5)
    argv = [
        "extract",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--batch-size",
        "4",
        "--settle",
        "0",
    ]
    assert bench_main(argv) == 1
    assert not (tmp_path / "extract.json").exists()
    assert bench_main([*argv, "--allow-busy"]) == 0
    r = json.loads((tmp_path / "extract.json").read_text())
    assert r["quick"] is False and r["machine"]["load_avg_1m"] == 3.5
    assert r["load"]["busy_allowed"] is True and "3.50" in r["load"]["busy"]
    text = render_report(load_results(tmp_path))
    assert "(busy machine)" in text and "**busy**" in text


def test_gpu_benchmarks_import_only_core_modules() -> None:
    code = (
        "import sys; import bench.train_step, bench.cka, bench.cka_flat, bench.extract, bench.scaling, "
        "bench.profile_step, bench.report; "
        "print(sorted(m for m in ('streamlit', 'plotly', 'captum', 'pandas') if m in sys.modules))"
    )
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
        (f, v)
        for f in ("channels_last", "contiguous")
        for v in ("baseline", "baseline_logged", "tffd", "teacher_fitnets")
    ]
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
        assert first["tffd"]["loss"] == pytest.approx(
            first["tffd"]["ce"] + first["tffd"]["tffd_total"], abs=1e-5
        )
        assert first["tffd"]["tffd_total"] > 0
        kd = first["teacher_fitnets"]
        assert kd["loss"] == pytest.approx(kd["ce"] + 100.0 * kd["hint"], abs=1e-4)
        # a trained teacher's hint: the regressor's ReLU(BN) output against maps of mean square about 1
        assert 0.1 < kd["hint"] < 10.0, kd
        for v in ("baseline", "baseline_logged", "tffd", "teacher_fitnets"):
            losses = r["losses"][f"{fmt}/{v}"]
            assert len(losses) == 1 + 0 + 2 and all(math.isfinite(x) for x in losses), (v, losses)
    assert 0.1 < r["teacher"]["teacher_hint_mean_square"] < 10.0
    assert r["teacher"]["teacher_hint_mean_square"] == r["teacher"]["source_hint_mean_square"]
    assert "(train's)" in rows[0]["format"]  # channels_last is what train uses on the CPU
    assert len(r["checks"]) == 16


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
    installed = {
        pkg: importlib.util.find_spec(mod) is not None
        for pkg, mod in (("pytorch-cka", "cka"), ("ckatorch", "ckatorch"))
    }
    for name, row in rows.items():
        pkg = METHODS[name].package
        if pkg != "tffd_viz" and not installed[pkg]:
            assert row["status"].startswith("unavailable"), row["status"]
            continue
        assert row["status"] == "ok"
        ours = next(
            v
            for k, v in rows.items()
            if METHODS[k].group == row["group"] and METHODS[k].package == "tffd_viz"
        )
        diff = np.abs(np.array(row["heatmap"]) - np.array(ours["heatmap"])).max()
        assert row["max_abs_diff"] == pytest.approx(diff, abs=1e-15)
        assert row["equal"] and diff <= 1e-4
        assert math.isfinite(row["peak_mib"]) and row["memory_method"].startswith("peak RSS")
    assert sum(t["passed"] is not None for t in r["targets"]) == sum(
        any(
            METHODS[k].package != "tffd_viz" and rows[k]["status"] == "ok"
            for k in rows
            if METHODS[k].group == g
        )
        for g in ("minibatch", "full_biased", "full_unbiased")
    )

    # independent restatement of both estimators on the very same features
    s = settings_for(CKA_DEFAULTS, CKA_QUICK, tiny_options("cka", Path(".")))
    fa, fb, _, _, _ = heatmap_features(s, torch.device("cpu"))
    fa, fb = [f.numpy() for f in fa], [f.numpy() for f in fb]

    full = np.array(rows["tffd_viz linear_cka"]["heatmap"])
    mini = np.array(rows["tffd_viz MinibatchCKA"]["heatmap"])
    for i in range(3):
        for j in range(3):
            assert full[i, j] == pytest.approx(np_biased_cka(fa[i], fb[j]), abs=1e-10)
            assert mini[i, j] == pytest.approx(np_minibatch_cka(fa[i], fb[j], 16), abs=1e-10)


def test_cka_flat_values_memory_and_rows(tmp_path: Path) -> None:
    """The flattened-map comparison at tiny size: values against numpy, d and n in every row and target."""
    from bench.cka_flat import METHODS, Inputs, benchmark_models, shared_features
    from bench.inputs import benchmark_images

    r = load_benchmark("cka_flat").run(tiny_options("cka_flat", tmp_path))
    _check_common(r, "cka_flat")
    assert r["feature_dims"] == [
        16384,
        8192,
        4096,
    ]  # resnet8's stage maps on 32x32: 16x32x32, 32x16x16, 64x8x8
    rows = {row["implementation"]: row for row in _rows(r)}
    assert list(rows) == list(METHODS)
    installed = {
        pkg: importlib.util.find_spec(mod) is not None
        for pkg, mod in (("pytorch-cka", "cka"), ("ckatorch", "ckatorch"))
    }
    for name, row in rows.items():
        assert row["d"] == "16384/8192/4096" and row["n"] == (32 if row["group"] == "minibatch" else 16)
        if METHODS[name].package != "tffd_viz" and not installed[METHODS[name].package]:
            assert row["status"].startswith("unavailable")
            continue
        assert row["status"] == "ok" and row["median"] > 0
        tol = 1e-4 if "compute_cka" in name or ("after extraction" in name and "pytorch" in name) else 1e-10
        assert row["max_abs_diff"] <= tol, (name, row["max_abs_diff"])  # float32 peers within 1e-4
    for t in r["targets"]:
        assert "flattened d = 16384/8192/4096" in t["name"] and (
            "n = 32" in t["name"] or "n = 16" in t["name"]
        )
    # end to end through tffd_viz's extraction: both models' float32 maps of all n images are held at once
    stored = 2 * 32 * (16384 + 8192 + 4096) * 4
    if installed["ckatorch"]:
        assert rows["ckatorch cka_batch after extraction"]["peak_mib"] * 2**20 >= 0.9 * stored

    # independent restatement on the very same features
    s = r["settings"]
    imgs = benchmark_images(s["images"], 32, None)
    a, b, _ = benchmark_models(s, imgs.source, imgs.num_classes, imgs.images.shape[1], torch.device("cpu"))
    inp = Inputs(a, b, imgs.images, ["layer1", "layer2", "layer3"], 16, 8, True)
    fa, fb, _ = shared_features(inp, 32)
    fa, fb = [f.numpy() for f in fa], [f.numpy() for f in fb]
    mini = np.array(rows["tffd_viz MinibatchCKA"]["heatmap"])
    biased = np.array(rows["tffd_viz gram_linear + cka_from_grams"]["heatmap"])
    unbiased = np.array(rows["tffd_viz gram_linear + cka_from_grams debiased"]["heatmap"])
    for i in range(3):
        for j in range(3):
            assert mini[i, j] == pytest.approx(np_minibatch_cka(fa[i], fb[j], 8), abs=1e-10)
            assert biased[i, j] == pytest.approx(np_biased_cka(fa[i][:16], fb[j][:16]), abs=1e-10)
            assert unbiased[i, j] == pytest.approx(np_unbiased_cka(fa[i][:16], fb[j][:16]), abs=1e-10)


def test_extract_result(results: dict) -> None:
    r = results["extract"]
    _check_common(r, "extract")
    rows = {row["variant"]: row for row in _rows(r)}
    assert list(rows) == [
        "forward",
        "extract_taps",
        "extract_taps+logits",
        "forward (stream)",
        "extract_features (stream)",
    ]
    assert rows["forward"]["throughput_ratio"] == pytest.approx(1.0)
    assert rows["extract_taps"]["throughput_ratio"] == pytest.approx(
        rows["forward"]["median"] / rows["extract_taps"]["median"]
    )
    assert r["targets"][0]["value"] == pytest.approx(rows["extract_taps"]["throughput_ratio"])
    assert rows["forward (stream)"]["images"] == 8 * 2
    assert len(r["checks"]) == 3


def test_scaling_result(results: dict) -> None:
    from tffd_viz.models import create_model, tap_info

    r = results["scaling"]
    _check_common(r, "scaling")
    rows = _rows(r)
    assert [(row["what"], row["n"]) for row in rows] == [
        ("extract (stored)", 16),
        ("extract (stored)", 32),
        ("CKA streaming", 16),
        ("CKA streaming", 32),
    ]
    per_image = sum(
        int(np.prod(info.shape))
        for info in tap_info(create_model("resnet8", 10, 1), None, (1, 32, 32)).values()
    )
    for row in rows[
        :2
    ]:  # both models' full float32 maps, held when the call returns: the peak is at least that
        assert row["stored_mib"] * 2**20 == 2 * row["n"] * per_image * 4
        assert row["peak_mib"] >= 0.9 * row["stored_mib"], row
    for row in rows:
        assert row["median"] > 0
    assert r["targets"][0]["value"] == pytest.approx(
        (rows[3]["peak_mib"] * 2**20) / max(rows[2]["peak_mib"] * 2**20, 1.0)
    )


@pytest.mark.slow
def test_app_latency_quick(tmp_path: Path) -> None:
    pytest.importorskip("streamlit")
    r = load_benchmark("app_latency").run(
        Options(quick=True, device="cpu", threads=1, out=tmp_path, command="pytest tiny app_latency")
    )
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
    argv = [
        "extract",
        "--quick",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--batch-size",
        "4",
    ]
    assert bench_main(argv) == 0
    r = json.loads((tmp_path / "extract.json").read_text())
    assert r["command"] == "python -m bench " + " ".join(argv)
    assert r["settings"]["batch_size"] == 4 and r["settings"]["repeats"] == 1


def test_whatif_benchmark_times_three_arms_against_train_step(tmp_path: Path) -> None:
    r = load_benchmark("whatif").run(tiny_options("whatif", tmp_path))
    _check_common(r, "whatif")
    assert all(c["ok"] for c in r["checks"]), r["checks"]
    rows = {row["variant"]: row for row in _rows(r)}
    ref = rows["train_step (tffd)"]["median"]
    assert rows["whatif step (3 arms)"]["ratio"] == pytest.approx(
        rows["whatif step (3 arms)"]["median"] / ref
    )
    assert r["targets"][0]["value"] == pytest.approx(rows["whatif step (3 arms)"]["ratio"])
