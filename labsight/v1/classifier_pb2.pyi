from labsight.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClassifyCellsRequest(_message.Message):
    __slots__ = ("image", "cell_labels", "model", "channel_images", "return_crops")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CELL_LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_IMAGES_FIELD_NUMBER: _ClassVar[int]
    RETURN_CROPS_FIELD_NUMBER: _ClassVar[int]
    image: _tensor_pb2.Image
    cell_labels: _tensor_pb2.Tensor
    model: str
    channel_images: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Image]
    return_crops: bool
    def __init__(self, image: _Optional[_Union[_tensor_pb2.Image, _Mapping]] = ..., cell_labels: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., model: _Optional[str] = ..., channel_images: _Optional[_Iterable[_Union[_tensor_pb2.Image, _Mapping]]] = ..., return_crops: _Optional[bool] = ...) -> None: ...

class ClassifyCellsResponse(_message.Message):
    __slots__ = ("class_names", "cell_ids", "probabilities", "image_probabilities", "model", "thresholds", "crops")
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    CELL_IDS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    CROPS_FIELD_NUMBER: _ClassVar[int]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    cell_ids: _containers.RepeatedScalarFieldContainer[int]
    probabilities: _tensor_pb2.Tensor
    image_probabilities: _containers.RepeatedScalarFieldContainer[float]
    model: str
    thresholds: _containers.RepeatedScalarFieldContainer[float]
    crops: _tensor_pb2.Tensor
    def __init__(self, class_names: _Optional[_Iterable[str]] = ..., cell_ids: _Optional[_Iterable[int]] = ..., probabilities: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., image_probabilities: _Optional[_Iterable[float]] = ..., model: _Optional[str] = ..., thresholds: _Optional[_Iterable[float]] = ..., crops: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class ExplainCellsRequest(_message.Message):
    __slots__ = ("image", "cell_labels", "model", "class_indices", "method", "channel_images")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CELL_LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDICES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_IMAGES_FIELD_NUMBER: _ClassVar[int]
    image: _tensor_pb2.Image
    cell_labels: _tensor_pb2.Tensor
    model: str
    class_indices: _containers.RepeatedScalarFieldContainer[int]
    method: str
    channel_images: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Image]
    def __init__(self, image: _Optional[_Union[_tensor_pb2.Image, _Mapping]] = ..., cell_labels: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., model: _Optional[str] = ..., class_indices: _Optional[_Iterable[int]] = ..., method: _Optional[str] = ..., channel_images: _Optional[_Iterable[_Union[_tensor_pb2.Image, _Mapping]]] = ...) -> None: ...

class ExplainCellsResponse(_message.Message):
    __slots__ = ("cell_ids", "class_indices", "saliency", "model", "method")
    CELL_IDS_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDICES_FIELD_NUMBER: _ClassVar[int]
    SALIENCY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    cell_ids: _containers.RepeatedScalarFieldContainer[int]
    class_indices: _containers.RepeatedScalarFieldContainer[int]
    saliency: _tensor_pb2.Tensor
    model: str
    method: str
    def __init__(self, cell_ids: _Optional[_Iterable[int]] = ..., class_indices: _Optional[_Iterable[int]] = ..., saliency: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., model: _Optional[str] = ..., method: _Optional[str] = ...) -> None: ...
