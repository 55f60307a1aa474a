"""Cap the threads of every inference runtime in this process.

ONNX Runtime and OpenVINO size their pools to the machine and spin while idle: fine for one
model alone, wasteful when several stage actors share the cores (a Ray pipeline). Each actor
then caps its runtimes to the CPUs it was given.
"""

from __future__ import annotations

from pathlib import Path

import cv2


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def limit_yolo(model, weights_path: Path, threads: int) -> None:
    """Rebuild an ultralytics model's ONNX Runtime session / OpenVINO compiled model with ``threads`` (``weights_path``:
    the file it runs from). A session on a GPU is left as it is."""
    backend = model.predictor.model.backend
    session = getattr(backend, "session", None)
    on_cpu = session is not None and session.get_providers()[0] == "CPUExecutionProvider"
    if on_cpu and not getattr(backend, "use_io_binding", False):
        backend.session = _ort_session(weights_path, threads)
    elif getattr(backend, "ov_compiled_model", None) is not None:
        backend.compile_model.keywords["config"]["INFERENCE_NUM_THREADS"] = threads
        xml = next(Path(weights_path).glob("*.xml")) if Path(weights_path).is_dir() else weights_path
        backend.ov_compiled_model = backend.compile_model(str(xml))


def limit_rtmpose(model, weights_path: Path, threads: int) -> None:
    if model.backend == "onnxruntime" and getattr(model, "device", "cpu") == "cpu":
        model.session = _ort_session(weights_path, threads)


def limit_process(threads: int) -> None:
    """torch (SAM2, validation helpers) and OpenCV pools."""
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
