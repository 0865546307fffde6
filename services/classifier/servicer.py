"""Thin gRPC servicer of the ClassifierService: protobuf in, per-cell classes or explanations out."""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc
import numpy as np

from labsight.cell_crops import CellCrops, cell_crops
from labsight.cell_images import ChannelParts, read_cell_image
from labsight.config import Settings
from labsight.errors import InvalidArgument, echo
from labsight.models import ModelManifest, ModelServer, ServingConfig, load_torch_model
from labsight.oip.servicer import add_open_inference
from labsight.runtime.progress_stream import raise_if_gone
from labsight.tensors import from_tensor, write_tensor
from labsight.v1 import classifier_pb2 as pb
from labsight.v1 import classifier_pb2_grpc as pb_grpc
from services.classifier.cells import CellClassification, classify_crops
from services.classifier.explain import cam_layer, grad_cam, lime_explanation
from services.classifier.repository import DEFAULT_MODEL, classifier_repository, load_thresholds

PRELOAD_ENV = "LABSIGHT_CLASSIFIER_PRELOAD_MODELS"
"""Classifier models loaded before the service reports SERVING (comma-separated)."""

CLASSIFIER_RUN_ROWS = 2
"""Rows per ONNX Runtime run and intra-op thread of the classifier's models
[LABSIGHT_ORT_RUN_ROWS]: a batch of crops runs in slices this small. Measured (hpa-generated,
64² RGBY crops, one single-threaded session, 2 runs): batches of 32 took 0.83 CPU ms per crop
in runs of 2 rows, 0.83-0.85 in runs of 4 and 0.88-1.00 whole; ONNX Runtime's arena, which
keeps what its largest run needed, grew by 0 MiB, 4-5 and 64 (+101 after LIME's batches of 256)."""

METHODS = ("grad-cam", "lime")
"""ExplainCells methods; the first is the default."""

CAM_LAYER = "features"
"""The manifest layer whose output Grad-CAM reads (else the model's last convolution)."""

Predict = Callable[[np.ndarray], np.ndarray]


class ClassifierServicer(pb_grpc.ClassifierServiceServicer):
    """Classifies and explains the cells of RGBY images with the models of a :class:`ModelServer`.

    Parameters
    ----------
    server : ModelServer
        Serves the classifier repository (ONNX Runtime on CPU, dynamic batching).
    max_answer_bytes : int
        Most bytes of saliency maps one ExplainCells answer may carry.
    """

    def __init__(self, server: ModelServer, max_answer_bytes: int) -> None:
        self.server = server
        self.max_answer_bytes = max_answer_bytes
        self._networks: dict[tuple[str, str], object] = {}
        self._thresholds: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()
        self._cropping = threading.Lock()
        """Held while a ClassifyCells call cuts its crops: see :meth:`_classify`."""

    def ClassifyCells(
        self, request: pb.ClassifyCellsRequest, context: grpc.ServicerContext
    ) -> pb.ClassifyCellsResponse:
        """The 19 class probabilities of every cell, its label set at the model's thresholds and
        the image-level summary; an image without cells gets an empty answer."""
        manifest = self._manifest(request.model)
        image, labels = _inputs(request)
        raise_if_gone(context, "classify cells")
        seen: list[np.ndarray] = []
        found = self._classify(manifest, image, labels, seen if request.return_crops else None)
        answer = pb.ClassifyCellsResponse(
            class_names=list(found.class_names),
            cell_ids=found.cell_ids.astype(np.int32).tolist(),
            image_probabilities=found.image_probabilities.tolist(),
            model=f"{manifest.name} {manifest.version}",
            thresholds=found.thresholds.tolist(),
        )
        write_tensor(answer.probabilities, found.probabilities)
        if request.return_crops:
            side = manifest.input_size
            crops = (np.concatenate(seen) if seen else
                     np.zeros((0, manifest.input_channels, *side), np.float32))
            write_tensor(answer.crops, _channels_last_bytes(crops))
        return answer

    def ExplainCells(
        self, request: pb.ExplainCellsRequest, context: grpc.ServicerContext
    ) -> pb.ExplainCellsResponse:
        """Saliency over each cell's crop (Grad-CAM or LIME) for the asked classes, or each
        cell's top class."""
        method = request.method or METHODS[0]
        if method not in METHODS:
            raise InvalidArgument(f"method: unknown method {echo(request.method)}; methods: "
                                  f"{list(METHODS)}")
        manifest = self._manifest(request.model)
        wanted = list(request.class_indices)
        outside = [c for c in wanted if not 0 <= c < manifest.num_classes]
        if outside:
            raise InvalidArgument(f"class_indices: {outside} outside 0..{manifest.num_classes - 1} "
                                  f"(the model's {manifest.num_classes} classes)")
        image, labels = _inputs(request)
        raise_if_gone(context, "explain cells")
        predict = self._predict(manifest)
        crops = self._crops(manifest, image, labels)
        if wanted:
            rows = [(i, c) for i in range(len(crops.cell_ids)) for c in wanted]
        else:
            top = np.argmax(predict(crops.pixels), axis=1) if len(crops.cell_ids) else []
            rows = [(i, int(c)) for i, c in enumerate(top)]
        side = manifest.input_size
        size = len(rows) * side[0] * side[1] * 4
        if size > self.max_answer_bytes:
            raise InvalidArgument(
                f"class_indices: {len(rows)} maps of {side[0]}x{side[1]} take {size} bytes, over "
                f"the {self.max_answer_bytes} bytes an answer may carry; ask for fewer classes"
            )
        cells = np.array([i for i, _ in rows], np.int64)
        classes = np.array([c for _, c in rows], np.int64)
        if method == "grad-cam":
            network = self._network(manifest)
            layer = cam_layer(network, manifest.module_path(CAM_LAYER) if CAM_LAYER in manifest.layers
                              else "")
            saliency = grad_cam(network, crops.pixels[cells], classes, layer=layer)
        else:
            saliency = np.zeros((len(rows), *side), np.float32)
            for row, (cell, target) in enumerate(rows):
                raise_if_gone(context, "explain cells")
                saliency[row] = lime_explanation(crops.pixels[cell], predict, target).saliency
        answer = pb.ExplainCellsResponse(
            cell_ids=crops.cell_ids[cells].astype(np.int32).tolist(),
            class_indices=classes.astype(np.int32).tolist(),
            model=f"{manifest.name} {manifest.version}",
            method=method,
        )
        write_tensor(answer.saliency, saliency)
        return answer

    def _manifest(self, name: str) -> ModelManifest:
        return self.server.repository.get(name or DEFAULT_MODEL)

    def _predict(self, manifest: ModelManifest) -> Predict:
        output = manifest.outputs[0]
        return lambda batch: self.server.run(manifest.name, batch)[output]

    def _classify(self, manifest: ModelManifest, image: np.ndarray, labels: np.ndarray,
                  seen: list[np.ndarray] | None = None) -> CellClassification:
        """The cells' classes with the served model; with ``seen``, the crops (in [0, 1], before
        the model's normalisation) are appended to it batch by batch, in cell order.

        One call at a time per process cuts its crops (numpy and Pillow work that holds the GIL
        between its many small steps); the others wait their turn, while calls whose crops are
        cut run the model, which needs no GIL, at once and share its batches. One process on 2
        CPUs with 4 concurrent callers (2026-12-07, Zen 4; two runs, 6 alternating rounds
        each): 1.52 and 1.66 ms CPU per cell (median), 982 and 902 cells/s, against 1.62 and
        1.73, 900 and 853 with every call cropping at once. Two processes sharing 2 CPUs, as
        `labsight up` runs them there, show no difference beyond `bench/classifier.py`'s spread.
        """
        served = self._predict(manifest)
        predict: Predict = served
        if seen is not None:
            kept = seen
            shift = np.asarray(manifest.preprocessing.mean, np.float32)[None, :, None, None]
            spread = np.asarray(manifest.preprocessing.std, np.float32)[None, :, None, None]

            def keeping(batch: np.ndarray) -> np.ndarray:
                kept.append(batch)
                return served((batch - shift) / spread)

            predict = keeping  # the crops come in [0, 1]; they are normalised here
        with self._cropping:
            crops = self._crops(manifest, image, labels, normalised=seen is None)
        try:
            return classify_crops(crops, predict, thresholds=self._thresholds_of(manifest),
                                  batch_size=self.server.config.max_batch_size)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None

    def _crops(self, manifest: ModelManifest, image: np.ndarray, labels: np.ndarray,
               normalised: bool = True) -> CellCrops:
        """The model's input crops of every cell, normalised as the model takes them or (not
        ``normalised``) scaled to [0, 1] only."""
        try:
            return cell_crops(
                image, labels, manifest.input_size[0], channels=manifest.input_channels,
                mean=manifest.preprocessing.mean if normalised else None,
                std=manifest.preprocessing.std if normalised else None,
                max_bytes=self.max_answer_bytes,
            )
        except ValueError as error:
            raise InvalidArgument(str(error)) from None

    def _thresholds_of(self, manifest: ModelManifest) -> np.ndarray:
        """The model's per-class thresholds, read from its folder once per version."""
        key = (manifest.name, manifest.version)
        with self._lock:
            if key not in self._thresholds:
                self._thresholds[key] = load_thresholds(manifest)
            return self._thresholds[key]

    def _network(self, manifest: ModelManifest) -> object:
        """The model in torch (Grad-CAM needs its gradients), loaded once per version."""
        key = (manifest.name, manifest.version)
        with self._lock:
            if key not in self._networks:
                self._networks[key] = load_torch_model(manifest)
            return self._networks[key]


def _channels_last_bytes(crops: np.ndarray) -> np.ndarray:
    """(cells, C, S, S) crops in [0, 1] (scaled in place) as (cells, S, S, C) uint8 0-255.

    Written a channel at a time into the channels-last array, scaled in place: clipping,
    scaling and rounding into new arrays, then ``tobytes`` of a transposed uint8 view
    (a gather of single bytes), took 1.2 ms for 14 cells; this takes 0.35 ms.
    """
    np.clip(crops, 0, 1, out=crops)
    crops *= 255
    np.rint(crops, out=crops)
    pixels = np.empty((crops.shape[0], *crops.shape[2:], crops.shape[1]), np.uint8)
    for channel in range(crops.shape[1]):
        pixels[..., channel] = crops[:, channel]  # exact: whole numbers in 0-255
    return pixels


def _inputs(request: pb.ClassifyCellsRequest | pb.ExplainCellsRequest) -> tuple[np.ndarray, np.ndarray]:
    """The request's (H, W, 4) image (one image or four channel images) and its (H, W) cell
    labels, each checked and named."""
    if request.HasField("image") == bool(request.channel_images):
        raise InvalidArgument("image, channel_images: give exactly one of them (a 4-channel image, "
                              "or four one-channel images red, green, blue, yellow)")
    if not request.HasField("cell_labels"):
        raise InvalidArgument("cell_labels: missing; send the (H, W) cell mask of SegmentCells")
    parts: ChannelParts = (
        [("image", request.image)] if request.HasField("image") else
        [(f"channel_images[{i}]", image) for i, image in enumerate(request.channel_images)]
    )
    image = read_cell_image(parts)
    labels = from_tensor(request.cell_labels, "cell_labels")
    if labels.dtype.kind not in "iu":
        raise InvalidArgument(f"cell_labels: expected an integer mask, got dtype {labels.dtype}")
    if labels.shape != image.shape[:2]:
        raise InvalidArgument(f"cell_labels: shape {list(labels.shape)} does not match the image's "
                              f"{list(image.shape[:2])}")
    return image, labels


def serving_config() -> ServingConfig:
    """How the classifier service runs its models: the LABSIGHT_* environment, preloads from
    PRELOAD_ENV, runs of ``CLASSIFIER_RUN_ROWS`` unless LABSIGHT_ORT_RUN_ROWS says."""
    return ServingConfig.from_env(preload_env=PRELOAD_ENV, default_run_rows=CLASSIFIER_RUN_ROWS)


def register(server: grpc.Server, settings: Settings) -> None:
    """Add the ClassifierService to ``server``, its models from the shipped ones and
    $LABSIGHT_MODEL_DIR; models named in $LABSIGHT_CLASSIFIER_PRELOAD_MODELS load here."""
    config = serving_config()
    models = ModelServer(classifier_repository(config.model_dirs), config)
    models.preload()
    answer_room = settings.max_message_bytes - 1024 * 1024
    pb_grpc.add_ClassifierServiceServicer_to_server(ClassifierServicer(models, answer_room), server)
    add_open_inference(server, models, settings)
