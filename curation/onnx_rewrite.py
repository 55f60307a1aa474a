"""Rewritten copies of the YOLO ONNX exports: float arithmetic, and input sizes fitted to the image.

Float copy: same weights, float arithmetic.

``onnxruntime.quantization.quantize_dynamic`` turns each Conv into DynamicQuantizeLinear -> ConvInteger -> Cast ->
Mul(input scale x weight scale). ONNX Runtime runs ConvInteger through a generic integer path: measured single
threaded on this machine's CPU (AVX-512 VNNI; benchmarks/results/curation_speed_graphs.json), the 320 px YOLOv8n-seg
export of ../shared/models took 114 ms a call, the same graph with each ConvInteger replaced by a float Conv of the
dequantized weights 32 ms. The weights stay the
INT8 values (``(w - zero_point) * scale``, exact in float32); only the activations are no longer rounded to 8 bits.

Fitted input: a static YOLOv8 export takes one square size (640 x 640), so a 640 x 360 frame is letterboxed with 44%
grey rows and a standing person's crop with more. The convolutions do not care about the size; only the head's
constants do (its anchor points and strides, one per cell of the 8400 / 2100 of the square grid, and the reshapes
that name that count). :func:`fit_input_size` rewrites them for another size (both sides multiples of 32), as
ultralytics' own rectangular inference of a .pt model computes them. Measured single threaded (same file): the 640 px
detector in float 94 -> 56 ms at 384 x 640, the 320 px segmenter 32 -> 19 ms at 192 x 320.

Each copy is written once per source file (named by its sha256) and size under the cache folder, so every process
on a machine (Ray actors included) loads the same file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import CurationError
from .weights import file_sha256

CACHE_ENV = "AVATAR_CACHE_DIR"


def cache_dir() -> Path:
    """Where float copies are kept: $AVATAR_CACHE_DIR, else $XDG_CACHE_HOME/avatarkit, else ~/.cache/avatarkit."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "avatarkit"


def is_dynamic_int8(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ONNX file with ConvInteger nodes (a ``quantize_dynamic`` export)."""
    import onnx

    if Path(path).suffix.lower() != ".onnx":
        return False
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - not a readable ONNX file: load_yolo says so, with the fix
        return False
    return any(n.op_type == "ConvInteger" for n in graph.node)


def dequantize(model):
    """``model`` (an onnx.ModelProto from quantize_dynamic) with every ConvInteger block as one float Conv."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    replaced, dropped, new_weights = {}, set(), []
    for n in graph.node:
        if n.op_type != "ConvInteger":
            continue
        quantize = producer[n.input[0]]  # DynamicQuantizeLinear(x) -> x_q, x_scale, x_zero_point
        cast = consumers[n.output[0]][0]  # int32 -> float
        scaled = consumers[cast.output[0]][0]  # Mul(cast, x_scale * w_scale): the float conv output
        scales = producer[scaled.input[1]]
        if quantize.op_type != "DynamicQuantizeLinear" or cast.op_type != "Cast" or scaled.op_type != "Mul" \
                or scales.op_type != "Mul":
            raise CurationError(f"ConvInteger {n.name} is not in quantize_dynamic's pattern",
                                "use the file as exported (the reference curation profile)")
        w = numpy_helper.to_array(weights[n.input[1]]).astype(np.float32)
        zero = numpy_helper.to_array(weights[n.input[3]]).astype(np.float32) if len(n.input) > 3 else 0.0
        scale = numpy_helper.to_array(weights[scales.input[1]]).astype(np.float32)
        if scale.ndim:  # per output channel
            scale, zero = scale.reshape(-1, 1, 1, 1), np.reshape(zero, (-1, 1, 1, 1)) if np.ndim(zero) else zero
        name = f"{n.input[1]}_float"
        new_weights.append(numpy_helper.from_array((w - zero) * scale, name))
        conv = helper.make_node("Conv", [quantize.input[0], name], [scaled.output[0]], name=f"{n.name}_float")
        conv.attribute.extend(n.attribute)
        replaced[id(scaled)] = conv
        dropped |= {id(n), id(cast)}
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    graph.initializer.extend(new_weights)
    _set_nodes(graph, _live(nodes, {o.name for o in graph.output}))
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    return model


def _live(nodes: list, outputs: set[str]) -> list:
    """``nodes`` without those whose outputs nothing reads (the quantizers the float convs no longer need)."""
    while True:
        used = {i for n in nodes for i in n.input} | outputs
        live = [n for n in nodes if any(o in used for o in n.output)]
        if len(live) == len(nodes):
            return live
        nodes = live


def _set_nodes(graph, nodes: list) -> None:
    del graph.node[:]
    graph.node.extend(nodes)


YOLO_STRIDES = (8, 16, 32)


def input_size(model) -> tuple[int, int]:
    """(height, width) of a static YOLO export's image input."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[2].dim_value, dims[3].dim_value


def anchor_points(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A YOLOv8 head's anchor points (2, N) (cell centres, in cells) and strides (N,) for an input size."""
    points, strides = [], []
    for s in YOLO_STRIDES:
        ys, xs = np.meshgrid(np.arange(height // s) + 0.5, np.arange(width // s) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full(xs.size, s))
    return np.concatenate(points, 1).astype(np.float32), np.concatenate(strides).astype(np.float32)


def fit_input_size(model, height: int, width: int):
    """``model`` (a static YOLOv8 detect / segment / pose export) rewritten to take (height, width) images."""
    import onnx
    from onnx import numpy_helper

    if height % 32 or width % 32:
        raise CurationError(f"input size {height}x{width} is not a multiple of 32", "round both sides up to 32")
    graph = model.graph
    old_points, old_strides = anchor_points(*input_size(model))
    count = old_strides.size
    points, strides = anchor_points(height, width)
    found = set()
    for k, init in enumerate(graph.initializer):
        a = numpy_helper.to_array(init)
        if a.ndim == 1 and a.dtype.kind == "i" and count in a:  # a reshape to (..., count): any count
            new = np.where(a == count, -1, a).astype(a.dtype)
        elif a.shape == (1, 2, count) and np.allclose(a[0], old_points):
            new, _ = points[None], found.add("points")
        elif a.shape == (1, count) and np.allclose(a[0], old_strides):
            new, _ = strides[None], found.add("strides")
        else:
            continue
        graph.initializer[k].CopyFrom(numpy_helper.from_array(new, init.name))
    if found != {"points", "strides"}:
        raise CurationError("the ONNX file is not a static YOLOv8 export (no anchor constants in its head)",
                            "run it at its own size (fit_input=False)")
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = height, width
    del graph.value_info[:]  # shapes inferred for the old size
    for out in graph.output:
        for d in out.type.tensor_type.shape.dim:
            d.Clear()
    for prop in model.metadata_props:
        if prop.key == "imgsz":
            prop.value = str([height, width])
    onnx.checker.check_model(model)
    return model


def _cached(path: Path, suffix: str, make) -> Path:
    """``make(onnx model of path)`` saved once as a cache file named by path's sha256 and ``suffix``."""
    import onnx

    out = cache_dir() / "onnx" / f"{file_sha256(str(path))[:16]}_{path.stem}_{suffix}.onnx"
    if out.exists():
        return out
    model = make(onnx.load(str(path)))
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(tmp))
        os.replace(tmp, out)  # atomic: concurrent actors never read half a file
    except OSError as exc:
        raise CurationError(f"cannot write the rewritten model {out.name} to {out.parent} ({exc.strerror})",
                            f"set {CACHE_ENV} to a writable folder, or use --profile reference") from exc
    return out


def float_copy(path: str | os.PathLike) -> Path:
    """The float copy of the dynamic-INT8 ONNX file ``path`` (made once, then read from the cache)."""
    return _cached(Path(path), "float", dequantize)


def sized_copy(path: str | os.PathLike, height: int, width: int) -> Path:
    """A copy of the static YOLO export ``path`` taking (height, width) images (made once, then cached)."""
    return _cached(Path(path), f"{height}x{width}", lambda m: fit_input_size(m, height, width))


def runtime_weights(path: Path, runtime: str) -> Path:
    """The file a model runs from: ``path`` as exported, or (``runtime="float"``) its float copy when it is a
    dynamic-INT8 ONNX export; other files run as they are."""
    if runtime not in ("float", "as-exported"):
        raise CurationError(f"ONNX runtime {runtime!r} is unknown", "use 'float' or 'as-exported'")
    if runtime == "float" and is_dynamic_int8(path):
        return float_copy(path)
    return path
