"""Which device a curation model runs on, checked before it loads: "cuda" without a GPU is an error, never a silent
CPU run.

torch models (SAM2, TransNetV2) need torch to see a GPU; ONNX models (the YOLO detector and segmenter, DWPose)
also need ONNX Runtime's CUDA provider (the onnxruntime-gpu package). MediaPipe's Python solutions and the OpenVINO
pose export have no CUDA path: they run on the CPU whatever is asked (PoseEstimator.device says so).
"""

from __future__ import annotations

from .errors import CurationError


def check_device(device: str, what: str = "this stage") -> str:
    """``device`` if torch can run on it."""
    import torch

    if not device.startswith(("cpu", "cuda")):
        raise CurationError(f"device {device!r} is not supported for {what}", "use --device cpu or --device cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CurationError(f"device {device!r} was asked for {what} but torch sees no CUDA GPU",
                            "use --device cpu, or run on a machine with an NVIDIA GPU and its driver")
    return device


def check_onnx_device(device: str, what: str = "this stage") -> str:
    """``device`` if ONNX Runtime can run on it (on a GPU: its CUDA execution provider is installed)."""
    check_device(device, what)
    if device.startswith("cuda"):
        check_onnx_cuda(device, what)
    return device


def check_onnx_cuda(device: str, what: str) -> None:
    """A CurationError when ONNX Runtime has no CUDA execution provider (the package, whether or not a GPU is here:
    a Ray driver checks it for the cluster's workers, which share its environment)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise CurationError(
            f"device {device!r} was asked for {what} but ONNX Runtime has no CUDA provider "
            f"(it has {', '.join(ort.get_available_providers())})",
            "pip install onnxruntime-gpu (the same version as onnxruntime) in place of onnxruntime, or use "
            "--device cpu")


def gpu_index(device: str) -> int:
    """The GPU number of "cuda" / "cuda:N" (0 for plain "cuda")."""
    return int(device.split(":")[1]) if ":" in device else 0
