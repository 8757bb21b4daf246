"""The GPU check's data, report and plot from a recorded fake result, its arguments, and its behaviour on a machine
without a GPU (the GPU run itself is `make gpu-check`)."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from deploy import gpu_check
from deploy.native import REPO_ROOT
from deploy.bench.cpu import involution_shapes


def test_benchmark_shapes_are_rednet50s():
    shapes = [(s["x"][1], s["x"][2], s["x"][3], s["kernel_size"], s["stride"], s["groups"]) for s in involution_shapes()]
    assert shapes == gpu_check.REDNET50_SHAPES


def test_unfold_formulation_matches_the_op():
    from rednet.ops import involution
    x, w = torch.randn(2, 32, 9, 11, dtype=torch.float64), torch.randn(2, 2 * 49, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(gpu_check.unfold_involution(x, w, 7, 2, 3, 1, 2), involution(x, w, 7, 2, 3, 1, 2))


def test_sweep_cases_satisfy_the_contract():
    from rednet.ops import check_shapes
    for k, s, d, g, n, c, h, w in gpu_check.SWEEP:
        p = (k - 1) // 2 * d
        ho, wo = gpu_check.out_size(h, k, s, p, d), gpu_check.out_size(w, k, s, p, d)
        attrs = dict(kernel_size=k, stride=s, padding=p, dilation=d, groups=g, activation=0)
        assert tuple(check_shapes((n, c, h, w), (n, g * k * k, ho, wo), attrs)) == (n, c, ho, wo)


def test_arguments():
    args = gpu_check.parse_args([])
    assert (args.batches, args.model_batches, args.repeats, args.out_dir) == ((8, 32), (1, 8, 32), 20, "bench/results")
    args = gpu_check.parse_args(["--batches", "4,16", "--model-batches", "2", "--repeats", "5", "--build", "b"])
    assert (args.batches, args.model_batches, args.repeats, args.build) == ((4, 16), (2,), 5, "b")
    for bad in (["--batches", "8,x"], ["--batches", "0"], ["--model-batches", ""], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)


def test_gpu_names_become_file_names():
    assert gpu_check.gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia_h100_80gb_hbm3"
    assert gpu_check.gpu_slug("NVIDIA H200") == "nvidia_h200"
    assert gpu_check.gpu_slug("///") == "gpu"


# ---- a recorded fake result: what main() assembles on a GPU --------------------------------------------------

def bench_row(shape, batch, precision, us: dict) -> dict:
    c, h, w, k, s, g = shape
    row = {"x": [batch, c, h, w], "kernel_size": k, "stride": s, "groups": g, "batch": batch, "precision": precision,
           "bytes": 10 ** 7, "us": dict(us), "timing": {key: "cuda graph" for key in us}, "not_run": {}}
    row["gb_per_s"] = {key: row["bytes"] / v / 1e3 for key, v in us.items()}
    gpu_check.derive_ratios(row)
    return row


def fake_report(launcher_us=10.0, per_pixel_us=50.0, copy_us=8.0, rednet_ms=9.0) -> dict:
    bench = [bench_row(shape, batch, precision, {"launcher": launcher_us, "launcher_channels_last": launcher_us * 0.9,
                                                 "per_pixel": per_pixel_us, "copy": copy_us, "unfold": 200.0})
             for batch in (8, 32) for shape in gpu_check.REDNET50_SHAPES for precision in gpu_check.PRECISIONS]
    models = {"rows": [], "rednet50_over_resnet50": {"1": 1.4, "8": 1.1, "32": rednet_ms / 10.0}}
    return {"gpu": "NVIDIA H100 80GB HBM3", "targets": gpu_check.TARGETS, "bench": bench, "models": models,
            "kernel_parity": [{"passed": True}, {"passed": None, "not_run": "kernel K3S1 does not fit"}],
            "torch_op": [{"passed": True}], "plugin": {"passed": True}}


def test_derived_ratios():
    row = bench_row(gpu_check.REDNET50_SHAPES[1], 32, "fp16", {"launcher": 10.0, "per_pixel": 45.0, "copy": 8.0,
                                                                 "unfold": 300.0})
    assert row["speedup_over_per_pixel"] == pytest.approx(4.5) and row["speedup_over_unfold"] == pytest.approx(30)
    assert row["fraction_of_copy"]["launcher"] == pytest.approx(0.8)
    assert row["gb_per_s"]["launcher"] == pytest.approx(1000.0)  # 10 MB in 10 µs
    partial = bench_row(gpu_check.REDNET50_SHAPES[1], 32, "fp16", {"copy": 8.0})
    assert "speedup_over_per_pixel" not in partial and partial["fraction_of_copy"] == {}


def test_latency_ratios():
    rows = [{"model": "rednet50", "batch": 1, "ms": 3.0}, {"model": "resnet50", "batch": 1, "ms": 2.0},
            {"model": "resnet50", "batch": 32, "ms": 20.0}, {"model": "rednet50", "batch": 32, "ms": 18.0},
            {"model": "rednet50", "batch": 8, "ms": 5.0}]  # no ResNet-50 at batch 8: no ratio
    assert gpu_check.latency_ratios(rows) == {"1": pytest.approx(1.5), "32": pytest.approx(0.9)}


def test_targets_met():
    met = gpu_check.evaluate_targets(fake_report()["bench"], fake_report()["models"])
    assert met["large_layers_fp16_bs32_fraction_of_copy"]["met"] is True
    assert met["large_layers_fp16_bs32_fraction_of_copy"]["values"] == [pytest.approx(0.8)] * 4  # 56², 56², 28², 28²
    assert met["speedup_over_per_pixel"] == {"min_value": pytest.approx(5.0), "met": True}
    assert met["rednet50_over_resnet50_fp16_bs32"] == {"value": pytest.approx(0.9), "met": True}


@pytest.mark.parametrize("change,target", [
    (dict(launcher_us=12.0), "large_layers_fp16_bs32_fraction_of_copy"),  # 8/12 = 0.67 of copy
    (dict(per_pixel_us=39.0), "speedup_over_per_pixel"),  # 3.9×
    (dict(rednet_ms=10.5), "rednet50_over_resnet50_fp16_bs32"),
])
def test_each_target_can_be_missed(change, target):
    report = fake_report(**change)
    met = gpu_check.evaluate_targets(report["bench"], report["models"])
    assert met[target]["met"] is False
    assert all(v["met"] for k, v in met.items() if k != target)


def test_a_target_not_measured_is_neither_met_nor_missed():
    report = fake_report()
    for row in report["bench"]:
        del row["us"]["per_pixel"], row["speedup_over_per_pixel"]
    met = gpu_check.evaluate_targets(report["bench"], None)
    assert met["speedup_over_per_pixel"]["met"] is None and met["rednet50_over_resnet50_fp16_bs32"]["met"] is None


def test_large_layers_are_the_56_and_28_maps_at_fp16_batch_32():
    report = fake_report()
    for row in report["bench"]:
        if row["x"][2] == 112 or row["precision"] == "fp32" or row["batch"] == 8:
            row["fraction_of_copy"]["launcher"] = 0.1  # outside the target's rows
    assert gpu_check.evaluate_targets(report["bench"], report["models"])[
        "large_layers_fp16_bs32_fraction_of_copy"]["met"] is True


def test_parity_verdict():
    report = fake_report()
    assert gpu_check.parity_passed(report)  # a named kernel that does not fit its case does not fail it
    report["kernel_parity"].append({"passed": False})
    assert not gpu_check.parity_passed(report)
    report = fake_report()
    report["plugin"]["passed"] = False
    assert not gpu_check.parity_passed(report)
    report = fake_report()
    report["kernel_parity"] = [{"passed": None}]
    report["torch_op"] = []
    assert not gpu_check.parity_passed(report)  # nothing ran


def test_report_and_plot_are_written_under_the_gpus_name(tmp_path):
    report = fake_report()
    report["targets_met"] = gpu_check.evaluate_targets(report["bench"], report["models"])
    json_path, png_path = gpu_check.write_report(report, tmp_path)
    assert json_path.name == "gpu_check_nvidia_h100_80gb_hbm3.json" and png_path.suffix == ".png"
    assert json.loads(json_path.read_text())["targets"]["speedup_over_per_pixel"]["min"] == 4.0
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 20_000


def test_fails_fast_and_clearly_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the real check runs through `make gpu-check`")
    run = subprocess.run([sys.executable, "-m", "deploy.gpu_check"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 3 and "no CUDA GPU" in run.stderr


def test_make_target_fails_fast_without_a_gpu():
    if shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0:
        pytest.skip("a GPU is present: the real check runs through `make gpu-check`")
    run = subprocess.run(["make", "--no-print-directory", "gpu-check"], capture_output=True, text=True, timeout=60,
                         cwd=REPO_ROOT)
    assert run.returncode != 0 and "no NVIDIA GPU here" in run.stderr

