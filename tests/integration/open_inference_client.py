"""A lab system's Open Inference Protocol client: runs a plan of calls with the official tritonclient.

Run by tests/integration/test_open_inference.py with the Python of a virtual
environment of its own (tritonclient wants protobuf < 7, LabSight >= 7), as
an external system would: ``python open_inference_client.py PLAN.json OUT_DIR``.
It imports nothing of LabSight. The plan names the server (``url``), call
metadata (``headers``) and ``steps``; each step's answer, or its error's gRPC
status and message, goes to OUT_DIR/results.json in order, and output arrays
to OUT_DIR/<step>-<output>.npy.

Steps (``op``):
  live          server live and ready
  server        server metadata
  index         the repository index
  model         ready and metadata of ``name`` (``version``)
  infer         ModelInfer through tritonclient (raw_input_contents): ``model``,
                ``version``, ``inputs`` [{name, datatype, npy}], ``outputs`` (names or absent)
  typed_infer   the same request with typed contents, through tritonclient's generated stub
  raw_request   a hand-made ModelInferRequest: ``model``, ``inputs`` [{name, datatype, shape,
                raw_bytes | fp32_count | fp64_count}], ``outputs``
  describe      tritonclient's own grpc_service.proto (its serialized FileDescriptorProto)
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

TYPED_FIELDS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents",
                "INT64": "int64_contents", "UINT8": "uint_contents", "BOOL": "bool_contents"}


class Plan:
    """Runs the steps of a plan against one server."""

    def __init__(self, plan: dict[str, Any], out_dir: Path) -> None:
        self.url = plan["url"]
        self.headers = plan.get("headers") or None
        self.out_dir = out_dir
        self.client = triton.InferenceServerClient(self.url)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(self.url))

    def run(self, index: int, step: dict[str, Any]) -> dict[str, Any]:
        """One step's answer, or its error as {"error": {"code", "message"}}."""
        try:
            return getattr(self, f"op_{step['op']}")(index, step)
        except InferenceServerException as error:
            return {"error": {"code": str(error.status()).removeprefix("StatusCode."),
                              "message": error.message()}}
        except grpc.RpcError as error:
            return {"error": {"code": error.code().name, "message": error.details()}}

    def op_live(self, index: int, step: dict[str, Any]) -> dict[str, Any]:
        return {"live": self.client.is_server_live(headers=self.headers),
                "ready": self.client.is_server_ready(headers=self.headers)}

    def op_server(self, index: int, step: dict[str, Any]) -> dict[str, Any]:
        return self.client.get_server_metadata(headers=self.headers, as_json=True)

    def op_index(self, index: int, step: dict[str, Any]) -> dict[str, Any]:
        return self.client.get_model_repository_index(headers=self.headers, as_json=True)

    def op_model(self, index: int, step: dict[str, Any]) -> dict[str, Any]:
        version = step.get("version", "")
        return {
            "ready": self.client.is_model_ready(step["name"], version, headers=self.headers),
            "metadata": self.client.get_model_metadata(step["name"], version, headers=self.headers,
                                                       as_json=True),
        }

    def op_infer(self, index: int, step: dict[str, Any]) -> dict[str, Any]:
        inputs = []
        for spec in step["inputs"]:
            array = np.load(spec["npy"])
            tensor = triton.InferInput(spec["name"], list(array.shape), spec["datatype"])
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [triton.InferRequestedOutput(name) for name in step.get("outputs") or []] or None
        result = self.client.infer(step["model"], inputs, step.get("version", ""), outputs=outputs,
                                   request_id=str(index), headers=self.headers)
        response = result.get_response()
        return self._saved(index, response, {o.name: result.as_numpy(o.name) for o in response.outputs})

    def op_typed_infer(self, index: int, step: dict[str, Any]) -> dict[str, Any]:
        request = _request(step)
        for spec in step["inputs"]:
            array = np.load(spec["npy"])
            tensor = request.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=array.shape)
            getattr(tensor.contents, TYPED_FIELDS[spec["datatype"]]).extend(array.ravel().tolist())
        response = self.stub.ModelInfer(request, metadata=list((self.headers or {}).items()))
        arrays = {
            output.name: np.frombuffer(raw, triton_to_np_dtype(output.datatype)).reshape(output.shape)
            for output, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        }
        return self._saved(index, response, arrays)

    def op_raw_request(self, index: int, step: dict[str, Any]) -> dict[str, Any]:
        request = _request(step)
        for spec in step["inputs"]:
            tensor = request.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
            if "raw_bytes" in spec:
                request.raw_input_contents.append(bytes(spec["raw_bytes"]))
            for kind in ("fp32", "fp64"):
                if f"{kind}_count" in spec:
                    getattr(tensor.contents, f"{kind}_contents").extend([0.0] * spec[f"{kind}_count"])
        response = self.stub.ModelInfer(request, metadata=list((self.headers or {}).items()))
        return {"outputs": [output.name for output in response.outputs]}

    def op_describe(self, index: int, step: dict[str, Any]) -> dict[str, Any]:
        return {"file": base64.b64encode(service_pb2.DESCRIPTOR.serialized_pb).decode()}

    def _saved(self, index: int, response: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        files = {}
        for name, array in arrays.items():
            path = self.out_dir / f"{index}-{name}.npy"
            np.save(path, array)
            files[name] = str(path)
        return {"model_name": response.model_name, "model_version": response.model_version,
                "id": response.id, "outputs": files,
                "datatypes": {output.name: output.datatype for output in response.outputs}}


def _request(step: dict[str, Any]) -> Any:
    """A ModelInferRequest for the step's model and version, asking for its ``outputs``."""
    request = service_pb2.ModelInferRequest(model_name=step["model"], model_version=step.get("version", ""))
    for name in step.get("outputs") or []:
        request.outputs.add(name=name)
    return request


def main(plan_file: str, out_dir: str) -> None:
    """Run the plan and write results.json."""
    plan = json.loads(Path(plan_file).read_text())
    runner = Plan(plan, Path(out_dir))
    results = [runner.run(index, step) for index, step in enumerate(plan["steps"])]
    (Path(out_dir) / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
