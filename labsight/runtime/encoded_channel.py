"""A gRPC channel whose stubs also take requests that are already serialized.

A worker sends the model services big tensors; built as protobuf messages they
are copied into the message and again when gRPC serializes it.
:func:`labsight.tensor_wire.serialize_with_arrays` writes the request bytes
straight from the arrays, and through this channel any generated stub sends
them as they are: ``stub.ExtractDeepFeatures(EncodedMessage(data))``. Every
other request is serialized as usual.
"""

from __future__ import annotations

from typing import Any

import grpc

from labsight.tensor_wire import passing_encoded


def _passing_encoded_requests(kind: str) -> Any:
    """The ``kind`` multi-callable factory of :class:`grpc.Channel` (``unary_unary`` ...) of a
    wrapped channel, its request serializer also taking an EncodedMessage."""

    def multi_callable(self: EncodedRequestChannel, method: str, request_serializer: Any = None,
                       response_deserializer: Any = None, *more: Any, **options: Any) -> Any:
        return getattr(self._channel, kind)(method, passing_encoded(request_serializer),
                                            response_deserializer, *more, **options)

    multi_callable.__name__ = kind
    multi_callable.__doc__ = f"As :meth:`grpc.Channel.{kind}`, passing encoded requests through."
    return multi_callable


class EncodedRequestChannel(grpc.Channel):
    """``channel``, its calls taking an :class:`~labsight.tensor_wire.EncodedMessage` as request."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        """As :meth:`grpc.Channel.subscribe`."""
        self._channel.subscribe(callback, try_to_connect=try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        """As :meth:`grpc.Channel.unsubscribe`."""
        self._channel.unsubscribe(callback)

    unary_unary = _passing_encoded_requests("unary_unary")
    unary_stream = _passing_encoded_requests("unary_stream")
    stream_unary = _passing_encoded_requests("stream_unary")
    stream_stream = _passing_encoded_requests("stream_stream")

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> EncodedRequestChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
