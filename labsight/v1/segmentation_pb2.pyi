from labsight.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SegmentCellsRequest(_message.Message):
    __slots__ = ("image", "pixel_size_um", "method", "channel_images", "roles")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PIXEL_SIZE_UM_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_IMAGES_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    image: _tensor_pb2.Image
    pixel_size_um: float
    method: str
    channel_images: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Image]
    roles: ChannelRoles
    def __init__(self, image: _Optional[_Union[_tensor_pb2.Image, _Mapping]] = ..., pixel_size_um: _Optional[float] = ..., method: _Optional[str] = ..., channel_images: _Optional[_Iterable[_Union[_tensor_pb2.Image, _Mapping]]] = ..., roles: _Optional[_Union[ChannelRoles, _Mapping]] = ...) -> None: ...

class ChannelRoles(_message.Message):
    __slots__ = ("nucleus", "cytoplasm", "channel_names", "expand_um")
    NUCLEUS_FIELD_NUMBER: _ClassVar[int]
    CYTOPLASM_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    EXPAND_UM_FIELD_NUMBER: _ClassVar[int]
    nucleus: int
    cytoplasm: _containers.RepeatedScalarFieldContainer[int]
    channel_names: _containers.RepeatedScalarFieldContainer[str]
    expand_um: float
    def __init__(self, nucleus: _Optional[int] = ..., cytoplasm: _Optional[_Iterable[int]] = ..., channel_names: _Optional[_Iterable[str]] = ..., expand_um: _Optional[float] = ...) -> None: ...

class SegmentCellsResponse(_message.Message):
    __slots__ = ("nucleus_labels", "cell_labels", "model", "cells", "method", "pixel_size_um")
    NUCLEUS_LABELS_FIELD_NUMBER: _ClassVar[int]
    CELL_LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PIXEL_SIZE_UM_FIELD_NUMBER: _ClassVar[int]
    nucleus_labels: _tensor_pb2.Tensor
    cell_labels: _tensor_pb2.Tensor
    model: str
    cells: _tensor_pb2.FeatureTable
    method: str
    pixel_size_um: float
    def __init__(self, nucleus_labels: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., cell_labels: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., model: _Optional[str] = ..., cells: _Optional[_Union[_tensor_pb2.FeatureTable, _Mapping]] = ..., method: _Optional[str] = ..., pixel_size_um: _Optional[float] = ...) -> None: ...

class SegmentVesselContentRequest(_message.Message):
    __slots__ = ("image", "vessel_mask")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VESSEL_MASK_FIELD_NUMBER: _ClassVar[int]
    image: _tensor_pb2.Image
    vessel_mask: _tensor_pb2.Image
    def __init__(self, image: _Optional[_Union[_tensor_pb2.Image, _Mapping]] = ..., vessel_mask: _Optional[_Union[_tensor_pb2.Image, _Mapping]] = ...) -> None: ...

class VesselInstance(_message.Message):
    __slots__ = ("index", "classes", "class_probabilities")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASS_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    index: int
    classes: _containers.RepeatedScalarFieldContainer[str]
    class_probabilities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, index: _Optional[int] = ..., classes: _Optional[_Iterable[str]] = ..., class_probabilities: _Optional[_Iterable[float]] = ...) -> None: ...

class SegmentVesselContentResponse(_message.Message):
    __slots__ = ("instance_masks", "instances", "semantic_masks", "model")
    class SemanticMasksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    INSTANCE_MASKS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_MASKS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    instance_masks: _tensor_pb2.Tensor
    instances: _containers.RepeatedCompositeFieldContainer[VesselInstance]
    semantic_masks: _containers.MessageMap[str, _tensor_pb2.Tensor]
    model: str
    def __init__(self, instance_masks: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., instances: _Optional[_Iterable[_Union[VesselInstance, _Mapping]]] = ..., semantic_masks: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., model: _Optional[str] = ...) -> None: ...

class ExtractPatchesRequest(_message.Message):
    __slots__ = ("image", "spot_centres", "spot_diameter", "cell_labels", "blank_other_cells", "output_size", "spot_ids", "cell_label_ids", "spot_edge")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SPOT_CENTRES_FIELD_NUMBER: _ClassVar[int]
    SPOT_DIAMETER_FIELD_NUMBER: _ClassVar[int]
    CELL_LABELS_FIELD_NUMBER: _ClassVar[int]
    BLANK_OTHER_CELLS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    SPOT_IDS_FIELD_NUMBER: _ClassVar[int]
    CELL_LABEL_IDS_FIELD_NUMBER: _ClassVar[int]
    SPOT_EDGE_FIELD_NUMBER: _ClassVar[int]
    image: _tensor_pb2.Image
    spot_centres: _tensor_pb2.Tensor
    spot_diameter: float
    cell_labels: _tensor_pb2.Tensor
    blank_other_cells: bool
    output_size: int
    spot_ids: _containers.RepeatedScalarFieldContainer[str]
    cell_label_ids: _containers.RepeatedScalarFieldContainer[int]
    spot_edge: str
    def __init__(self, image: _Optional[_Union[_tensor_pb2.Image, _Mapping]] = ..., spot_centres: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., spot_diameter: _Optional[float] = ..., cell_labels: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., blank_other_cells: _Optional[bool] = ..., output_size: _Optional[int] = ..., spot_ids: _Optional[_Iterable[str]] = ..., cell_label_ids: _Optional[_Iterable[int]] = ..., spot_edge: _Optional[str] = ...) -> None: ...

class ExtractPatchesResponse(_message.Message):
    __slots__ = ("patches", "patch_ids", "patch_centres", "patch_at_edge")
    PATCHES_FIELD_NUMBER: _ClassVar[int]
    PATCH_IDS_FIELD_NUMBER: _ClassVar[int]
    PATCH_CENTRES_FIELD_NUMBER: _ClassVar[int]
    PATCH_AT_EDGE_FIELD_NUMBER: _ClassVar[int]
    patches: _tensor_pb2.Tensor
    patch_ids: _containers.RepeatedScalarFieldContainer[str]
    patch_centres: _tensor_pb2.Tensor
    patch_at_edge: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, patches: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., patch_ids: _Optional[_Iterable[str]] = ..., patch_centres: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., patch_at_edge: _Optional[_Iterable[bool]] = ...) -> None: ...
