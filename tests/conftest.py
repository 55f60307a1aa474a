"""Shared fixtures: real weights and clips from ../shared (or $AVATAR_WEIGHTS_DIR / $AVATAR_DATA_DIR).

Under AVATAR_REQUIRE_WEIGHTS=1 (CI) a missing file of shared/models fails the test instead of skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("YOLO_OFFLINE", "True")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _require(path: Path, what: str) -> Path:
    if path.exists():
        return path
    msg = f"{what} not found at {path}"
    if os.environ.get("AVATAR_REQUIRE_WEIGHTS") == "1":
        pytest.fail(msg + " (AVATAR_REQUIRE_WEIGHTS=1)")
    pytest.skip(msg + ": set AVATAR_WEIGHTS_DIR / AVATAR_DATA_DIR")


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    root = Path(os.environ.get("AVATAR_WEIGHTS_DIR") or SHARED / "models")
    _require(root / "yolov8n_int8.onnx", "shared weights")
    os.environ["AVATAR_WEIGHTS_DIR"] = str(root)
    return root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = Path(os.environ.get("AVATAR_DATA_DIR") or SHARED / "data")
    return _require(root, "shared clips")


@pytest.fixture(scope="session")
def annotator(weights_dir):
    """The embedded-default annotator with the real-weight backends (loaded once)."""
    from curation import AnnotatorConfig, ClipAnnotator, ReadConfig

    config = AnnotatorConfig(weights_dir=str(weights_dir), read=ReadConfig(max_side=480, max_frames=8))
    config.tracker.backend = "ultralytics"
    config.pose.backend = "ultralytics"
    return ClipAnnotator(config)


def crossing_clips(data_dir: Path, count: int = 1):
    """The first `count` two-person crossings (no full occlusion, someone partly hidden) with exact ground truth."""
    from curation.synthetic import generate_clip

    found = []
    for seed in range(200):
        clip = generate_clip(seed, num_persons=2, num_frames=12, size=(480, 270), root=str(data_dir))
        if not clip.meta["full_occlusion"] and min(clip.meta["min_visible_fraction"]) < 0.9:
            found.append(clip)
            if len(found) == count:
                return found
    raise AssertionError(f"only {len(found)} partially occluded 2-person clips in 200 seeds")


@pytest.fixture(scope="session")
def synthetic_clip(data_dir):
    """A two-person crossing (no full occlusion) with exact ground truth."""
    return crossing_clips(data_dir)[0]


def rtmpose_shaped_onnx(path: Path, num_keypoints: int = 133, input_size=(288, 384), seed: int = 0) -> Path:
    """A real ONNX network with RTMPose's input/output signature (SimCC x/y heads), random weights.

    DWPose checkpoints cannot be had offline; this exercises rtmlib's real pre/post-processing and
    onnxruntime end to end, as the sam2 tests do with a random-weight hiera.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, h = input_size
    rng = np.random.default_rng(seed)
    feats = 3 * 2 * 2
    wx = numpy_helper.from_array(rng.normal(size=(feats, num_keypoints * w * 2)).astype(np.float32), "wx")
    wy = numpy_helper.from_array(rng.normal(size=(feats, num_keypoints * h * 2)).astype(np.float32), "wy")
    sx = numpy_helper.from_array(np.array([1, num_keypoints, w * 2], np.int64), "sx")
    sy = numpy_helper.from_array(np.array([1, num_keypoints, h * 2], np.int64), "sy")
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[h // 2, w // 2], strides=[h // 2, w // 2]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "wx"], ["fx"]),
        helper.make_node("MatMul", ["flat", "wy"], ["fy"]),
        helper.make_node("Reshape", ["fx", "sx"], ["simcc_x"]),
        helper.make_node("Reshape", ["fy", "sy"], ["simcc_y"]),
    ]
    graph = helper.make_graph(
        nodes, "rtmpose_shaped",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, num_keypoints, w * 2]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, num_keypoints, h * 2])],
        initializer=[wx, wy, sx, sy],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _require_service(what: str, variable: str) -> None:
    msg = f"{what} is not available: run `bash .ci/services` (as root) or set {variable}"
    if os.environ.get("AVATAR_REQUIRE_SERVICES") == "1":
        pytest.fail(msg + " (AVATAR_REQUIRE_SERVICES=1)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of the local PostgreSQL that .ci/services starts (or $AVATAR_TEST_POSTGRES_URL)."""
    from sqlalchemy import create_engine, text

    url = os.environ.get("AVATAR_TEST_POSTGRES_URL", "postgresql+psycopg://avatar:avatar@127.0.0.1:5432/avatar_test")
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        _require_service(f"PostgreSQL at {url} ({type(exc).__name__})", "AVATAR_TEST_POSTGRES_URL")
    return url


@pytest.fixture
def postgres_url(postgres_server_url):
    """A fresh, empty PostgreSQL database for one test (dropped after)."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"avatar_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    drop_database(admin, name)
    admin.dispose()


def drop_database(admin, name: str, tries: int = 20) -> None:
    """Drop a test database. FORCE ends our own leftover connections; it is refused while a backend of another role
    (an autovacuum worker) is in the database, so then plain DROP is retried until that worker has left."""
    import time
    import warnings

    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    for attempt in range(tries):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"' + (" WITH (FORCE)" if attempt % 2 == 0 else "")))
            return
        except DBAPIError:
            time.sleep(0.5)
    warnings.warn(f"the test database {name} could not be dropped")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each store test runs on the embedded SQLite file and on a real PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "gsb.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("AVATAR_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists():
        _require_service(f"Chromium at {path}", "AVATAR_CHROMIUM")
    return path


def make_system_videos(folder: Path, case_ids, seed: int, frames: int = 8, size=(64, 48)) -> Path:
    """Tiny real H.264 videos named <case_id>.mp4 (a system's outputs for a GSB study)."""
    from curation.video import write_video

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for case_id in case_ids:
        base = rng.integers(0, 255, size=(1, size[1], size[0], 3), dtype=np.uint8)
        clip = np.repeat(base, frames, axis=0)
        clip[:, :, : (size[0] // 2)] //= 2
        write_video(folder / f"{case_id}.mp4", clip, fps=8)
    return folder


def make_curated_dataset(root: Path, weights_dir: Path, data_dir: Path, synthetic_clip) -> Path:
    """A curated dataset made by the real annotator: a synthetic 2-person crossing and the talking head (with audio)."""
    from curation import AnnotatorConfig, ClipAnnotator, ReadConfig

    config = AnnotatorConfig(weights_dir=str(weights_dir), read=ReadConfig(max_side=256, max_frames=13))
    config.tracker.backend = "ultralytics"
    config.pose.backend = "ultralytics"
    ann = ClipAnnotator(config)
    talking = data_dir / "talking_head_infinitetalk"
    results = [ann(synthetic_clip.save(root, "crossing")),
               ann(talking / "ref_video.mp4", audio=talking / "ref_video_audio_16k.wav")]
    ann.write(results, root / "dataset")
    return root / "dataset"


@pytest.fixture(scope="session")
def curated_dataset(weights_dir, data_dir, synthetic_clip, tmp_path_factory) -> Path:
    return make_curated_dataset(tmp_path_factory.mktemp("curated"), weights_dir, data_dir, synthetic_clip)


def make_talking_dataset(root: Path, weights_dir: Path, data_dir: Path, frames: int = 81) -> Path:
    """The talking head (with its audio) curated by the real annotator, its first `frames` frames."""
    from curation import AnnotatorConfig, ClipAnnotator, ReadConfig

    config = AnnotatorConfig(weights_dir=str(weights_dir), read=ReadConfig(max_side=256, max_frames=frames))
    config.tracker.backend = config.pose.backend = "ultralytics"
    ann = ClipAnnotator(config)
    talking = data_dir / "talking_head_infinitetalk"
    ann.write([ann(talking / "ref_video.mp4", audio=talking / "ref_video_audio_16k.wav")], root / "dataset")
    return root / "dataset"


@pytest.fixture(scope="session")
def talking_81(weights_dir, data_dir, tmp_path_factory):
    """81 frames of the talking head: long enough for every cascade stage."""
    return make_talking_dataset(tmp_path_factory.mktemp("talking81"), weights_dir, data_dir)


@pytest.fixture
def avatar(monkeypatch, capsys):
    """Run the `avatar` command in this process as a user would: returns (exit code, stdout, stderr)."""
    import sys

    from pipelines.cli import main

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["avatar", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
