from labsight.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Pooling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOLING_UNSPECIFIED: _ClassVar[Pooling]
    POOLING_AVERAGE: _ClassVar[Pooling]
    POOLING_MAX: _ClassVar[Pooling]
    POOLING_NONE: _ClassVar[Pooling]
POOLING_UNSPECIFIED: Pooling
POOLING_AVERAGE: Pooling
POOLING_MAX: Pooling
POOLING_NONE: Pooling

class ComputeFractalRequest(_message.Message):
    __slots__ = ("image", "box_sizes", "percolation", "omit_probabilities")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    BOX_SIZES_FIELD_NUMBER: _ClassVar[int]
    PERCOLATION_FIELD_NUMBER: _ClassVar[int]
    OMIT_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    image: _tensor_pb2.Image
    box_sizes: _containers.RepeatedScalarFieldContainer[int]
    percolation: bool
    omit_probabilities: bool
    def __init__(self, image: _Optional[_Union[_tensor_pb2.Image, _Mapping]] = ..., box_sizes: _Optional[_Iterable[int]] = ..., percolation: _Optional[bool] = ..., omit_probabilities: _Optional[bool] = ...) -> None: ...

class MassProbability(_message.Message):
    __slots__ = ("box_size", "probability")
    BOX_SIZE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    box_size: int
    probability: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, box_size: _Optional[int] = ..., probability: _Optional[_Iterable[float]] = ...) -> None: ...

class FractalDimensionFit(_message.Message):
    __slots__ = ("dimension", "r_min", "r_max", "r_squared")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    R_MIN_FIELD_NUMBER: _ClassVar[int]
    R_MAX_FIELD_NUMBER: _ClassVar[int]
    R_SQUARED_FIELD_NUMBER: _ClassVar[int]
    dimension: float
    r_min: int
    r_max: int
    r_squared: float
    def __init__(self, dimension: _Optional[float] = ..., r_min: _Optional[int] = ..., r_max: _Optional[int] = ..., r_squared: _Optional[float] = ...) -> None: ...

class PercolationFeatures(_message.Message):
    __slots__ = ("cluster_count", "largest_cluster_ratio", "percolating_ratio")
    CLUSTER_COUNT_FIELD_NUMBER: _ClassVar[int]
    LARGEST_CLUSTER_RATIO_FIELD_NUMBER: _ClassVar[int]
    PERCOLATING_RATIO_FIELD_NUMBER: _ClassVar[int]
    cluster_count: _containers.RepeatedScalarFieldContainer[float]
    largest_cluster_ratio: _containers.RepeatedScalarFieldContainer[float]
    percolating_ratio: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, cluster_count: _Optional[_Iterable[float]] = ..., largest_cluster_ratio: _Optional[_Iterable[float]] = ..., percolating_ratio: _Optional[_Iterable[float]] = ...) -> None: ...

class ComputeFractalResponse(_message.Message):
    __slots__ = ("box_sizes", "probabilities", "lacunarity", "box_count", "fractal_dimension", "percolation", "features")
    BOX_SIZES_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    LACUNARITY_FIELD_NUMBER: _ClassVar[int]
    BOX_COUNT_FIELD_NUMBER: _ClassVar[int]
    FRACTAL_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    PERCOLATION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    box_sizes: _containers.RepeatedScalarFieldContainer[int]
    probabilities: _containers.RepeatedCompositeFieldContainer[MassProbability]
    lacunarity: _containers.RepeatedScalarFieldContainer[float]
    box_count: _containers.RepeatedScalarFieldContainer[float]
    fractal_dimension: FractalDimensionFit
    percolation: PercolationFeatures
    features: _tensor_pb2.FeatureTable
    def __init__(self, box_sizes: _Optional[_Iterable[int]] = ..., probabilities: _Optional[_Iterable[_Union[MassProbability, _Mapping]]] = ..., lacunarity: _Optional[_Iterable[float]] = ..., box_count: _Optional[_Iterable[float]] = ..., fractal_dimension: _Optional[_Union[FractalDimensionFit, _Mapping]] = ..., percolation: _Optional[_Union[PercolationFeatures, _Mapping]] = ..., features: _Optional[_Union[_tensor_pb2.FeatureTable, _Mapping]] = ...) -> None: ...

class ComputeFractalBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ComputeFractalRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ComputeFractalRequest, _Mapping]]] = ...) -> None: ...

class ComputeFractalBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[ComputeFractalResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[ComputeFractalResponse, _Mapping]]] = ...) -> None: ...

class ComputeFractalStackRequest(_message.Message):
    __slots__ = ("tiles", "box_sizes", "percolation", "omit_probabilities")
    TILES_FIELD_NUMBER: _ClassVar[int]
    BOX_SIZES_FIELD_NUMBER: _ClassVar[int]
    PERCOLATION_FIELD_NUMBER: _ClassVar[int]
    OMIT_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    tiles: _tensor_pb2.Tensor
    box_sizes: _containers.RepeatedScalarFieldContainer[int]
    percolation: bool
    omit_probabilities: bool
    def __init__(self, tiles: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., box_sizes: _Optional[_Iterable[int]] = ..., percolation: _Optional[bool] = ..., omit_probabilities: _Optional[bool] = ...) -> None: ...

class ComputeFractalStackResponse(_message.Message):
    __slots__ = ("box_sizes", "lacunarity", "box_count", "probabilities", "fractal_dimension", "fractal_dimension_r_squared", "percolation_cluster_count", "percolation_largest_cluster_ratio", "percolation_percolating_ratio", "features")
    BOX_SIZES_FIELD_NUMBER: _ClassVar[int]
    LACUNARITY_FIELD_NUMBER: _ClassVar[int]
    BOX_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    FRACTAL_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    FRACTAL_DIMENSION_R_SQUARED_FIELD_NUMBER: _ClassVar[int]
    PERCOLATION_CLUSTER_COUNT_FIELD_NUMBER: _ClassVar[int]
    PERCOLATION_LARGEST_CLUSTER_RATIO_FIELD_NUMBER: _ClassVar[int]
    PERCOLATION_PERCOLATING_RATIO_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    box_sizes: _containers.RepeatedScalarFieldContainer[int]
    lacunarity: _tensor_pb2.Tensor
    box_count: _tensor_pb2.Tensor
    probabilities: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    fractal_dimension: _tensor_pb2.Tensor
    fractal_dimension_r_squared: _tensor_pb2.Tensor
    percolation_cluster_count: _tensor_pb2.Tensor
    percolation_largest_cluster_ratio: _tensor_pb2.Tensor
    percolation_percolating_ratio: _tensor_pb2.Tensor
    features: _tensor_pb2.FeatureTable
    def __init__(self, box_sizes: _Optional[_Iterable[int]] = ..., lacunarity: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., box_count: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., probabilities: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., fractal_dimension: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., fractal_dimension_r_squared: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., percolation_cluster_count: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., percolation_largest_cluster_ratio: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., percolation_percolating_ratio: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., features: _Optional[_Union[_tensor_pb2.FeatureTable, _Mapping]] = ...) -> None: ...

class WorkProgress(_message.Message):
    __slots__ = ("step", "done", "total", "unit")
    STEP_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    step: str
    done: int
    total: int
    unit: str
    def __init__(self, step: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., unit: _Optional[str] = ...) -> None: ...

class ComputeFractalUpdate(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: WorkProgress
    result: ComputeFractalResponse
    def __init__(self, progress: _Optional[_Union[WorkProgress, _Mapping]] = ..., result: _Optional[_Union[ComputeFractalResponse, _Mapping]] = ...) -> None: ...

class ExtractDeepFeaturesRequest(_message.Message):
    __slots__ = ("model", "layer", "pooling", "images", "image_stack")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_STACK_FIELD_NUMBER: _ClassVar[int]
    model: str
    layer: str
    pooling: Pooling
    images: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Image]
    image_stack: _tensor_pb2.Tensor
    def __init__(self, model: _Optional[str] = ..., layer: _Optional[str] = ..., pooling: _Optional[_Union[Pooling, str]] = ..., images: _Optional[_Iterable[_Union[_tensor_pb2.Image, _Mapping]]] = ..., image_stack: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class ExtractDeepFeaturesResponse(_message.Message):
    __slots__ = ("features", "model", "model_version", "layer")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    features: _tensor_pb2.FeatureTable
    model: str
    model_version: str
    layer: str
    def __init__(self, features: _Optional[_Union[_tensor_pb2.FeatureTable, _Mapping]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., layer: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("with_layer_paths",)
    WITH_LAYER_PATHS_FIELD_NUMBER: _ClassVar[int]
    with_layer_paths: bool
    def __init__(self, with_layer_paths: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "format", "input_size", "layers", "default_layer", "weights_source", "layer_paths")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LAYER_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SOURCE_FIELD_NUMBER: _ClassVar[int]
    LAYER_PATHS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    format: str
    input_size: _containers.RepeatedScalarFieldContainer[int]
    layers: _containers.RepeatedScalarFieldContainer[str]
    default_layer: str
    weights_source: str
    layer_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., format: _Optional[str] = ..., input_size: _Optional[_Iterable[int]] = ..., layers: _Optional[_Iterable[str]] = ..., default_layer: _Optional[str] = ..., weights_source: _Optional[str] = ..., layer_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model: _Optional[str] = ...) -> None: ...
