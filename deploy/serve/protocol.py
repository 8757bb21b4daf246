"""KServe v2 / Open Inference Protocol tensors, JSON and the binary-tensor extension (what tritonclient sends)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

BINARY_HEADER = "Inference-Header-Content-Length"
DATATYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
             "UINT8": np.uint8, "INT8": np.int8, "BOOL": np.bool_}
NAMES = {np.dtype(v): k for k, v in DATATYPES.items()}
REQUEST_DATATYPES = ("FP32", "FP16")  # either is accepted and converted to the model's input type


class ProtocolError(ValueError):
    """A request that breaks the protocol or the model's signature (HTTP 400, message names the problem)."""
    status = 400


class LimitExceeded(ProtocolError):
    """A request over a limit the operator configured (HTTP 413, message names the limit and its flag)."""
    status = 413


@dataclass
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]  # -1 = any
    min_size: int = 1  # smallest value of a dynamic spatial dimension the model accepts

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(DATATYPES[self.datatype])


@dataclass
class InferRequest:
    id: str | None
    array: np.ndarray
    binary_output: bool


def _split_binary(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is None:
        json_part, rest = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(f"{BINARY_HEADER} '{header_length}' is not an integer") from None
        if not 0 <= n <= len(body):
            raise ProtocolError(f"{BINARY_HEADER} {n} is outside the body's {len(body)} bytes")
        json_part, rest = body[:n], body[n:]
    try:
        header = json.loads(json_part)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"request is not valid JSON: {e}") from None
    except RecursionError:
        raise ProtocolError("request JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"request must be a JSON object, got {type(header).__name__}")
    return header, rest


def _check_shape(shape, spec: TensorSpec) -> list[int]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ProtocolError(f"input '{spec.name}': shape must be a list of integers, got {shape!r}")
    if len(shape) != len(spec.shape) or shape[0] < 1:
        raise ProtocolError(f"input '{spec.name}': shape {shape} does not match {spec.shape}")
    for i, (d, want) in enumerate(zip(shape, spec.shape)):
        if want != -1 and d != want:
            raise ProtocolError(f"input '{spec.name}': shape {shape} does not match {spec.shape} (dimension {i})")
        if want == -1 and i > 0 and d < spec.min_size:
            raise ProtocolError(f"input '{spec.name}': dimension {i} of shape {shape} is {d}; the model needs at "
                                f"least {spec.min_size}")
    return shape


def _object(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be an object, got {type(value).__name__}")
    return value


def parse_infer(body: bytes, header_length: str | None, spec: TensorSpec, output_name: str,
                max_samples: int) -> InferRequest:
    header, binary = _split_binary(body, header_length)
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(f"'inputs' must be a list with exactly one tensor ('{spec.name}')")
    tensor = inputs[0]
    if tensor.get("name") != spec.name:
        raise ProtocolError(f"unknown input tensor {tensor.get('name')!r}; the model's input is '{spec.name}'")
    datatype = tensor.get("datatype")
    if datatype not in REQUEST_DATATYPES:
        raise ProtocolError(f"input '{spec.name}': datatype {datatype!r} is not supported "
                            f"({' or '.join(REQUEST_DATATYPES)})")
    shape = _check_shape(tensor.get("shape"), spec)
    if shape[0] > max_samples:
        raise LimitExceeded(f"input '{spec.name}': batch {shape[0]} exceeds the limit of {max_samples} samples "
                            f"per request (--max-request-samples)")
    dtype, count = np.dtype(DATATYPES[datatype]), int(np.prod(shape))
    params = _object(tensor.get("parameters"), f"input '{spec.name}': parameters")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not isinstance(size, int) or size != count * dtype.itemsize:
            raise ProtocolError(f"input '{spec.name}': binary_data_size {size!r} does not match shape {shape} of "
                                f"{datatype} ({count * dtype.itemsize} bytes)")
        if len(binary) != size:
            raise ProtocolError(f"input '{spec.name}': {len(binary)} bytes of binary data follow the header, "
                                f"binary_data_size says {size}")
        array = np.frombuffer(binary, dtype=dtype).reshape(shape)
    else:
        if binary:
            raise ProtocolError(f"{len(binary)} bytes of binary data follow the header but no input declares "
                                f"binary_data_size")
        data = tensor.get("data")
        if data is None:
            raise ProtocolError(f"input '{spec.name}': no 'data' and no binary_data_size")
        try:
            array = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError, RecursionError):
            raise ProtocolError(f"input '{spec.name}': 'data' must be numbers (flat or nested lists)") from None
        if array.size != count:
            raise ProtocolError(f"input '{spec.name}': 'data' has {array.size} values, shape {shape} needs {count}")
        with np.errstate(over="ignore"):
            array = array.reshape(shape).astype(dtype)  # out-of-range values become inf, refused below
    binary_output = bool(_object(header.get("parameters"), "'parameters'").get("binary_data_output", False))
    outputs = header.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise ProtocolError("'outputs' must be a list of objects")
        for o in outputs:
            if o.get("name") != output_name:
                raise ProtocolError(f"unknown output {o.get('name')!r}; the model's output is '{output_name}'")
            binary_output = bool(_object(o.get("parameters"), f"output '{output_name}': parameters")
                                 .get("binary_data", binary_output))
    request_id = header.get("id")
    with np.errstate(over="ignore"):
        array = array.astype(spec.dtype, copy=False)
    if not np.isfinite(array).all():
        raise ProtocolError(f"input '{spec.name}': data contains NaN or infinity, or values beyond the range of the "
                            f"model's {spec.datatype}")
    return InferRequest(str(request_id) if request_id is not None else None, array, binary_output)


def infer_response(model: str, request: InferRequest, output_name: str, output: np.ndarray) -> tuple[bytes, dict]:
    """Body and headers of the response (binary-tensor extension when the request asked for it)."""
    if not np.isfinite(output).all():
        # bare NaN/Infinity is not JSON, and a NaN logit is no answer either: refuse the input that caused it
        raise ProtocolError(f"output '{output_name}' is not finite for this input (values overflow the model's "
                            f"{NAMES[output.dtype]} arithmetic; the input's max |x| is "
                            f"{float(np.abs(request.array).max()):.4g})")
    out = {"name": output_name, "datatype": NAMES[output.dtype], "shape": list(output.shape)}
    response = {"model_name": model, "model_version": "1", "outputs": [out]}
    if request.id is not None:
        response["id"] = request.id
    if not request.binary_output:
        out["data"] = output.ravel().tolist()
        return json.dumps(response, allow_nan=False).encode(), {"content-type": "application/json"}
    raw = np.ascontiguousarray(output).tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(response).encode()
    return header + raw, {"content-type": "application/octet-stream", BINARY_HEADER: str(len(header))}
