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

    def unary_unary(self, method: str, request_serializer: Any = None,
                    response_deserializer: Any = None, *more: Any, **options: Any) -> Any:
        """As :meth:`grpc.Channel.unary_unary`, passing encoded requests through."""
        return self._channel.unary_unary(method, passing_encoded(request_serializer),
                                         response_deserializer, *more, **options)

    def unary_stream(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, *more: Any, **options: Any) -> Any:
        """As :meth:`grpc.Channel.unary_stream`, passing encoded requests through."""
        return self._channel.unary_stream(method, passing_encoded(request_serializer),
                                          response_deserializer, *more, **options)

    def stream_unary(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, *more: Any, **options: Any) -> Any:
        """As :meth:`grpc.Channel.stream_unary`, passing encoded requests through."""
        return self._channel.stream_unary(method, passing_encoded(request_serializer),
                                          response_deserializer, *more, **options)

    def stream_stream(self, method: str, request_serializer: Any = None,
                      response_deserializer: Any = None, *more: Any, **options: Any) -> Any:
        """As :meth:`grpc.Channel.stream_stream`, passing encoded requests through."""
        return self._channel.stream_stream(method, passing_encoded(request_serializer),
                                           response_deserializer, *more, **options)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> EncodedRequestChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
