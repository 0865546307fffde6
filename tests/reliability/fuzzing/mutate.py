"""Field-by-field mutation of valid protobuf requests, driven by their descriptors.

A mutation picks one field anywhere in the request (maps, repeated fields and nested
messages included) and gives it a value from the pool for that field's name (ids,
parameters, models, images, tensors) or, failing that, for its protobuf type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from . import media, values
from .values import Labelled, World

PIPELINES = ("fractal", "deep-features", "spot-features", "hpa-cells", "vessel-content", "cells",
             "cell-tracks")
PARAMETER_NAMES = ("box_sizes", "percolation", "probabilities", "model", "layer", "pooling", "spot_diameter",
                   "spot_ids", "blank_other_cells", *values.IMAGE_PARAMETERS)
INPUT_ROLES = ("spot_centres", "cell_labels", "patches", "image")
MAX_DEPTH = 4


@dataclass
class Pools:
    """Every value pool of one fuzz run; ids are drawn for the calling tenant."""

    world: World
    images: list[Labelled]
    tensors: list[Labelled]
    strings: list[Labelled]

    @classmethod
    def build(cls, world: World, rng: np.random.Generator) -> Pools:
        """Pools for ``world``; images and tensors are built once (random parts from ``rng``)."""
        return cls(world, media.hostile_images(rng), media.hostile_tensors(rng),
                   values.hostile_strings(rng))

    def pick(self, rng: np.random.Generator, pool: list[Labelled]) -> Labelled:
        """One labelled value of ``pool``."""
        return pool[int(rng.integers(len(pool)))]

    def models(self) -> list[Labelled]:
        """Served models, unknown ones and hostile names."""
        known = [("model:known", name) for name in self.world.models]
        return [*known, ("model:default", ""), ("model:unknown", "no-such-model"),
                ("model:case", "EfficientNet-Lite0"), *self.strings]

    def layers(self, rng: np.random.Generator) -> list[Labelled]:
        """Public layers, module paths (each distinct one may load an engine), unknown names."""
        public = [("layer:public", layer) for layers in self.world.models.values() for layer in layers]
        module_paths = [("layer:module-path", paths[int(rng.integers(len(paths)))])
                        for paths in self.world.layer_paths.values() if paths]
        unknown = [("layer:unknown-distinct", f"no-such-layer-{rng.bytes(3).hex()}")]
        return [*public, *module_paths, *unknown, *self.strings]

    def named(self, name: str, tenant: str, rng: np.random.Generator) -> list[Labelled] | None:
        """The pool for a field or parameter called ``name``; None when its type decides."""
        if name in ("job_id", "batch_id"):
            return values.hostile_ids(rng, self.world, tenant, name.split("_")[0])
        if name == "idempotency_key":
            return [("key:fixed", "fuzz-key"), *self.strings]
        if name == "pipeline":
            return [*(("pipeline:known", p) for p in PIPELINES), ("pipeline:case", "FRACTAL"),
                    *self.strings]
        if name == "model":
            return self.models()
        if name == "layer":
            return self.layers(rng)
        if name == "format":
            return [("format:png", "png"), ("format:tiff", "tiff"), ("format:jpeg", "JPG"),
                    ("format:gif", "gif"), *self.strings]
        if name == "service":
            return [("service:overall", ""), ("service:gateway", "labsight.v1.GatewayService"),
                    *self.strings]
        pool = values.PARAMETER_POOLS.get(name)
        return pool(rng) if pool else None


def mutate(message: Message, rng: np.random.Generator, pools: Pools, tenant: str,
           path: str = "", depth: int = 0) -> str:
    """Change one field somewhere in ``message`` in place; returns 'field.path=input-class'."""
    fields = message.DESCRIPTOR.fields
    if not fields:
        return f"{path or message.DESCRIPTOR.name}=message:has-no-fields"
    descriptor = fields[int(rng.integers(len(fields)))]
    here = f"{path}{descriptor.name}"
    if _is_map(descriptor):
        return _mutate_map(message, descriptor, rng, pools, tenant, here)
    if descriptor.is_repeated:
        return _mutate_repeated(message, descriptor, rng, pools, tenant, here, depth)
    if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        media_pool = _media_pool(descriptor, pools)
        if media_pool and rng.random() < 0.6:
            label, value = pools.pick(rng, media_pool)
            getattr(message, descriptor.name).CopyFrom(value)
            return f"{here}={label}"
        if depth >= MAX_DEPTH or rng.random() < 0.15:
            message.ClearField(descriptor.name)
            return f"{here}=message:cleared"
        child = getattr(message, descriptor.name)
        child.SetInParent()
        return mutate(child, rng, pools, tenant, here + ".", depth + 1)
    label, value = _scalar(descriptor, rng, pools, tenant)
    setattr(message, descriptor.name, value)
    return f"{here}={label}"


def _is_map(descriptor: FieldDescriptor) -> bool:
    return (descriptor.type == FieldDescriptor.TYPE_MESSAGE
            and descriptor.message_type.GetOptions().map_entry)


def _media_pool(descriptor: FieldDescriptor, pools: Pools) -> list[Labelled] | None:
    name = descriptor.message_type.full_name
    return {"labsight.v1.Image": pools.images, "labsight.v1.Tensor": pools.tensors}.get(name)


def _scalar(descriptor: FieldDescriptor, rng: np.random.Generator, pools: Pools,
            tenant: str) -> Labelled:
    named = pools.named(descriptor.name, tenant, rng)
    if named and descriptor.type == FieldDescriptor.TYPE_STRING and rng.random() < 0.8:
        return pools.pick(rng, named)
    return pools.pick(rng, values.by_type(descriptor, rng))


def _mutate_map(message: Message, descriptor: FieldDescriptor, rng: np.random.Generator,
                pools: Pools, tenant: str, here: str) -> str:
    entries = getattr(message, descriptor.name)
    value_field = descriptor.message_type.fields_by_name["value"]
    if entries and rng.random() < 0.15:
        key = sorted(entries)[int(rng.integers(len(entries)))]
        del entries[key]
        return f"{here}[{key[:40]}]=map:deleted"
    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
        key_label, key = "role", INPUT_ROLES[int(rng.integers(len(INPUT_ROLES)))]
        if rng.random() < 0.1:
            key_label, key = pools.pick(rng, pools.strings)
        pool = _media_pool(value_field, pools)
        if pool is None:  # a map of other messages (tensor_names: StackNames): a fresh one, changed
            return mutate(entries[key], rng, pools, tenant, f"{here}[{key_label}:{key[:40]}].", 1)
        label, value = pools.pick(rng, pool)
        entries[key].CopyFrom(value)
        return f"{here}[{key_label}:{key[:40]}]={label}"
    if rng.random() < 0.15:
        key_label, key = pools.pick(rng, pools.strings)
        entries[key] = "1"
        return f"{here}[]={key_label}"
    if rng.random() < 0.05:
        for number in range(1000):
            entries[f"k{number}"] = "v" * 100
        return f"{here}=map:1000-entries"
    key = PARAMETER_NAMES[int(rng.integers(len(PARAMETER_NAMES)))]
    pool = pools.named(key, tenant, rng) or pools.strings
    label, value = pools.pick(rng, pool)
    entries[key] = value
    return f"{here}[{key}]={label}"


def _mutate_repeated(message: Message, descriptor: FieldDescriptor, rng: np.random.Generator,
                     pools: Pools, tenant: str, here: str, depth: int) -> str:
    entries = getattr(message, descriptor.name)
    if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        choice = rng.random()
        if choice < 0.2:
            del entries[:]
            return f"{here}=repeated:cleared"
        media_pool = _media_pool(descriptor, pools)
        if media_pool and choice < 0.7:
            label, value = pools.pick(rng, media_pool)
            entries.append(value)
            return f"{here}[+]={label}"
        if entries and choice < 0.8:
            for _ in range(int(rng.integers(2, 9))):
                entries.append(entries[0])
            return f"{here}=repeated:duplicated"
        child = entries[int(rng.integers(len(entries)))] if entries else entries.add()
        return mutate(child, rng, pools, tenant, here + "[].", depth + 1)
    pool = values.by_type(descriptor, rng)
    is_text = descriptor.type == FieldDescriptor.TYPE_STRING
    named = pools.named(descriptor.name, tenant, rng) if is_text else None
    count = 1000 if rng.random() < 0.1 else int(rng.integers(0, 9))
    picked = [pools.pick(rng, named or pool) for _ in range(count)]
    del entries[:]
    entries.extend(value for _, value in picked)
    labels = sorted({label for label, _ in picked}) or ["repeated:empty"]
    return f"{here}[{count}]={'|'.join(labels[:3])}"
