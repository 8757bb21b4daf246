"""rednet-deploy: one entry point for export, parity, benchmarks and serving.

Exit codes: 0 success · 1 a check failed (parity outside tolerance) · 2 bad usage or bad input
(unknown model, unreadable checkpoint, invalid option) · 3 a required backend or library is missing.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from .errors import MissingBackend
from .native import LibraryNotFound

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_MISSING_BACKEND = 0, 1, 2, 3


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_models(args) -> int:
    import rednet
    for name, entry in rednet.MODELS.items():
        print(f"{name:20s} {entry.description}")
    return EXIT_OK


def cmd_export(args) -> int:
    from export import ExportOptions, export
    options = ExportOptions(model=args.model, checkpoint=args.checkpoint, precision=args.precision,
                            dynamic=args.dynamic, opset=args.opset, with_function=not args.no_function,
                            inline_function=args.inline_function, input_size=args.input_size)
    export(options, args.out, progress=_log)
    return EXIT_OK


def cmd_parity(args) -> int:
    from .parity import run_parity, write_report
    report = run_parity(args.model, checkpoint=args.checkpoint, precision=args.precision, batches=args.batch,
                        sizes=args.size, onnx_path=args.onnx, progress=_log)
    print(report.table())
    path = write_report(report, args.report or f"artifacts/parity/{args.model}.{args.precision}.json")
    _log(f"report: {path}")
    return EXIT_OK if report.passed else EXIT_CHECK_FAILED


def cmd_bench(args) -> int:
    from .bench import cpu, serve
    if args.target == "serve":
        serve.run(Path(args.out), model=args.model, threads=args.threads, progress=_log)
    else:
        cpu.run(Path(args.out), threads=args.threads, repeats=args.repeats, rounds=args.rounds, progress=_log)
    return EXIT_OK


def cmd_engine(args) -> int:
    from export import ExportOptions, default_output_path

    from .tensorrt_backend import build_engine, require_tensorrt
    onnx_path = Path(args.onnx or default_output_path(ExportOptions(args.model, precision=args.precision)))
    require_tensorrt()  # before anything else: the one-line "not installed" answer
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path} does not exist: run `make export MODEL={args.model} "
                                f"PRECISION={args.precision}` first or pass --onnx")
    out = args.out or f"artifacts/{args.model}.{args.precision}.plan"
    build_engine(onnx_path, out, precision=args.precision, min_batch=args.min_batch, opt_batch=args.opt_batch,
                 max_batch=args.max_batch, size=tuple(args.size), weakly_typed_fp16=args.weakly_typed_fp16,
                 timing_cache=args.timing_cache, progress=_log)
    return EXIT_OK


def cmd_serve(args) -> int:
    import logging

    import uvicorn

    from .serve.app import ServeConfig, create_app
    config = ServeConfig(model=args.model, backend=args.backend, onnx=args.onnx, engine=args.engine, host=args.host,
                         port=args.port, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                         max_queue=args.max_queue, timeout_ms=args.timeout_ms,
                         max_body_bytes=int(args.max_body_mb * (1 << 20)), token=args.token, threads=args.threads,
                         labels=args.labels)
    if not config.onnx_path.is_file():
        raise FileNotFoundError(f"{config.onnx_path} does not exist: run `make export MODEL={args.model}` first "
                                f"or pass --onnx")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning",
                timeout_graceful_shutdown=args.grace_s, access_log=False)
    return EXIT_OK


def cmd_triton_repo(args) -> int:
    from .triton_repo import write_repository
    out = write_repository(args.model, args.engine, args.out, onnx_path=args.onnx, max_batch=args.max_batch)
    _log(f"wrote Triton repository {out} (start it with {out}/launch.sh)")
    return EXIT_OK


def _env(name: str, default, cast=str):
    """Service settings: flag, else REDNET_SERVE_<NAME> from the environment, else the default."""
    import os
    value = os.environ.get(f"REDNET_SERVE_{name.upper()}")
    return default if value is None else cast(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rednet-deploy", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Deploy RedNet: export to ONNX, check parity, benchmark, serve.",
        epilog=textwrap.dedent("""\
            examples:
              rednet-deploy models
              rednet-deploy export rednet50 --checkpoint rednet50.pth            # artifacts/rednet50.onnx
              rednet-deploy export rednet50 --precision fp16 --dynamic all
              rednet-deploy parity rednet50 --checkpoint rednet50.pth             # table + JSON, exit 1 on FAIL

            exit codes: 0 ok, 1 check failed, 2 bad usage/input, 3 backend or library missing"""))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "export", help="export a model to ONNX (one rednet::Involution node per involution)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Export a registered RedNet to ONNX with torch.onnx (dynamo). Every involution becomes ONE node
            rednet::Involution (attributes kernel_size, stride, padding, dilation, groups; plugin_version and
            plugin_namespace route it to the TensorRT plugin). The file also carries a local function of the same
            name built from standard ops, so plain onnxruntime and onnx.reference run it; with the rednet ONNX
            Runtime library registered, the node runs on our kernel instead.

            Input 'input' (N, 3, H, W), output 'logits' (backbones: features_0..3). Batch is dynamic; with
            --dynamic all, H and W are too. Metadata records model, checkpoint sha256, options, preprocessing."""))
    p.add_argument("model", help="registered model name (see `rednet-deploy models`)")
    p.add_argument("--checkpoint", help="official mmcls checkpoint or our own state dict (.pth)")
    p.add_argument("--out", help="output path (default artifacts/<model>[.fp16].onnx); replaced atomically")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="fp16 makes weights, I/O and every Involution node fp16 (for strongly typed TensorRT)")
    p.add_argument("--dynamic", choices=["batch", "all"], default="batch", help="dynamic axes (default: batch)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset of the default domain (default 18)")
    p.add_argument("--no-function", action="store_true", help="omit the portable function body")
    p.add_argument("--inline-function", action="store_true",
                   help="replace every Involution node by its function body (standard ops only), for runtimes "
                        "that ignore model-local functions such as OpenVINO; default out artifacts/<model>.inlined.onnx")
    p.add_argument("--input-size", type=int, help="H=W used for tracing; fixed size when --dynamic batch")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "parity", help="compare every backend present against PyTorch; exit 1 outside tolerance",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Run the same fixed-seed inputs through PyTorch (fp32, the reference) and every backend present:
            onnxruntime (our custom-op library), onnxruntime-function (the portable function bodies) and tensorrt
            (when installed with a GPU). Prints a table and writes JSON with max abs / max rel error (relative to
            max |reference|), minimum cosine similarity and top-1 agreement per backend and case.

            tolerances: fp32  max|y - ref| <= 1e-4 * max|ref|
                        fp16  top-1 agreement >= 99 % and cosine >= 0.999 for every sample
            Without --onnx the model is exported (dynamic N/H/W) from the same weights first."""))
    p.add_argument("model", help="registered model name")
    p.add_argument("--checkpoint", help="checkpoint for PyTorch (and the export)")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    p.add_argument("--onnx", help="an exported file to check (must come from --checkpoint)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 3], help="batch sizes (default 1 3)")
    p.add_argument("--size", type=int, nargs="+", default=[224, 161], help="input sizes H=W (default 224 161)")
    p.add_argument("--report", help="JSON path (default artifacts/parity/<model>.<precision>.json)")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser(
        "bench", help="op and model benchmarks on the CPU runtimes (JSON + PNG under bench/results/)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            op:    RedNet-50's involution shapes: our kernel vs the PyTorch op vs the function body, effective GB/s
                   next to a copy of the same bytes, and GMAC/s next to an fp32 GEMM (same run, same threads)
            model: RedNet-50 vs ResNet-50, batch 1 and 8, on ONNX Runtime (our op; and function bodies),
                   PyTorch eager, torch.compile (freezing; compile time reported) and OpenVINO (inlined export),
                   all interleaved in the same --rounds; prints medians, spreads and paired latency ratios
            serve: the HTTP service: throughput and p50/p99 latency vs concurrency 1..64, batching on vs off"""))
    p.add_argument("target", nargs="?", choices=["runtime", "serve"], default="runtime",
                   help="runtime: op + model benchmarks (default); serve: the service")
    p.add_argument("--model", default="rednet50", help="model of the serve benchmark (default rednet50)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per op measurement (default 10)")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds of the model comparison, 3 runs of every candidate each (default 5)")
    p.add_argument("--out", default="bench/results", help="output folder (default bench/results)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "engine", help="build a TensorRT engine from the exported ONNX with our plugin (+ sidecar JSON)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Load librednet_trt_plugin.so, parse the ONNX (plugin override on, so rednet::Involution runs on our
            plugin, not its function body), build one optimisation profile from the batch bounds (and --size when
            H/W are dynamic) and write the plan plus <plan>.json: TensorRT version, GPU, plugin and ONNX sha256,
            precision, profile. Loading a plan later checks that sidecar.

            fp16: export with --precision fp16 and build from that file (strongly typed; TensorRT 11 has no
            weak typing). On TensorRT 10.x, --weakly-typed-fp16 lets the builder pick fp16 for an fp32 file."""))
    p.add_argument("model", help="registered model name (names the default ONNX and output paths)")
    p.add_argument("--onnx", help="ONNX file (default artifacts/<model>[.fp16].onnx)")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=8)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--size", type=int, nargs=3, default=[224, 224, 224], metavar=("MIN", "OPT", "MAX"),
                   help="H=W bounds when the ONNX has dynamic H/W (default 224 224 224)")
    p.add_argument("--out", help="plan path (default artifacts/<model>.<precision>.plan)")
    p.add_argument("--timing-cache", default="artifacts/timing.cache", help="persistent timing cache file")
    p.add_argument("--weakly-typed-fp16", action="store_true", help="TensorRT 10.x only: fp16 from an fp32 file")
    p.set_defaults(func=cmd_engine)

    p = sub.add_parser(
        "serve", help="HTTP inference service (KServe v2 / Open Inference Protocol, tritonclient-compatible)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Routes: /v2/health/live, /v2/health/ready, /v2/models/<model>[/ready], POST /v2/models/<model>/infer
            (JSON tensors or the binary-tensor extension), POST /v2/models/<model>/classify (JPEG/PNG in, top-k
            out), /metrics (Prometheus). Concurrent requests are batched up to --max-batch samples or
            --max-delay-ms; a full queue answers 503 with Retry-After. Every setting can also come from the
            environment as REDNET_SERVE_<SETTING> (e.g. REDNET_SERVE_TOKEN, REDNET_SERVE_PORT)."""))
    p.add_argument("model", help="registered model name")
    p.add_argument("--backend", choices=["onnxruntime", "tensorrt"], default=_env("backend", "onnxruntime"))
    p.add_argument("--onnx", default=_env("onnx", None), help="exported model (default artifacts/<model>.onnx)")
    p.add_argument("--engine", default=_env("engine", None), help="TensorRT plan (default artifacts/<model>.fp32.plan)")
    p.add_argument("--host", default=_env("host", "127.0.0.1"), help="bind address (default 127.0.0.1: local only)")
    p.add_argument("--port", type=int, default=_env("port", 8000, int))
    p.add_argument("--max-batch", type=int, default=_env("max_batch", 8, int), help="samples per backend call (1 = no batching)")
    p.add_argument("--max-delay-ms", type=float, default=_env("max_delay_ms", 5.0, float), help="wait for a fuller batch")
    p.add_argument("--max-queue", type=int, default=_env("max_queue", 256, int), help="queued requests before 503")
    p.add_argument("--timeout-ms", type=float, default=_env("timeout_ms", 30000.0, float), help="per-request timeout")
    p.add_argument("--max-body-mb", type=float, default=_env("max_body_mb", 64.0, float), help="request body limit")
    p.add_argument("--token", default=_env("token", None), help="require 'Authorization: Bearer <token>' (not on health)")
    p.add_argument("--threads", type=int, default=_env("threads", None, int), help="ONNX Runtime intra-op threads")
    p.add_argument("--labels", default=_env("labels", None), help="class names, one per line, for /classify")
    p.add_argument("--grace-s", type=float, default=_env("grace_s", 30.0, float), help="graceful shutdown limit")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("triton-repo", help="write a Triton model repository around an existing engine",
                       description="config.pbtxt (tensorrt_plan, dynamic batching, max_batch_size within the engine "
                                   "profile) + plan + plugin + launch.sh; with --onnx also an onnxruntime_onnx "
                                   "variant using our op library. Configs are validated with Triton's ModelConfig "
                                   "protobuf.")
    p.add_argument("model")
    p.add_argument("--engine", required=True, help="plan built by `make engine` (its sidecar gives the profile)")
    p.add_argument("--onnx", help="also write an onnxruntime_onnx variant of this file")
    p.add_argument("--out", default="artifacts/triton", help="repository folder (default artifacts/triton)")
    p.add_argument("--max-batch", type=int, help="max_batch_size (default: the engine profile's max batch)")
    p.set_defaults(func=cmd_triton_repo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (MissingBackend, LibraryNotFound) as e:
        _log(f"error: {e}")
        return EXIT_MISSING_BACKEND
    except (ValueError, FileNotFoundError) as e:  # CheckpointError is a ValueError
        _log(f"error: {e}")
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
