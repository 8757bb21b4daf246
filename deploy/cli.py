"""rednet-deploy: one entry point for export, parity, benchmarks and serving.

Exit codes (EXIT_CODES, also in --help and the README): every user error is one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import signal
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingBackend
from .native import LibraryNotFound

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_MISSING_BACKEND, EXIT_ADDRESS_UNAVAILABLE = 0, 1, 2, 3, 4
EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 70, 128 + signal.SIGINT, 128 + signal.SIGTERM
EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_CHECK_FAILED: "a check failed (parity outside tolerance)",
    EXIT_BAD_INPUT: "bad usage or input: an argument, REDNET_SERVE_* setting, input file or output path",
    EXIT_MISSING_BACKEND: "a required backend or library is missing",
    EXIT_ADDRESS_UNAVAILABLE: "serve cannot listen: the port is in use or the address is not available",
    EXIT_INTERNAL_ERROR: "internal error (a bug: the traceback is printed; please report it)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); partial outputs are removed",
    EXIT_TERMINATED: "terminated (SIGTERM); partial outputs are removed",
}


class AddressUnavailable(OSError):
    """The service's address cannot be bound (port in use, address not on this host, no permission)."""


class Terminated(BaseException):
    """Raised by the SIGTERM handler so that cleanup (temporary files) runs as for Ctrl-C."""


@dataclass(frozen=True)
class InvalidSetting:
    """A REDNET_SERVE_* value that does not parse; reported (exit 2) only when the command that reads it runs."""
    variable: str
    value: str
    kind: str

    def __str__(self) -> str:
        return f"{self.variable}={self.value!r} is not a valid {self.kind}"


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
                            inline_function=args.inline_function, fuse_epilogue=not args.no_fuse_epilogue,
                            input_size=args.input_size)
    export(options, args.out, progress=_log)
    return EXIT_OK


def cmd_parity(args) -> int:
    from export import ExportOptions, default_output_path
    from rednet.fileio import check_output_path

    from .parity import run_parity, write_report
    report_path = check_output_path(args.report or f"artifacts/parity/{args.model}.{args.precision}.json")
    onnx_path = args.onnx
    if onnx_path is None and default_output_path(ExportOptions(args.model, precision=args.precision)).is_file():
        onnx_path = default_output_path(ExportOptions(args.model, precision=args.precision))  # what `make export` wrote
    report = run_parity(args.model, checkpoint=args.checkpoint, precision=args.precision, batches=args.batch,
                        sizes=args.size, onnx_path=onnx_path, progress=_log, tf32=args.tf32)
    print(report.table())
    path = write_report(report, report_path)
    _log(f"report: {path}")
    return EXIT_OK if report.passed else EXIT_CHECK_FAILED


def cmd_bench(args) -> int:
    from .bench import cpu, serve
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is not a directory")
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
    out = args.out or f"artifacts/{args.model}.{args.precision}{'.tf32' if args.tf32 else ''}.plan"
    build_engine(onnx_path, out, precision=args.precision, min_batch=args.min_batch, opt_batch=args.opt_batch,
                 max_batch=args.max_batch, size=tuple(args.size), weakly_typed_fp16=args.weakly_typed_fp16,
                 tf32=args.tf32, embed_plugin=args.embed_plugin, plugin_override=args.plugin_override,
                 timing_cache_dir=args.timing_cache_dir or None, progress=_log)
    return EXIT_OK


def cmd_serve(args) -> int:
    import logging

    from .serve.app import ServeConfig
    from .serve.server import serve
    token = args.token
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
        if not token:
            raise ValueError(f"token file {args.token_file} is empty")
    config = ServeConfig(model=args.model, backend=args.backend, onnx=args.onnx, engine=args.engine, host=args.host,
                         port=args.port, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                         max_queue=args.max_queue, timeout_ms=args.timeout_ms,
                         max_body_bytes=int(args.max_body_mb * (1 << 20)),
                         max_request_samples=args.max_request_samples, max_image_pixels=args.max_image_pixels,
                         workers=args.workers, drain_s=args.drain_s, token=token, threads=args.threads,
                         labels=args.labels)
    if not config.onnx_path.is_file():
        raise FileNotFoundError(f"{config.onnx_path} does not exist: run `make export MODEL={args.model}` first "
                                f"or pass --onnx")
    _check_can_listen(config.host, config.port)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    serve(config, grace_s=args.grace_s)
    return EXIT_OK


def cmd_triton_repo(args) -> int:
    from .triton_repo import write_repository
    out = write_repository(args.model, args.engine, args.out, onnx_path=args.onnx, max_batch=args.max_batch)
    _log(f"wrote Triton repository {out} (start it with {out}/launch.sh)")
    return EXIT_OK


def _env(name: str, default, cast=str):
    """Service settings: flag, else REDNET_SERVE_<NAME> from the environment, else the default."""
    import os
    variable = f"REDNET_SERVE_{name.upper()}"
    value = os.environ.get(variable)
    if value is None:
        return default
    try:
        return cast(value)
    except ValueError:
        return InvalidSetting(variable, value, cast.__name__)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _check_can_listen(host: str, port: int) -> None:
    """Bind the service's address once, as uvicorn will, before loading the model: a busy port is one line and
    exit 4 instead of uvicorn's own exit code after the model load."""
    import socket
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0..65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:  # in use, not an address of this host, unresolvable, privileged port
            raise AddressUnavailable(f"cannot listen on {host}:{port}: {e.strerror}") from None


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

            exit codes:
            """) + "\n".join(f"  {code:3d}  {meaning}" for code, meaning in EXIT_CODES.items()))
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
    p.add_argument("--opset", type=int, default=18, help="ONNX opset of the default domain, 18..23 (default 18)")
    p.add_argument("--no-function", action="store_true", help="omit the portable function body")
    p.add_argument("--no-fuse-epilogue", action="store_true",
                   help="keep the BatchNormalization and ReLU after each involution as separate nodes (by default "
                        "they are folded into the Involution node's scale/shift/activation)")
    p.add_argument("--inline-function", action="store_true",
                   help="replace every Involution node by its function body (standard ops only), for runtimes "
                        "that ignore model-local functions such as OpenVINO; default out artifacts/<model>.inlined.onnx")
    p.add_argument("--input-size", type=int,
                   help="H=W used for tracing, 32..4096; the fixed size when --dynamic batch (default 224)")
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
            Without --onnx it tests artifacts/<model>[.fp16].onnx (what `make export` writes) when that exists,
            else a dynamic N/H/W export of the same weights made for this run (not kept); the table and JSON say
            which. Sizes default to those the file accepts: its own H=W when fixed, 224 and 161 when dynamic."""))
    p.add_argument("model", help="registered model name")
    p.add_argument("--checkpoint", help="checkpoint for PyTorch (and the export)")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    p.add_argument("--onnx", help="an exported file to check (must come from --checkpoint; default "
                                  "artifacts/<model>[.fp16].onnx when it exists)")
    p.add_argument("--batch", type=_positive_int, nargs="+",
                   help="batch sizes (default 1 3, or the file's fixed batch)")
    p.add_argument("--size", type=_positive_int, nargs="+",
                   help="input sizes H=W (default 224 161 when H/W are dynamic, else the file's size)")
    p.add_argument("--report", help="JSON path (default artifacts/parity/<model>.<precision>.json)")
    p.add_argument("--tf32", action="store_true", help="build the TensorRT engine with TF32 (its own tolerance)")
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
    p.add_argument("--threads", type=_positive_int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--repeats", type=_positive_int, default=10, help="timed runs per op measurement (default 10)")
    p.add_argument("--rounds", type=_positive_int, default=5,
                   help="interleaved rounds of the model comparison, 3 runs of every candidate each (default 5)")
    p.add_argument("--out", default="bench/results", help="output folder (default bench/results)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "engine", help="build a TensorRT engine from the exported ONNX with our plugin (+ sidecar JSON)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Load librednet_trt_plugin.so (once; its creator Involution/1 must be registered), parse the ONNX (the
            nodes' plugin_namespace routes rednet::Involution to the plugin), refuse unless every such node became
            a plugin layer (exit 3), build one optimisation profile from the batch bounds (and --size when H/W are
            dynamic) and write the plan plus <plan>.json: TensorRT version, GPU, plugin and ONNX sha256, plugin
            layer count, precision, profile. Loading a plan later checks that sidecar. Needs TensorRT >= 10.7.

            fp32 engines compute in fp32 (TF32 cleared); --tf32 allows TF32 (parity holds it to its own tolerance).
            fp16: export with --precision fp16 and build from that file (strongly typed; TensorRT 11 has no weak
            typing). On TensorRT 10.x, --weakly-typed-fp16 lets the builder pick fp16 for an fp32 file.
            --embed-plugin (make engine TRITON=1) serialises the plugin into a version-compatible plan: the kind
            `make triton-repo` needs (plugins/tensorrt/README.md says why)."""))
    p.add_argument("model", help="registered model name (names the default ONNX and output paths)")
    p.add_argument("--onnx", help="ONNX file (default artifacts/<model>[.fp16].onnx)")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=8)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--size", type=int, nargs=3, default=[224, 224, 224], metavar=("MIN", "OPT", "MAX"),
                   help="H=W bounds when the ONNX has dynamic H/W (default 224 224 224)")
    p.add_argument("--out", help="plan path (default artifacts/<model>.<precision>[.tf32].plan)")
    p.add_argument("--timing-cache-dir", default="artifacts/timing_cache",
                   help="timing caches, one per TensorRT version, GPU and plugin build ('' for none)")
    p.add_argument("--tf32", action="store_true", help="fp32 engines: allow TF32 math (~1e-3 relative error)")
    p.add_argument("--weakly-typed-fp16", action="store_true", help="TensorRT 10.x only: fp16 from an fp32 file")
    p.add_argument("--embed-plugin", action="store_true",
                   help="serialise the plugin library into a version-compatible plan (for Triton)")
    p.add_argument("--plugin-override", action="store_true",
                   help="set the parser's ENABLE_PLUGIN_OVERRIDE (any registered plugin replaces a same-named op; "
                        "not needed for our nodes)")
    p.set_defaults(func=cmd_engine)

    p = sub.add_parser(
        "serve", help="HTTP inference service (KServe v2 / Open Inference Protocol, tritonclient-compatible)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Routes: /v2/health/live, /v2/health/ready, /v2/models/<model>[/ready|/config], POST
            /v2/models/<model>/infer (JSON tensors or the binary-tensor extension, FP32 or FP16), POST
            /v2/models/<model>/classify (JPEG/PNG in, top-k ImageNet class names out), /metrics (Prometheus).
            Concurrent requests are batched up to --max-batch samples or --max-delay-ms; a full queue answers 503
            with Retry-After. Requests over a limit (--max-body-mb, --max-request-samples, --max-image-pixels) get
            413. SIGTERM: --drain-s of not-ready + 503 Connection: close, then a graceful stop. It logs the address
            it listens on. Every setting can also come from the environment as REDNET_SERVE_<SETTING> (e.g.
            REDNET_SERVE_TOKEN, REDNET_SERVE_PORT)."""))
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
    p.add_argument("--max-body-mb", type=float, default=_env("max_body_mb", 64.0, float),
                   help="request body limit, every route and encoding (default 64)")
    p.add_argument("--max-request-samples", type=int, default=_env("max_request_samples", None, int),
                   help="samples one request may carry (default --max-batch); more get 413")
    p.add_argument("--max-image-pixels", type=int, default=_env("max_image_pixels", 40_000_000, int),
                   help="pixels of one /classify upload, checked before decoding (default 40000000); more get 413")
    p.add_argument("--workers", type=int, default=_env("workers", 2, int),
                   help="worker processes that parse requests and decode images (default 2)")
    p.add_argument("--drain-s", type=float, default=_env("drain_s", 2.0, float),
                   help="after SIGTERM: seconds of not-ready + 503 Connection: close before stopping (default 2)")
    p.add_argument("--token", default=_env("token", None),
                   help="require 'Authorization: Bearer <token>' (not on health); visible in ps: prefer "
                        "REDNET_SERVE_TOKEN or --token-file")
    p.add_argument("--token-file", default=_env("token_file", None), help="read the bearer token from this file")
    p.add_argument("--threads", type=int, default=_env("threads", None, int), help="ONNX Runtime intra-op threads")
    p.add_argument("--labels", default=_env("labels", None), help="class names, one per line, for /classify")
    p.add_argument("--grace-s", type=float, default=_env("grace_s", 30.0, float), help="graceful shutdown limit")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("triton-repo", help="write a Triton model repository around an existing engine",
                       description="config.pbtxt (tensorrt_plan, dynamic batching, max_batch_size within the engine "
                                   "profile) + plan + launch.sh (Triton's version-compatible mode, which loads the "
                                   "plugin the plan carries: build the engine with `make engine TRITON=1`); with "
                                   "--onnx also an onnxruntime_onnx variant using our op library. Configs are "
                                   "validated with Triton's ModelConfig protobuf. Written to a temporary folder "
                                   "and moved into place: a failure leaves no partial repository.")
    p.add_argument("model")
    p.add_argument("--engine", required=True,
                   help="plan built by `make engine TRITON=1` (its sidecar gives the profile)")
    p.add_argument("--onnx", help="also write an onnxruntime_onnx variant of this file")
    p.add_argument("--out", default="artifacts/triton", help="repository folder (default artifacts/triton)")
    p.add_argument("--max-batch", type=int, help="max_batch_size (default: the engine profile's max batch)")
    p.set_defaults(func=cmd_triton_repo)
    return parser


def _terminate(signum, frame):
    raise Terminated()


def _exit_code(error: Exception) -> int:
    """The exit code of an exception a command raised; EXIT_INTERNAL_ERROR for anything unexpected (a bug)."""
    from google.protobuf.message import DecodeError
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    from .tensorrt_backend import EngineMismatch
    if isinstance(error, (MissingBackend, LibraryNotFound)):
        return EXIT_MISSING_BACKEND
    if isinstance(error, AddressUnavailable):
        return EXIT_ADDRESS_UNAVAILABLE
    # ValueError: bad values, CheckpointError, malformed JSON; OSError: files that cannot be read or written
    # (missing, a directory, no permission, read-only, disk full: OutputPathError); EngineMismatch: a plan built
    # elsewhere; DecodeError and ONNX Runtime's model errors: a file given as a model that is none.
    if isinstance(error, (ValueError, OSError, EngineMismatch, DecodeError, ort_errors.InvalidProtobuf,
                          ort_errors.NoSuchFile, ort_errors.InvalidGraph)):
        return EXIT_BAD_INPUT
    return EXIT_INTERNAL_ERROR


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    invalid = [value for value in vars(args).values() if isinstance(value, InvalidSetting)]
    if invalid:
        _log(f"error: {invalid[0]}")
        return EXIT_BAD_INPUT
    # The service has its own SIGTERM handling (drain); every other command turns SIGTERM into an exception so that
    # partial outputs are removed on the way out, as for Ctrl-C.
    handle_sigterm = args.command != "serve" and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if handle_sigterm else None
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _log("interrupted")
        return EXIT_INTERRUPTED
    except Terminated:
        _log("terminated")
        return EXIT_TERMINATED
    except Exception as e:
        code = _exit_code(e)
        if code == EXIT_INTERNAL_ERROR:
            import traceback
            traceback.print_exc()
            _log(f"error: internal error ({type(e).__name__}): please report it with the traceback above")
        else:
            _log(f"error: {e}")
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
