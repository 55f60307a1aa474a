"""The numbers benchmarks/README.md reports, each tied to the results JSON and the value it comes from.

A claim names the README line it is on (a piece of text unique to that line in its section), the number as written there, the
results file and the dotted path of the value (list items by index), and `scale` when the README writes the value in
other units (ms for seconds: 1000; a percentage: 100). tests/test_readme_claims.py checks every claim: the line says
the number, and the value at the path, times `scale` and rounded as the number is written, equals it. A number typed
in by hand, or left behind when its benchmark is rerun, fails the test.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Claim:
    line: str  # text found on the README line that states the number (and on no other line)
    written: str  # the number as written: "0.622", "1.050", "82" (trailing x or % are not part of it)
    result: str  # benchmarks/results/<result>.json
    path: str  # dotted path into that JSON
    scale: float = 1.0
    section: str = ""  # the heading whose section holds the line (empty: the whole document)
    doc: str = "benchmarks/README.md"


C = Claim
TRACK_S, VAL_S = "curation_trackers", "curation_validation"
PIPE, TRAIN, PREP, MASK, DIR = "curation_pipeline", "model_train_step", "model_prepare", "model_mask_head", "directors"
LATER = "mask_iou_held_out.iou_later_frames."



def in_section(section: str, *claims: Claim) -> list[Claim]:
    return [replace(c, section=section) for c in claims]


HELD, TUNE = "curation_trackers_heldout", "curation_trackers_tuning"
OURS, NAIVE = "trackers.ultralytics_identity.all.", "trackers.ultralytics_naive_track_id.all."

VH, VT, F = "curation_validation_heldout", "curation_validation_tuning", "validation.faults."
NO_CARRY = "validation_per_frame_detection_only."

KH, MP, UL = "curation_keypoints_heldout", "backends.mediapipe.", "backends.ultralytics."

MV, LIP, ID = "metrics_validation", "lip_sync_confidence.", "identity."

CASCADE, COST, CASCADE_WAN = "model_cascade", "model_cascade_cost", "model_cascade_wan"

DIST, SW, MT = "model_distill", "sweep.", "multitask.stages."

GSB = "gsb_store"

SCALE = "curation_pipeline_scale"

WAN = "wan_memory"

MS = "model_scale"

TALK = "curation_talking"

SPEED, GRAPHS = "curation_speed", "curation_speed_graphs"
FVR = "fast_vs_reference."
SEG, DET = "graphs.yolov8n-seg_int8_320.onnx.", "graphs.yolov8n_int8.onnx."  # per-call timings in GRAPHS


def _speed_rows(name: str, speedup: str, lo: str, hi: str, j: tuple[str, str], dj: tuple[str, str, str],
                switches: tuple[str, str], alarms: tuple[str, str], fps: tuple[str, str], detect: tuple[str, str],
                pose: tuple[str, str], track: tuple[str, str]) -> list[tuple[str, str, str]]:
    """(line, written, path under sets.<name>) for one column of the curation throughput table."""
    pairs = lambda line, values, key: [(line, values[0], f"reference.{key}"), (line, values[1], f"fast.{key}")]  # noqa: E731
    return [("| speed-up (aim", speedup, FVR + "speedup_frames_per_cpu_second"),
            ("| speed-up (aim", lo, FVR + "speedup_ci95.0"), ("| speed-up (aim", hi, FVR + "speedup_ci95.1"),
            ("| J delta, fast minus", dj[0].lstrip("+"), FVR + "j_delta"),
            ("| J delta, fast minus", dj[1], FVR + "j_delta_ci95.0"), ("| J delta, fast minus", dj[2], FVR + "j_delta_ci95.1"),
            *pairs("| J, reference -> fast", j, "J"), *pairs("| ID switches, reference", switches, "id_switches"),
            *pairs("| validation false alarms", alarms, "validation_false_alarms"),
            *pairs("| frames per CPU-second", fps, "frames_per_cpu_second"),
            *pairs("| CPU-s per frame, detect", detect, "cpu_seconds_per_frame.detect"),
            *pairs("| CPU-s per frame, pose", pose, "cpu_seconds_per_frame.pose"),
            *pairs("| CPU-s per frame, track", track, "cpu_seconds_per_frame.track")]


SPEED_ROWS = {
    "heldout": _speed_rows("heldout", "2.26", "2.19", "2.33", ("0.5578", "0.5711"), ("+0.0133", "-0.0059", "0.0368"),
                           ("12", "8"), ("0.1348", "0.1349"), ("1.427", "3.225"), ("0.0917", "0.0602"),
                           ("0.1618", "0.1610"), ("0.4425", "0.0840")),
    "standard": _speed_rows("standard", "2.34", "2.27", "2.42", ("0.8333", "0.8301"), ("-0.0032", "-0.0084", "0.0010"),
                            ("6", "4"), ("0.0422", "0.0380"), ("1.257", "2.946"), ("0.0959", "0.0617"),
                            ("0.1818", "0.1780"), ("0.5125", "0.0944")),
}
MS_COLUMNS = (("params_b", "{:.2f}"), ("weights_gib", "{:.1f}"), ("train_state_gib", "{:.1f}"),
              ("per_gpu_weights_state_gib.1", "{:.1f}"), ("per_gpu_weights_state_gib.8", "{:.1f}"),
              ("per_gpu_weights_state_gib.64", "{:.1f}"), ("activations_gib_no_ckpt", "{:.0f}"),
              ("activations_gib_ckpt", "{:.1f}"), ("backward_peak_gib_ckpt_estimate", "{:.1f}"))


def scale_table_claims(rows: list[dict]) -> list[Claim]:
    """One claim per cell of the scale benchmark's memory table (benchmarks/README.md writes it from the same rows)."""
    out = []
    for i, row in enumerate(rows):
        line = f"| {row['model']} | {row['resolution']} | {row['characters']} |"
        for key, fmt in MS_COLUMNS:
            value = row
            for part in key.split("."):
                value = value[part]
            out.append(Claim(line, fmt.format(value), MS, f"memory_table.{i}.{key}", section="Scale: memory and "
                             "context parallelism"))
    return out


def scale_rows() -> list[dict]:
    """The memory table's rows in the committed results (the README's table is written from them)."""
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent / "results" / f"{MS}.json").read_text())["memory_table"]

FAST = "model_fast_sampling"
FAST_SECTION = "Fast sampling"
FAST_COLUMNS = (("tiny", "speedup_over_teacher", "{:.2f}"), ("tiny", "speedup_ci95.0", "{:.2f}"),
                ("tiny", "speedup_ci95.1", "{:.2f}"), ("tiny", "denoise_speedup_over_teacher", "{:.2f}"),
                ("tiny", "psnr_db", "{:.2f}"), ("small", "speedup_over_teacher", "{:.2f}"),
                ("small", "speedup_ci95.0", "{:.2f}"), ("small", "speedup_ci95.1", "{:.2f}"),
                ("small", "denoise_speedup_over_teacher", "{:.2f}"), ("small", "decode_share", "{:.2f}"))


def fast_table_claims() -> list[Claim]:
    """One claim per cell of the fast-sampling table (benchmarks/README.md writes it from the same rows)."""
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).parent / "results" / f"{FAST}.json").read_text())
    out = []
    for name in data["tiny"]["rows"]:
        for size, key, fmt in FAST_COLUMNS:
            if name == "teacher_50" and key == "psnr_db":
                continue  # the reference itself: the table says so
            value = data[size]["rows"][name]
            for part in key.split("."):
                value = value[int(part)] if isinstance(value, list) else value[part]
            out.append(Claim(f"| {name} |", fmt.format(value), FAST, f"{size}.rows.{name}.{key}",
                             section=FAST_SECTION))
    return out


def fast_table(data: dict) -> str:
    """The README's table, written from the results (and checked against them by the claims above)."""
    lines = ["| setting | tiny, trained: speedup over the 50-step teacher (95% CI) | tiny: denoising alone | tiny: PSNR "
             "dB vs teacher | small, random: speedup (95% CI) | small: denoising alone | small: VAE decode share |",
             "|---|---|---|---|---|---|---|"]
    for name in data["tiny"]["rows"]:
        t, m = data["tiny"]["rows"][name], data["small"]["rows"][name]
        quality = "(the reference)" if name == "teacher_50" else f"{t['psnr_db']:.2f}"
        lines.append(f"| {name} | {t['speedup_over_teacher']:.2f} ({t['speedup_ci95'][0]:.2f}-{t['speedup_ci95'][1]:.2f})"
                     f" | {t['denoise_speedup_over_teacher']:.2f} | {quality} | {m['speedup_over_teacher']:.2f} "
                     f"({m['speedup_ci95'][0]:.2f}-{m['speedup_ci95'][1]:.2f}) | {m['denoise_speedup_over_teacher']:.2f}"
                     f" | {m['decode_share']:.2f} |")
    return "\n".join(lines)


CLAIMS: list[Claim] = [
    # cascade cost (generated)
    *in_section(
        "Long-video cascade",
        C("| the cascade |", "1.5", COST, "cost.cascade.runs.0.seconds_median"),
        C("| the cascade |", "6.6", COST, "cost.cascade.runs.1.seconds_median"),
        C("| the cascade |", "24.6", COST, "cost.cascade.runs.2.seconds_median"),
        C("| the cascade |", "51.9", COST, "cost.cascade.runs.3.seconds_median"),
        C("| the cascade |", "1.01", COST, "cost.cascade.time_exponent"),
        C("| the cascade |", "0.91", COST, "cost.cascade.time_exponent_ci95.0"),
        C("| the cascade |", "1.05", COST, "cost.cascade.time_exponent_ci95.1"),
        C("| the cascade |", "1.08", COST, "cost.cascade.exponent_between_last_two"),
        C("| the cascade |", "1.11", COST, "cost.cascade.memory_ratio_longest_over_shortest"),
        C("| the cascade |", "912", COST, "cost.cascade.runs.0.peak_rss_mb"),
        C("| the cascade |", "1015", COST, "cost.cascade.runs.3.peak_rss_mb"),
        C("| chained chunks |", "2.2", COST, "cost.chained.runs.0.seconds_median"),
        C("| chained chunks |", "11.7", COST, "cost.chained.runs.1.seconds_median"),
        C("| chained chunks |", "40.2", COST, "cost.chained.runs.2.seconds_median"),
        C("| chained chunks |", "89.5", COST, "cost.chained.runs.3.seconds_median"),
        C("| chained chunks |", "1.05", COST, "cost.chained.time_exponent"),
        C("| chained chunks |", "0.96", COST, "cost.chained.time_exponent_ci95.0"),
        C("| chained chunks |", "1.08", COST, "cost.chained.time_exponent_ci95.1"),
        C("| chained chunks |", "1.16", COST, "cost.chained.exponent_between_last_two"),
        C("| chained chunks |", "1.10", COST, "cost.chained.memory_ratio_longest_over_shortest"),
        C("| chained chunks |", "910", COST, "cost.chained.runs.0.peak_rss_mb"),
        C("| chained chunks |", "999", COST, "cost.chained.runs.3.peak_rss_mb"),
        C("| a single pass over the whole clip |", "0.6", COST, "cost.single_pass.runs.0.seconds_median"),
        C("| a single pass over the whole clip |", "2.4", COST, "cost.single_pass.runs.1.seconds_median"),
        C("| a single pass over the whole clip |", "21.2", COST, "cost.single_pass.runs.2.seconds_median"),
        C("| a single pass over the whole clip |", "53.7", COST, "cost.single_pass.runs.3.seconds_median"),
        C("| a single pass over the whole clip |", "1.31", COST, "cost.single_pass.time_exponent"),
        C("| a single pass over the whole clip |", "1.12", COST, "cost.single_pass.time_exponent_ci95.0"),
        C("| a single pass over the whole clip |", "1.35", COST, "cost.single_pass.time_exponent_ci95.1"),
        C("| a single pass over the whole clip |", "1.34", COST, "cost.single_pass.exponent_between_last_two"),
        C("| a single pass over the whole clip |", "1.50", COST, "cost.single_pass.memory_ratio_longest_over_shortest"),
        C("| a single pass over the whole clip |", "921", COST, "cost.single_pass.runs.0.peak_rss_mb"),
        C("| a single pass over the whole clip |", "1378", COST, "cost.single_pass.runs.3.peak_rss_mb"),
        C("| exponent, cascade minus chained |", "-0.04".lstrip("+"), COST, "cost.exponent_cascade_minus_chained.value"),
        C("| exponent, cascade minus chained |", "-0.11".lstrip("+"), COST, "cost.exponent_cascade_minus_chained.ci95.0"),
        C("| exponent, cascade minus chained |", "+0.04".lstrip("+"), COST, "cost.exponent_cascade_minus_chained.ci95.1"),
        C("| exponent, cascade minus single pass |", "-0.30".lstrip("+"), COST, "cost.exponent_cascade_minus_single_pass.value"),
        C("| exponent, cascade minus single pass |", "-0.33".lstrip("+"), COST, "cost.exponent_cascade_minus_single_pass.ci95.0"),
        C("| exponent, cascade minus single pass |", "-0.16".lstrip("+"), COST, "cost.exponent_cascade_minus_single_pass.ci95.1"),

    ),
    # end cascade cost
    *in_section(
        "Curation throughput",
        C("the square input gave 1.80x", "1.80", "curation_speed_tuning",
          "tuning.float_square_vs_reference.speedup_frames_per_cpu_second"),
        C("float graphs at fitted input sizes 2.26x", "2.26", "curation_speed_tuning",
          "tuning.fast_vs_reference.speedup_frames_per_cpu_second"),
        C("float graphs at fitted input sizes 2.26x", "-0.006", "curation_speed_tuning", "tuning.fast_vs_reference.j_delta"),
        *[C(line, written, SPEED, f"sets.{name}.{path}") for name, rows in SPEED_ROWS.items()
          for line, written, path in rows],
        C("(#tracker-accuracy-held-out-set) (0.5578)", "0.5578", HELD, OURS + "J"),
        C("(#tracker-accuracy-held-out-set) (0.5578)", "0.5578", SPEED, "sets.heldout.reference.J"),
        C("End to end through the Ray pipeline:", "2.971", SPEED, "pipeline_end_to_end.frames_per_s.fast.median"),
        C("End to end through the Ray pipeline:", "1.7345", SPEED,
          "pipeline_end_to_end.frames_per_s.reference.median"),
        C("End to end through the Ray pipeline:", "2", SPEED, "pipeline_end_to_end.rounds"),
        C("End to end through the Ray pipeline:", "1.713", SPEED, "pipeline_end_to_end.speedup_median"),
        C("End to end through the Ray pipeline:", "1.602", SPEED, "pipeline_end_to_end.speedup_range.0"),
        C("End to end through the Ray pipeline:", "1.837", SPEED, "pipeline_end_to_end.speedup_range.1"),
        C("0.013 higher there", "0.013", SPEED, "j_delta_heldout"),
        C("and its interval", "-0.006", SPEED, "sets.heldout.fast_vs_reference.j_delta_ci95.0"),
        C("and its interval", "0.037", SPEED, "sets.heldout.fast_vs_reference.j_delta_ci95.1"),
        C("(24 clips x 24", "24", SPEED, "config.clips"),
        C("(24 clips x 24", "24", SPEED, "config.frames"),
        C("settings (shots and talk included), 8", "8", SPEED, "pipeline_end_to_end.clips"),
        C("segmenter as exported 114.0 ms", "114.0", GRAPHS, SEG + "as_exported.ms_median"),
        C("segmenter as exported 114.0 ms", "31.7", GRAPHS, SEG + "float.ms_median"),
        C("segmenter as exported 114.0 ms", "19.3", GRAPHS, SEG + "float_fitted.ms_median"),
        C("detector as exported 87.4 ms", "87.4", GRAPHS, DET + "as_exported.ms_median"),
        C("detector as exported 87.4 ms", "94.1", GRAPHS, DET + "float.ms_median"),
        C("detector as exported 87.4 ms", "55.5", GRAPHS, DET + "float_fitted.ms_median"),
        C("`--set graphs`, median of 30", "30", GRAPHS, "config.repeats"),
    ),
    *in_section(
        "Scale",
        C("| rows in clips.parquet / distinct inputs |", "100", SCALE, "scale.100.rows_in_clips_parquet"),
        C("| rows in clips.parquet / distinct inputs |", "100", SCALE, "scale.100.unique_inputs"),
        C("| rows in clips.parquet / distinct inputs |", "247", SCALE, "scale.250.rows_in_clips_parquet"),
        C("| rows in clips.parquet / distinct inputs |", "247", SCALE, "scale.250.unique_inputs"),
        C("| done / failed", "96", SCALE, "scale.100.done"), C("| done / failed", "4", SCALE, "scale.100.failed"),
        C("| done / failed", "237", SCALE, "scale.250.done"), C("| done / failed", "10", SCALE, "scale.250.failed"),
        C("| peak memory of the whole process tree", "4169", SCALE, "scale.100.peak_pss_mb_process_tree"),
        C("| peak memory of the whole process tree", "4230", SCALE, "scale.250.peak_pss_mb_process_tree"),
        C("| frames/s, steady |", "3.91", SCALE, "scale.100.steady_frames_per_s"),
        C("| frames/s, steady |", "3.47", SCALE, "scale.250.steady_frames_per_s"),
    ),
    *in_section(
        "Talking-video curation",
        C("| cuts: recall (precision) |", "1.000", TALK, "shots.composites.reporting.transnetv2.cut.recall.value"),
        C("| cuts: recall (precision) |", "98", TALK, "shots.composites.reporting.transnetv2.cut.recall.total"),
        C("| dissolves: recall |", "1.000", TALK, "shots.composites.reporting.transnetv2.dissolve.recall.value"),
        C("| dissolves: recall |", "0.031", TALK, "shots.composites.reporting.scenedetect.dissolve.recall.value"),
        C("| false cuts on the 16 real", "16", TALK, "shots.real_single_shot_clips.transnetv2.clips"),
        C("| false cuts on the 16 real", "0", TALK, "shots.real_single_shot_clips.transnetv2.false_cuts_total"),
        C("| false cuts on the 16 real", "0", TALK, "shots.real_single_shot_clips.scenedetect.false_cuts_total"),
        C("| seconds per frame, decode included", "0.0305", TALK, "shots.cost.transnetv2.seconds_per_frame.median"),
        C("| seconds per frame, decode included", "0.0035", TALK, "shots.cost.scenedetect.seconds_per_frame.median"),
        C("the code's `SyncCalibration()`: zero 2", "2", TALK, "sync.calibration.derived.zero"),
        C("spread 4 frames, correct_confidence 0.18", "4", TALK, "sync.calibration.derived.spread"),
        C("spread 4 frames, correct_confidence 0.18", "0.18", TALK, "sync.calibration.derived.correct_confidence"),
        C("spread 4 frames, correct_confidence 0.18", "0.10", TALK, "sync.calibration.derived.min_confidence"),
        C("lies a median of 3 frames", "3", TALK, "sync.held_out.distance_from_zero.median"),
        C("and at most 17 frames", "17", TALK, "sync.held_out.distance_from_zero.max"),
        C("0.571 of clips fall within", "0.571", TALK, "sync.held_out.distance_from_zero.share_within_spread.mean"),
        C("within a frame in 0.744 of cases", "0.744", TALK, "sync.held_out.shift_recovery.relative_recovery.mean"),
        C("within a frame in 0.744 of cases", "0.536", TALK,
          "sync.held_out.shift_recovery.relative_recovery.ci95.0"),
        C("within a frame in 0.744 of cases", "0.923", TALK,
          "sync.held_out.shift_recovery.relative_recovery.ci95.1"),
        C("within a frame in only 0.006", "0.006", TALK, "sync.held_out.shift_recovery.absolute_recovery.mean"),
        C("Of the 50 shifts the rule", "50", TALK,
          "sync.held_out.shift_recovery.corrected_right_among_corrected.total"),
        C("Of the 50 shifts the rule", "0", TALK, "sync.held_out.shift_recovery.corrected_right_among_corrected.hits"),
        C("moved two of its three clips by -8", "8", TALK, "speakers.msdwild_00001.clips.0.sync.shift_frames", scale=-1),
        C("moved two of its three clips by -8", "11", TALK, "speakers.msdwild_00001.clips.1.sync.shift_frames",
          scale=-1),
        C("only 0.286 of clips were rejected", "0.286", TALK, "sync.held_out.dubbed.rejected_share.mean"),
        C("(607 frames, 3 people", "607", TALK, "speakers.msdwild_00001.frames"),
        *[C(row, w, TALK, f"speakers.{where}.{key}{leaf}")
          for row, name, cells in (
              ("| who_speaks (ours", "who_speaks (curation)", (("0.859", "0.766", "0.933"), ("0.685", "0.653", "0.715"))),
              ("| VAD and the most moving mouth", "vad_most_moving_mouth",
               (("0.866", "0.773", "0.938"), ("0.687", "0.656", "0.716"))),
              ("| VAD alone", "vad_alone", (("0.411",), ("0.466",))),
              ("| the largest face always", None, (("0.523",), ("0.552",))),
              ("| nobody speaks", "nobody", (("0.602",), ("0.624",))))
          for where, written, leaves in (("msdwild_00001.accuracy", cells[0], (".overall.value", ".overall.ci95.0",
                                                                                 ".overall.ci95.1")),
                                         ("conversations.reporting.listeners=pause,k=2 and 3", cells[1],
                                          (".accuracy.mean", ".accuracy.ci95.0", ".accuracy.ci95.1")))
          for w, leaf in zip(written, leaves)
          for key in [name or ("largest_face_always" if where.startswith("msdwild") else
                               "largest_face_always (talker 0)")]],
        C("0.572 for ours against 0.624", "0.572", TALK,
          "speakers.conversations.reporting.listeners=moving,k=2 and 3.who_speaks (curation).accuracy.mean"),
        C("0.572 for ours against 0.624", "0.624", TALK,
          "speakers.conversations.reporting.listeners=moving,k=2 and 3.nobody.accuracy.mean"),
        C("take 0.0499 of the per-frame", "0.0499", TALK, "cost.stages_a.added_stages_share"),
        C("take 0.0499 of the per-frame", "0.0375", TALK, "cost.stages_a.seconds_per_frame.shots"),
        C("take 0.0499 of the per-frame", "0.0009", TALK, "cost.stages_a.seconds_per_frame.talk"),
        C("over with them: median 1.06", "1.06", TALK, "cost.ratio_b_over_a.median"),
        C("over with them: median 1.06", "0.93", TALK, "cost.ratio_b_over_a.min"),
        C("over with them: median 1.06", "1.19", TALK, "cost.ratio_b_over_a.max"),
    ),
    *in_section(
        "GSB store and scoring",
        C("| SQLite |", "1940", GSB, "load.sqlite.ours_threads.judgments_per_s"),
        C("| SQLite |", "2392", GSB, "load.sqlite.ours_processes.judgments_per_s"),
        C("| SQLite |", "230", GSB, "load.sqlite.ours_threads.latency_p95_ms"),
        C("| SQLite |", "109", GSB, "load.sqlite.ours_processes.latency_p95_ms"),
        C("| PostgreSQL |", "1056", GSB, "load.postgresql.ours_threads.judgments_per_s"),
        C("| PostgreSQL |", "1104", GSB, "load.postgresql.ours_processes.judgments_per_s"),
        C("| PostgreSQL |", "177", GSB, "load.postgresql.ours_threads.latency_p95_ms"),
        C("| PostgreSQL |", "139", GSB, "load.postgresql.ours_processes.latency_p95_ms"),
        C("transactions, SQLite |", "2.12", GSB, "load.sqlite.ours_over_naive_judgments_per_s_threads"),
        C("transactions, SQLite |", "1.69", GSB, "load.sqlite.ours_over_naive_judgments_per_s_processes"),
        C("transactions, PostgreSQL |", "2.34", GSB, "load.postgresql.ours_over_naive_judgments_per_s_threads"),
        C("transactions, PostgreSQL |", "1.95", GSB, "load.postgresql.ours_over_naive_judgments_per_s_processes"),
        C("| scoring |", "0.29", GSB, "scoring.score_seconds"),
        C("| scoring |", "0.6", GSB, "scoring.read_seconds"),
    ),
    *in_section(
        "Few-step distillation",
        C("| 1 | 0.072", "0.072", DIST, SW + "1.student_over_teacher_fitted"),
        C("| 2 | 0.18", "0.18", DIST, SW + "2.student_over_teacher_fitted"),
        C("| 4 | **0.30**", "0.30", DIST, SW + "4.student_over_teacher_fitted"),
        C("| 8 | 0.46", "0.46", DIST, SW + "8.student_over_teacher_fitted"),
        C("| 1 | 0.072", "0.052", DIST, SW + "1.ci95_student_over_teacher_fitted.0"),
        C("| 1 | 0.072", "0.095", DIST, SW + "1.ci95_student_over_teacher_fitted.1"),
        C("| 1 | 0.072", "0.072", DIST, SW + "1.student_over_teacher_shifted"),
        C("| 2 | 0.18", "0.10", DIST, SW + "2.ci95_student_over_teacher_fitted.0"),
        C("| 2 | 0.18", "0.29", DIST, SW + "2.ci95_student_over_teacher_fitted.1"),
        C("| 2 | 0.18", "0.024", DIST, SW + "2.student_over_teacher_shifted"),
        C("| 2 | 0.18", "0.133", DIST, SW + "2.fitted_over_shifted_teacher"),
        C("| 4 | **0.30**", "0.15", DIST, SW + "4.ci95_student_over_teacher_fitted.0"),
        C("| 4 | **0.30**", "0.42", DIST, SW + "4.ci95_student_over_teacher_fitted.1"),
        C("| 4 | **0.30**", "0.030", DIST, SW + "4.student_over_teacher_shifted"),
        C("| 4 | **0.30**", "0.100", DIST, SW + "4.fitted_over_shifted_teacher"),
        C("| 8 | 0.46", "0.34", DIST, SW + "8.ci95_student_over_teacher_fitted.0"),
        C("| 8 | 0.46", "0.55", DIST, SW + "8.ci95_student_over_teacher_fitted.1"),
        C("| 8 | 0.46", "0.016", DIST, SW + "8.student_over_teacher_shifted"),
        C("| 8 | 0.46", "0.035", DIST, SW + "8.fitted_over_shifted_teacher"),
        C("| 4, LoRA rank 8 |", "0.35", DIST, "lora.student_over_teacher_fitted"),
        C("| 4, LoRA rank 8 |", "0.035", DIST, "lora.student_over_teacher_shifted"),
        C("own error to 0.035-0.13", "0.035", DIST, SW + "8.fitted_over_shifted_teacher"),
        C("own error to 0.035-0.13", "0.13", DIST, SW + "2.fitted_over_shifted_teacher"),
        C("(0.016-0.072) is mostly that", "0.016", DIST, SW + "8.student_over_teacher_shifted"),
        C("(0.016-0.072) is mostly that", "0.072", DIST, SW + "1.student_over_teacher_shifted"),
        C("| blueprint |", "0.35", DIST, MT + "blueprint.student_over_teacher_fitted"),
        C("| blueprint |", "0.029", DIST, MT + "blueprint.student_over_teacher_shifted"),
        C("| keyframe |", "1.02", DIST, MT + "keyframe.student_over_teacher_fitted"),
        C("| keyframe |", "0.063", DIST, MT + "keyframe.student_over_teacher_shifted"),
        C("| sub-clip |", "0.40", DIST, MT + "subclip.student_over_teacher_fitted"),
        C("| sub-clip |", "0.040", DIST, MT + "subclip.student_over_teacher_shifted"),
        C("| interpolation |", "0.33", DIST, MT + "interpolate.student_over_teacher_fitted"),
        C("| interpolation |", "0.034", DIST, MT + "interpolate.student_over_teacher_shifted"),
        C("| SR |", "0.13", DIST, MT + "sr.student_over_teacher_fitted"),
        C("| SR |", "0.016", DIST, MT + "sr.student_over_teacher_shifted"),
        C("| the student |", "54.6", DIST, "multitask.video.psnr_db_vs_teacher_50.student_4"),
        C("| the teacher, fitted schedule |", "49.6", DIST, "multitask.video.psnr_db_vs_teacher_50.teacher_4_fitted"),
        C("| the teacher, shifted schedule |", "43.0", DIST, "multitask.video.psnr_db_vs_teacher_50.teacher_4_shifted"),
        C("the whole 5 s cascade 3.9x", "3.9", DIST, "multitask.video.speedup_student_vs_teacher_50"),
        C("the multi-task one 142 s", "142", DIST, "multitask.distill_s"),
        C("each distillation 37-53 s", "37", DIST, SW + "4.distill_s"),
        C("each distillation 37-53 s", "53", DIST, SW + "1.distill_s"),
        C("Each stage samples 12-14x", "12", DIST, MT + "blueprint.speedup_vs_teacher_50"),
        C("Each stage samples 12-14x", "14", DIST, MT + "interpolate.speedup_vs_teacher_50"),
    ),
    *in_section(
        "Long-video cascade",
        C("| colour distance slope, cascade |", "0.10", CASCADE, "drift.cascade.colour_slope_per_min"),
        C("| colour distance slope, cascade |", "-0.16", CASCADE, "drift.cascade.colour_slope_ci95.0"),
        C("| colour distance slope, cascade |", "0.37", CASCADE, "drift.cascade.colour_slope_ci95.1"),
        C("| colour distance slope, chained |", "0.16", CASCADE, "drift.chained.colour_slope_per_min"),
        C("| colour distance slope, chained |", "-0.16", CASCADE, "drift.chained.colour_slope_ci95.0"),
        C("| colour distance slope, chained |", "0.49", CASCADE, "drift.chained.colour_slope_ci95.1"),
        C("| ratio | 0.63", "0.63", CASCADE, "drift.colour_slope_per_min_ratio_cascade_over_chained"),
        C("| seams: frame change at sub-clip joins", "0.92", CASCADE, "drift.cascade.seam_ratio"),
        C("| seams: frame change at sub-clip joins", "0.93", CASCADE, "drift.chained.seam_ratio"),
        C("| identity | not measurable", "1", CASCADE, "drift.chained.identity_seconds_scored"),
        C("| identity | not measurable", "2", CASCADE, "drift.cascade.identity_seconds_scored"),
        C("| 2 Ray actors against serial", "0.55", CASCADE, "parallel.speedup"),
        C("| Wan-1.3B-shaped stage (meta build) |", "1.71", CASCADE_WAN, "wan_1_3b_shaped.per_stage.sr.parameters_b"),
        C("| Wan-1.3B-shaped stage (meta build) |", "3.2", CASCADE_WAN, "wan_1_3b_shaped.per_stage.sr.bf16_weights_gb"),
        C("| Wan-1.3B-shaped stage (meta build) |", "676", CASCADE_WAN, "wan_1_3b_shaped.per_stage.keyframe.tokens_per_pass"),
        C("| Wan-1.3B-shaped stage (meta build) |", "29744", CASCADE_WAN, "wan_1_3b_shaped.per_stage.sr.tokens_per_pass"),
    ),
    *in_section(
        "Automatic metrics",
        C("| lip sync offset |", "82", MV, "lip_sync_offsets.recovered_share", 100),
        C("| lip sync offset |", "92", MV, "lip_sync_offsets.recovered_share_within_search", 100),
        C("| lip sync confidence, held-out clips |", "0.70", MV, LIP + "held_out.auc_own_vs_other_speaker"),
        C("| lip sync confidence, held-out clips |", "0.67", MV, LIP + "held_out.auc_own_vs_same_speaker_other_time"),
        C("| lip sync confidence, held-out clips |", "0.65", MV, LIP + "held_out.auc_own_vs_own_shifted_beyond_search"),
        C("| lip sync confidence, held-out clips |", "21", MV, LIP + "held_out.windows"),
        C("| lip sync confidence, held-out clips |", "30", MV, LIP + "shift_beyond_search_frames"),
        C("| lip sync, sanity check only |", "1.00", MV, LIP + "held_out.sanity_auc_own_vs_silence"),
        C("(tuning half:", "0.71", MV, LIP + "tuning.auc_own_vs_other_speaker"),
        C("(tuning half:", "0.72", MV, LIP + "tuning.auc_own_vs_same_speaker_other_time"),
        C("(tuning half:", "0.61", MV, LIP + "tuning.auc_own_vs_own_shifted_beyond_search"),
        C("| speaker assignment |", "2", MV, "speaker_assignment.tracks_assigned_correctly"),
        C("| speaker of a 4 s window", "1", MV, "speaker_assignment.windows_speaker_found"),
        C("| speaker of a 4 s window", "5", MV, "speaker_assignment.windows_one_speaker"),
        C("| identity across conditions |", "1.000", MV, ID + "same_person_distant_vs_other_people.pooled.roc_auc"),
        C("| identity across conditions |", "0.004", MV,
          ID + "same_person_distant_vs_other_people.pooled.equal_error_rate"),
        C("| identity across conditions |", "0.978", MV,
          ID + "same_person_distant_vs_other_people.pooled.similarity_same_median"),
        C("| identity across conditions |", "0.830", MV,
          ID + "same_person_distant_vs_other_people.pooled.similarity_different_median"),
        C("| identity across conditions |", "17", MV, ID + "people"),
        C("| identity within one recording |", "0.999", MV,
          ID + "same_person_distant_vs_other_people_same_recording.roc_auc"),
        C("| identity within one recording |", "0.016", MV,
          ID + "same_person_distant_vs_other_people_same_recording.equal_error_rate"),
        C("| identity within one recording |", "0.957", MV,
          ID + "same_person_distant_vs_other_people_same_recording.similarity_same_median"),
        C("| identity within one recording |", "0.902", MV,
          ID + "same_person_distant_vs_other_people_same_recording.similarity_different_median"),
        C("| identity, older figure |", "1.000", MV, ID + "frames_of_one_clip_vs_other_clips.roc_auc"),
        C("| hands (**experimental**) |", "1", MV, "hands_under_blur.monotonic_clips"),
        C("degradations (median similarity", "0.977", MV,
          ID + "same_person_distant_vs_other_people.compression.similarity_same_median"),
        C("degradations (median similarity", "0.979", MV,
          ID + "same_person_distant_vs_other_people.none.similarity_same_median"),
        C("Cost on this 2-core CPU:", "65", MV, "cost.faces_fps"),
        C("Cost on this 2-core CPU:", "82", MV, "cost.temporal_fps"),
        C("Cost on this 2-core CPU:", "86", MV, "cost.hands_fps"),
        C("identity 12 embeddings/s", "12", MV, "cost.identity_embeddings_per_s"),
    ),
    *in_section(
        "Validation on injected faults, standard set",
        C("| gross faults |", "1.00", VAL_S, F + "id_swap.gross.recall"),
        C("| gross faults |", "0.99", VAL_S, F + "dropped_mask.gross.recall"),
        C("| gross faults |", "0.99", VAL_S, F + "shifted_mask.gross.recall"),
        C("| gross faults |", "1.00", VAL_S, F + "merged_persons.gross.recall"),
        C("| gross faults |", "0.38", VAL_S, F + "leak.gross.recall"),
        C("| subtle faults |", "1.00", VAL_S, F + "id_swap.2.recall"),
        C("| subtle faults |", "0.55", VAL_S, F + "merged_persons.0.25.recall"),
        C("| subtle faults |", "0.85", VAL_S, F + "merged_persons.0.5.recall"),
        C("| subtle faults |", "0.00", VAL_S, F + "shifted_mask.2.recall"),
        C("| subtle faults |", "0.03", VAL_S, F + "shifted_mask.4.recall"),
        C("| subtle faults |", "0.08", VAL_S, F + "shifted_mask.8.recall"),
        C("| subtle faults |", "0.007", VAL_S, F + "leak.0.1.recall"),
        C("| subtle faults |", "0.019", VAL_S, F + "leak.0.25.recall"),
        C("| subtle faults |", "0.055", VAL_S, F + "leak.0.5.recall"),
        C("| false alarms on untouched ground truth |", "0.042", VAL_S, "validation.false_alarm_on_ground_truth"),
        C("| false alarms on untouched ground truth |", "0.027", VAL_S, "validation.false_alarm_on_ground_truth_ci95.0"),
        C("| false alarms on untouched ground truth |", "0.058", VAL_S, "validation.false_alarm_on_ground_truth_ci95.1"),
    ),
    *in_section(
        "Tracker accuracy, standard set",
        C("| J / F, ultralytics backend |", "0.833", TRACK_S, OURS + "J"),
        C("| J / F, ultralytics backend |", "0.872", TRACK_S, OURS + "F"),
        C("| J / F, the naive baseline", "0.798", TRACK_S, NAIVE + "J"),
        C("| J / F, the naive baseline", "0.838", TRACK_S, NAIVE + "F"),
        C("| the association alone |", "1.045", TRACK_S, OURS + "J_ratio_vs_naive_same_refinement.ratio"),
        C("| the association alone |", "1.016", TRACK_S, OURS + "J_ratio_vs_naive_same_refinement.ci95.0"),
        C("| the association alone |", "1.082", TRACK_S, OURS + "J_ratio_vs_naive_same_refinement.ci95.1"),
        C("| both without refinement |", "0.780", TRACK_S, "trackers.ultralytics_identity_no_refine.all.J"),
        C("| both without refinement |", "0.749", TRACK_S, "trackers.ultralytics_naive_track_id_no_refine.all.J"),
        C("| the segmenter's per-frame oracle", "0.837", TRACK_S, OURS + "segmenter_oracle_refined_J"),
        C("| the segmenter's per-frame oracle", "0.791", TRACK_S,
          "trackers.ultralytics_identity_no_refine.all.segmenter_oracle_J"),
        C("| ID switches (CLEAR-MOT", "6", TRACK_S, "trackers.ultralytics_identity.without_full_occlusion.id_switches"),
        C("| ID switches (CLEAR-MOT", "23", TRACK_S, "trackers.ultralytics_identity.without_full_occlusion.clips"),
    ),
    *in_section(
        "Keypoints vs exact masks",
        C("| held-out, 24 clips |", "0.958", KH, MP + "in_own_mask"),
        C("| held-out, 24 clips |", "0.033", KH, MP + "in_other_mask"),
        C("| held-out, 24 clips |", "0.938", KH, MP + "in_own_mask_ci95.0"),
        C("| held-out, 24 clips |", "0.976", KH, MP + "in_own_mask_ci95.1"),
        C("| held-out, 24 clips |", "0.016", KH, MP + "in_other_mask_ci95.0"),
        C("| held-out, 24 clips |", "0.052", KH, MP + "in_other_mask_ci95.1"),
        C("| held-out, 24 clips |", "0.957", KH, UL + "in_own_mask"),
        C("| held-out, 24 clips |", "0.026", KH, UL + "in_other_mask"),
        C("| held-out, people with human masks |", "0.966", KH, MP + "by_mask_source.human_masks.in_own"),
        C("| held-out, people with human masks |", "0.033", KH, MP + "by_mask_source.human_masks.in_other"),
        C("| held-out, people with human masks |", "0.954", KH, UL + "by_mask_source.human_masks.in_own"),
        C("| held-out, people with human masks |", "0.040", KH, UL + "by_mask_source.human_masks.in_other"),
        C("| held-out, by part |", "0.952", KH, MP + "by_part.body_feet.in_own"),
        C("| held-out, by part |", "0.971", KH, MP + "by_part.face.in_own"),
        C("| held-out, by part |", "0.984", KH, MP + "by_part.left_hand.in_own"),
        C("| held-out, by part |", "0.975", KH, MP + "by_part.right_hand.in_own"),
        C("| tuning, 24 clips |", "0.967", "curation_keypoints_tuning", MP + "in_own_mask"),
        C("| tuning, 24 clips |", "0.029", "curation_keypoints_tuning", MP + "in_other_mask"),
        C("| tuning, 24 clips |", "0.963", "curation_keypoints_tuning", UL + "in_own_mask"),
        C("| tuning, 24 clips |", "0.027", "curation_keypoints_tuning", UL + "in_other_mask"),
        C("| standard, 16 clips |", "0.974", "curation_keypoints", MP + "in_own_mask"),
        C("| standard, 16 clips |", "0.025", "curation_keypoints", MP + "in_other_mask"),
        C("| standard, 16 clips |", "0.972", "curation_keypoints", UL + "in_own_mask"),
        C("| standard, 16 clips |", "0.019", "curation_keypoints", UL + "in_other_mask"),
    ),
    *in_section(
        "Validation on injected faults, held-out set",
        C("| gross faults |", "0.71", VH, F + "id_swap.gross.recall"),
        C("| gross faults |", "1.00", VH, F + "dropped_mask.gross.recall"),
        C("| gross faults |", "1.00", VH, F + "shifted_mask.gross.recall"),
        C("| gross faults |", "1.00", VH, F + "merged_persons.gross.recall"),
        C("| gross faults |", "0.26", VH, F + "leak.gross.recall"),
        C("| subtle faults |", "0.84", VH, F + "id_swap.2.recall"),
        C("| subtle faults |", "0.69", VH, F + "merged_persons.0.25.recall"),
        C("| subtle faults |", "0.79", VH, F + "merged_persons.0.5.recall"),
        C("| subtle faults |", "0.06", VH, F + "shifted_mask.2.recall"),
        C("| subtle faults |", "0.11", VH, F + "shifted_mask.4.recall"),
        C("| subtle faults |", "0.08", VH, F + "shifted_mask.8.recall"),
        C("| subtle faults |", "0.06", VH, F + "leak.0.1.recall"),
        C("| subtle faults |", "0.07", VH, F + "leak.0.25.recall"),
        C("| subtle faults |", "0.05", VH, F + "leak.0.5.recall"),
        C("| **false alarms on untouched ground truth** |", "0.135", VH, "validation.false_alarm_on_ground_truth"),
        C("| **false alarms on untouched ground truth** |", "0.089", VH, "validation.false_alarm_on_ground_truth_ci95.0"),
        C("| **false alarms on untouched ground truth** |", "0.183", VH, "validation.false_alarm_on_ground_truth_ci95.1"),
        C("showing at least half of the person |", "0.068", VH,
          "false_alarms_on_ground_truth_by_visibility.visible_at_least_half.false_alarm"),
        C("hidden more than half |", "0.554", VH,
          "false_alarms_on_ground_truth_by_visibility.visible_less_than_half.false_alarm"),
        C("| the same checks without carrying", "0.193", VH, NO_CARRY + "false_alarm_on_ground_truth"),
        C("| the same checks without carrying", "0.806", VH, NO_CARRY + "recall_gross_faults"),
        C("| the same checks without carrying", "0.794", VH, "validation.recall_gross_faults"),
        C("| the same checks without carrying", "0.314", VH, NO_CARRY + "recall_subtle_faults"),
        C("| the same checks without carrying", "0.306", VH, "validation.recall_subtle_faults"),
        C("| what still fires on ground truth |", "134", VH, "checks_fired_on_ground_truth.no_detection"),
        C("| what still fires on ground truth |", "76", VH, "checks_fired_on_ground_truth.temporal_jump"),
        C("| what still fires on ground truth |", "73", VH, "checks_fired_on_ground_truth.area_jump"),
    ),
    *in_section(
        "Validation on injected faults, tuning set",
        C("| gross faults |", "0.84", VT, F + "id_swap.gross.recall"),
        C("| gross faults |", "0.99", VT, F + "dropped_mask.gross.recall"),
        C("| gross faults |", "0.37", VT, F + "leak.gross.recall"),
        C("| false alarms on untouched ground truth |", "0.135", VT, "validation.false_alarm_on_ground_truth"),
        C("| false alarms on untouched ground truth |", "0.098", VT, "validation.false_alarm_on_ground_truth_ci95.0"),
        C("| false alarms on untouched ground truth |", "0.172", VT, "validation.false_alarm_on_ground_truth_ci95.1"),
        C("| the same checks without carrying |", "0.200", VT, NO_CARRY + "false_alarm_on_ground_truth"),
    ),
    *in_section(
        "Tracker accuracy, held-out set",
        C("| J / F, ours |", "0.558", HELD, OURS + "J"), C("| J / F, ours |", "0.598", HELD, OURS + "F"),
        C("| J / F, the naive baseline", "0.538", HELD, NAIVE + "J"),
        C("| J / F, the naive baseline", "0.576", HELD, NAIVE + "F"),
        C("| J, ours over naive |", "1.038", HELD, OURS + "J_ratio_vs_naive_same_refinement.ratio"),
        C("| J, ours over naive |", "1.006", HELD, OURS + "J_ratio_vs_naive_same_refinement.ci95.0"),
        C("| J, ours over naive |", "1.077", HELD, OURS + "J_ratio_vs_naive_same_refinement.ci95.1"),
        C("| J, ours over naive |", "13", HELD, OURS + "J_ratio_vs_naive_same_refinement.clips_better"),
        C("| both unrefined |", "0.510", HELD, "trackers.ultralytics_identity_no_refine.all.J"),
        C("| both unrefined |", "0.491", HELD, "trackers.ultralytics_naive_track_id_no_refine.all.J"),
        C("| share of the refined segmenter oracle", "0.654", HELD, OURS + "segmenter_oracle_refined_J"),
        C("| J by people |", "0.531", HELD, "trackers.ultralytics_identity.people_with_human_masks.J"),
        C("| J by people |", "0.569", HELD, "trackers.ultralytics_identity.people_cut_by_selfie_segmentation.J"),
        C("| J by scene |", "0.623", HELD, "trackers.ultralytics_identity.conversation_scenes.J"),
        C("| J by scene |", "0.543", HELD, "trackers.ultralytics_identity.street_scenes.J"),
        C("| J by scene |", "0.469", HELD, "trackers.ultralytics_identity.clips_with_pillar.J"),
        C("| J by scene |", "0.558", HELD, "trackers.ultralytics_identity.clips_with_look_alike.J"),
        C("| ID switches |", "12", HELD, OURS + "id_switches"), C("| ID switches |", "7", HELD, OURS + "clips_with_switch"),
        C("| ID switches |", "19", HELD, NAIVE + "id_switches"), C("| ID switches |", "11", HELD, NAIVE + "clips_with_switch"),
        C("| without the re-acquisition look rule", "38", HELD, "trackers.ultralytics_identity_no_look_rule.all.id_switches"),
        C("| without the re-acquisition look rule", "0.546", HELD, "trackers.ultralytics_identity_no_look_rule.all.J"),
        C("| without the re-acquisition look rule", "1.022", HELD, OURS + "J_ratio_vs_no_look_rule.ratio"),
        C("| without the re-acquisition look rule", "0.987", HELD, OURS + "J_ratio_vs_no_look_rule.ci95.0"),
        C("| without the re-acquisition look rule", "1.064", HELD, OURS + "J_ratio_vs_no_look_rule.ci95.1"),
    ),
    *in_section(
        "Tracker accuracy, tuning set",
        C("| J / F, ours |", "0.622", TUNE, OURS + "J"), C("| J / F, ours |", "0.638", TUNE, OURS + "F"),
        C("| J, ours over naive |", "1.050", TUNE, OURS + "J_ratio_vs_naive_same_refinement.ratio"),
        C("| J, ours over naive |", "1.023", TUNE, OURS + "J_ratio_vs_naive_same_refinement.ci95.0"),
        C("| J, ours over naive |", "1.084", TUNE, OURS + "J_ratio_vs_naive_same_refinement.ci95.1"),
        C("| share of the refined segmenter oracle", "0.703", TUNE, OURS + "segmenter_oracle_refined_J"),
        C("| ID switches |", "15", TUNE, OURS + "id_switches"),
    ),
    # face 68 points
    C("| median | 0.037", "0.037", "curation_face68", "residual_iod.median"),
    C("| mouth | 0.028", "0.028", "curation_face68", "residual_iod.mouth"),
    C("| jaw | 0.070", "0.070", "curation_face68", "residual_iod.jaw"),
    # Ray transport and the pipeline against a loop
    C("frames and masks as tensor columns |", "0.042", "curation_pipeline_transport",
      "transport.columns.seconds_per_hop_per_clip"),
    C("the whole clip pickled per stage |", "0.078", "curation_pipeline_transport",
      "transport.pickled.seconds_per_hop_per_clip"),
    C("| ratio | 0.54x", "0.54", "curation_pipeline_transport", "transport.ratio_columns_over_pickled_per_hop"),
    C("| end to end | **1.093x**", "1.093", PIPE, "comparison.pipeline_vs_sequential_end_to_end"),
    C("| steady | 1.155x", "1.155", PIPE, "comparison.pipeline_vs_sequential_steady"),
    C("| steady, share of the machine's ceiling", "0.909", PIPE, "comparison.pipeline_share_of_ceiling_steady"),
    C("| steady, share of the machine's ceiling", "0.79", PIPE, "comparison.sequential_share_of_ceiling"),
    C("| `parallel_ceiling` |", "2.99", PIPE, "comparison.parallel_ceiling.frames_per_s"),
    C("| `parallel_ceiling` |", "0.955", PIPE, "comparison.pipeline_share_of_parallel_ceiling_steady"),
    # train step and the training cache
    C("| tiny, mask / audio / full |", "74", TRAIN, "sizes.tiny.mask.step_seconds_median", 1000),
    C("| tiny, mask / audio / full |", "319", TRAIN, "sizes.tiny.audio.step_seconds_median", 1000),
    C("| tiny, mask / audio / full |", "155", TRAIN, "sizes.tiny.full.step_seconds_median", 1000),
    C("| small, mask / audio / full |", "68", TRAIN, "sizes.small.mask.step_seconds_median", 1000),
    C("| small, mask / audio / full |", "83", TRAIN, "sizes.small.audio.step_seconds_median", 1000),
    C("| small, mask / audio / full |", "87", TRAIN, "sizes.small.full.step_seconds_median", 1000),
    C("| 2 CPU processes (gloo)", "1.57", TRAIN, "sizes.small.data_parallel.speedup"),
    C("| 2 CPU processes (gloo)", "0.88", TRAIN, "sizes.tiny.data_parallel.speedup"),
    C("| Wan-1.3B shape (meta build) |", "1.42", TRAIN, "sizes.wan-1.3b.meta.wan_params", 1e-9),
    C("| Wan-1.3B shape (meta build) |", "0.29", TRAIN, "sizes.wan-1.3b.meta.new_audio_identity_params", 1e-9),
    C("| Wan-1.3B, memory to train", "25", TRAIN, "sizes.wan-1.3b.meta.memory_gb_train_full"),
    C("| Wan-1.3B, memory to train", "6.9", TRAIN, "sizes.wan-1.3b.meta.memory_gb_train_audio_stage"),
    C("| prepare, in-process |", "0.76", PREP, "prepare.local.clips_per_s"),
    C("| prepare, local Ray Data |", "0.36", PREP, "prepare.ray.clips_per_s"),
    C("| steps/s of the tiny model's", "8.1", PREP, "steps_per_s.ratio"),
    C("| training peak RSS |", "990.5", PREP, "training_peak_rss_mb.1x"),
    C("| training peak RSS |", "991.0", PREP, "training_peak_rss_mb.10x"),
    # audio conditioning
    C("| talking head, 13 held-out windows", "1.000", "model_audio", "front_ends.log_mel.mouth_ratio_shuffled_over_true"),
    C("| talking head, 13 held-out windows", "0.66", "model_audio", "front_ends.log_mel.mouth_wilcoxon_p_true_better"),
    C("| talking head, 13 held-out windows", "0.999", "model_audio", "front_ends.whisper.mouth_ratio_shuffled_over_true"),
    C("| talking head, 13 held-out windows", "0.53", "model_audio", "front_ends.whisper.mouth_wilcoxon_p_true_better"),
    C("| 10 talking clips, 66 held-out windows", "66", "model_audio_10_clips", "front_ends.log_mel.held_out_windows"),
    C("| 10 talking clips, 66 held-out windows", "0.41", "model_audio_10_clips",
      "front_ends.log_mel.mouth_wilcoxon_p_true_better"),
    C("| 10 talking clips, 66 held-out windows", "0.76", "model_audio_10_clips",
      "front_ends.whisper.mouth_wilcoxon_p_true_better"),
    # mask head
    C("| head on DiT features |", "0.337", MASK, LATER + "ours_dit_features"),
    C("| first-frame mask held fixed |", "0.518", MASK, LATER + "first_frame_mask"),
    C("| first-frame mask shifted by the tracked box |", "0.755", MASK, LATER + "first_frame_mask_shifted_by_tracked_box"),
    C("| filled box |", "0.415", MASK, LATER + "box_first_frame"),
    C("| head on VAE latents |", "0.407", MASK, LATER + "latent_head_no_dit"),
    C("| head on a random frozen DiT |", "0.413", MASK, LATER + "ours_random_frozen_dit"),
    C("learning a residual on it", "0.469", MASK, LATER + "ours_dit_features_first_frame_masks"),
    C("learning a residual on it", "0.906", MASK, "mask_iou_held_out.ratio_ours_first_frame_masks_over_first_frame_mask"),
    C("(`appearance_affinity=True`)", "0.497", MASK, LATER + "ours_dit_features_first_frame_masks_affinity"),
    C("template match on the clean frames |", "0.584", MASK, LATER + "first_frame_mask_moved_by_template_match_on_frames"),
    C("template match on the clean frames |", "1.129", MASK,
      "mask_iou_held_out.ratio_first_frame_mask_moved_by_template_match_on_frames_over_first_frame_mask"),
    C("the same match on the clean VAE latents |", "0.520", MASK,
      LATER + "first_frame_mask_moved_by_template_match_on_vae_latents"),
    C("(`appearance_affinity=True`)", "0.961", MASK,
      "mask_iou_held_out.ratio_ours_first_frame_masks_affinity_over_first_frame_mask"),
    C("(`appearance_affinity=True`)", "0.94", MASK,
      "mask_iou_held_out.ratio_ours_first_frame_masks_affinity_over_first_frame_mask_ci95.0"),
    C("(`appearance_affinity=True`)", "1.01", MASK,
      "mask_iou_held_out.ratio_ours_first_frame_masks_affinity_over_first_frame_mask_ci95.1"),
    C("| replacing one character's audio", "0.42", MASK, "routing_confinement_by_character_count.4.share_inside_gated"),
    C("| replacing one character's audio", "0.54", MASK, "routing_confinement_by_character_count.3.share_inside_gated"),
    C("| replacing one character's audio", "0.05", MASK, "routing_confinement_by_character_count.6.area_share"),
    C("| replacing one character's audio", "0.09", MASK, "routing_confinement_by_character_count.3.area_share"),
    C("| real conversation: the assigned mask's cover", "0.94", MASK, "conversation_face_coverage_by_face.1.ours_dit_features"),
    C("| real conversation: the assigned mask's cover", "0.97", MASK, "conversation_face_coverage_by_face.0.ours_dit_features"),
    # directors
    C("| valid | **0.20**", "0.20", DIR, "means.co_reasoning.valid_first_try"),
    C("| valid | **0.20**", "0.05", DIR, "means.single_call.valid_first_try"),
    C("| timeline covered | 0.63", "0.63", DIR, "means.co_reasoning.coverage_first_try"),
    C("| timeline covered | 0.63", "0.60", DIR, "means.single_call.coverage_first_try"),
    C("| speakers per shot (two-speaker briefs)", "0.06", DIR, "means.co_reasoning.speaker_accuracy_first_try"),
    C("| speakers per shot (two-speaker briefs)", "0.003", DIR, "means.single_call.speaker_accuracy_first_try"),
    C("| speakers per shot (two-speaker briefs)", "0.895", DIR, "means.rule_based.speaker_accuracy"),
    C("| negative prompts specific to their shot |", "0.95", DIR, "means.single_call.negatives_specific"),
    # bring your own Wan: weights counted on the meta device
    *in_section(
        "Bring your own Wan: weight memory",
        C("| Wan2.1-T2V-1.3B |", "1.42", WAN, "checkpoints.Wan2.1-T2V-1.3B.wan_transformer_params", scale=1e-9),
        C("| Wan2.1-T2V-1.3B |", "0.29", WAN, "checkpoints.Wan2.1-T2V-1.3B.avatar_layers_params", scale=1e-9),
        C("| Wan2.1-T2V-1.3B |", "3.2", WAN, "checkpoints.Wan2.1-T2V-1.3B.gib_bf16.one_avatar_transformer"),
        C("| Wan2.1-T2V-1.3B |", "14.2", WAN, "checkpoints.Wan2.1-T2V-1.3B.gib_bf16.cascade_shared"),
        C("| Wan2.1-T2V-1.3B |", "27.0", WAN, "checkpoints.Wan2.1-T2V-1.3B.gib_bf16.cascade_copies"),
        C("| Wan2.1-T2V-1.3B |", "10.6", WAN, "checkpoints.Wan2.1-T2V-1.3B.gib_bf16.gpu_offload_model"),
        C("| Wan2.1-T2V-1.3B |", "0.10", WAN, "checkpoints.Wan2.1-T2V-1.3B.gib_bf16.gpu_offload_sequential_block"),
        C("| Wan2.1-I2V-14B-480P |", "16.39", WAN, "checkpoints.Wan2.1-I2V-14B-480P.wan_transformer_params", scale=1e-9),
        C("| Wan2.1-I2V-14B-480P |", "4.23", WAN, "checkpoints.Wan2.1-I2V-14B-480P.avatar_layers_params", scale=1e-9),
        C("| Wan2.1-I2V-14B-480P |", "38.4", WAN, "checkpoints.Wan2.1-I2V-14B-480P.gib_bf16.one_avatar_transformer"),
        C("| Wan2.1-I2V-14B-480P |", "50.6", WAN, "checkpoints.Wan2.1-I2V-14B-480P.gib_bf16.cascade_shared"),
        C("| Wan2.1-I2V-14B-480P |", "204.3", WAN, "checkpoints.Wan2.1-I2V-14B-480P.gib_bf16.cascade_copies"),
        C("| Wan2.1-I2V-14B-480P |", "38.4", WAN, "checkpoints.Wan2.1-I2V-14B-480P.gib_bf16.gpu_offload_model"),
        C("| Wan2.1-I2V-14B-480P |", "0.95", WAN, "checkpoints.Wan2.1-I2V-14B-480P.gib_bf16.gpu_offload_sequential_block"),
        C("| Wan2.2-TI2V-5B |", "5.00", WAN, "checkpoints.Wan2.2-TI2V-5B.wan_transformer_params", scale=1e-9),
        C("| Wan2.2-TI2V-5B |", "1.15", WAN, "checkpoints.Wan2.2-TI2V-5B.avatar_layers_params", scale=1e-9),
        C("| Wan2.2-TI2V-5B |", "11.4", WAN, "checkpoints.Wan2.2-TI2V-5B.gib_bf16.one_avatar_transformer"),
        C("| Wan2.2-TI2V-5B |", "24.7", WAN, "checkpoints.Wan2.2-TI2V-5B.gib_bf16.cascade_shared"),
        C("| Wan2.2-TI2V-5B |", "70.5", WAN, "checkpoints.Wan2.2-TI2V-5B.gib_bf16.cascade_copies"),
        C("| Wan2.2-TI2V-5B |", "11.4", WAN, "checkpoints.Wan2.2-TI2V-5B.gib_bf16.gpu_offload_model"),
        C("| Wan2.2-TI2V-5B |", "0.38", WAN, "checkpoints.Wan2.2-TI2V-5B.gib_bf16.gpu_offload_sequential_block"),
        C("| Wan2.2-I2V-A14B |", "14.29", WAN, "checkpoints.Wan2.2-I2V-A14B.wan_transformer_params", scale=1e-9),
        C("| Wan2.2-I2V-A14B |", "4.23", WAN, "checkpoints.Wan2.2-I2V-A14B.avatar_layers_params", scale=1e-9),
        C("| Wan2.2-I2V-A14B |", "34.5", WAN, "checkpoints.Wan2.2-I2V-A14B.gib_bf16.one_avatar_transformer"),
        C("| Wan2.2-I2V-A14B |", "80.0", WAN, "checkpoints.Wan2.2-I2V-A14B.gib_bf16.cascade_shared"),
        C("| Wan2.2-I2V-A14B |", "355.9", WAN, "checkpoints.Wan2.2-I2V-A14B.gib_bf16.cascade_copies"),
        C("| Wan2.2-I2V-A14B |", "34.5", WAN, "checkpoints.Wan2.2-I2V-A14B.gib_bf16.gpu_offload_model"),
        C("| Wan2.2-I2V-A14B |", "0.85", WAN, "checkpoints.Wan2.2-I2V-A14B.gib_bf16.gpu_offload_sequential_block"),
    ),
    # scale: the fitted memory table (one claim per cell) and the numbers around it
    *scale_table_claims(scale_rows()),
    *fast_table_claims(),
    C("the best within 1 dB of the 4-step student is", "3.30", FAST, "tiny.chosen_speedup_over_teacher",
      doc="README.md"),
    *[replace(c, doc="docs/curation.md") for c in (
        C("segmenter take 114.0 ms a call", "114.0", GRAPHS, SEG + "as_exported.ms_median"),
        C("to 8 bits: 31.7 ms", "31.7", GRAPHS, SEG + "float.ms_median"),
        C("INT8 graph is not slow (87.4 ms", "87.4", GRAPHS, DET + "as_exported.ms_median"),
        C("INT8 graph is not slow (87.4 ms", "94.1", GRAPHS, DET + "float.ms_median"),
        C("the detector takes 384 x 640 (55.5 ms)", "55.5", GRAPHS, DET + "float_fitted.ms_median"),
        C("frames (19.3 ms)", "19.3", GRAPHS, SEG + "float_fitted.ms_median"))],
    C("| `fast` (default) |", "3.225", SPEED, "sets.heldout.fast.frames_per_cpu_second", doc="docs/curation.md"),
    C("| `reference` |", "1.427", SPEED, "sets.heldout.reference.frames_per_cpu_second", doc="docs/curation.md"),
    C("the default `fast` profile does", "2.26", SPEED, "speedup_frames_per_cpu_second.heldout", doc="README.md"),
    C("the default `fast` profile does", "0.0133", SPEED, "j_delta_heldout", doc="README.md"),
    C("| fast sampling: step caches, compiled blocks, casting |", "3.30", FAST, "tiny.chosen_speedup_over_teacher",
      doc="docs/model.md"),
    *in_section(
        FAST_SECTION,
        C("inputs: student_first_block_0.05, which gives", "3.30", FAST, "tiny.chosen_speedup_over_teacher"),
        C("inputs: student_first_block_0.05, which gives", "3.16", FAST, "tiny.chosen_speedup_ci95.0"),
        C("inputs: student_first_block_0.05, which gives", "3.95", FAST, "tiny.chosen_speedup_ci95.1"),
        C("55.13 dB (the student alone", "55.13", FAST, "tiny.chosen_psnr_db"),
        C("55.13 dB (the student alone", "55.09", FAST, "tiny.student_psnr_db"),
        C("the student's denoising is already", "4.78", FAST, "tiny.rows.student.denoise_speedup_over_teacher"),
        C("the student's denoising is already", "8.89", FAST, "small.rows.student.denoise_speedup_over_teacher"),
        C("End to end the best on small is", "7.58", FAST, "small.rows.student_first_block_0.5.speedup_over_teacher"),
        C("takes the denoising from", "5.48", FAST, "tiny.rows.student_compile.denoise_speedup_over_teacher"),
        C("takes the denoising from", "10.08", FAST, "small.rows.student_compile.denoise_speedup_over_teacher"),
        C("fp8 4.03x against", "4.03", FAST, "tiny.rows.student_cast_fp8.denoise_speedup_over_teacher"),
        C("skipped blocks on the trained tiny teacher", "1.25", FAST,
          "tiny.rows.teacher_50_first_block_0.05.denoise_speedup_over_teacher"),
        C("skipped blocks on the trained tiny teacher", "57.07", FAST, "tiny.rows.teacher_50_first_block_0.05.psnr_db"),
    ),
    *in_section(
        "Scale: memory and context parallelism",
        C("fits every point within", "0.6", MS, "activation_fit.no_ckpt.rel_err_max", scale=100),
        C("fits every point within", "0.13", MS, "activation_fit.no_ckpt.rel_err_median", scale=100),
        C("and 5.6% (median", "5.6", MS, "activation_fit.ckpt.rel_err_max", scale=100),
        C("and 5.6% (median", "0.6", MS, "activation_fit.ckpt.rel_err_median", scale=100),
        C("checkpointing keeps a median", "8.0", MS, "activation_fit.checkpointing_saves_median", scale=100),
        C("| Wan2.1 1.3B (30 blocks) |", "0.29", MS, "audio_layers.Wan2.1-T2V-1.3B.all.avatar_layers_params",
          scale=1e-9),
        C("| Wan2.1 1.3B (30 blocks) |", "0.08", MS, "audio_layers.Wan2.1-T2V-1.3B.every:4.avatar_layers_params",
          scale=1e-9),
        C("| Wan2.1 14B (40 blocks) |", "4.23", MS, "audio_layers.Wan2.1-I2V-14B-480P.all.avatar_layers_params",
          scale=1e-9),
        C("| Wan2.1 14B (40 blocks) |", "1.08", MS, "audio_layers.Wan2.1-I2V-14B-480P.every:4.avatar_layers_params",
          scale=1e-9),
        C("| Wan2.1 14B (40 blocks) |", "411", MS,
          "audio_layers.Wan2.1-I2V-14B-480P.every:4.characters.4.activations_gib_480p_bf16.no_ckpt"),
        C("| Wan2.1 14B (40 blocks) |", "16.2", MS,
          "audio_layers.Wan2.1-I2V-14B-480P.every:4.characters.4.activations_gib_480p_bf16.ckpt"),
        C("flow by 1.07, so", "1.07", MS, "context_parallel.second_character_audio_moves_sample_max_abs"),
        C("alternating repeats: 0.72x", "0.72", MS, "context_parallel.ratio_median"),
        C("0.63 to 0.75)", "0.63", MS, "context_parallel.ratio_median_ci95.0"),
        C("0.63 to 0.75)", "0.75", MS, "context_parallel.ratio_median_ci95.1"),
        C("two whole forwards at once took", "1.12", MS, "context_parallel.contention_ratio_median"),
        C("processes hold 0.501", "0.501", MS, "fsdp_shards.2.rank_fraction.0"),
        C("processes hold 0.501", "0.2515", MS, "fsdp_shards.4.rank_fraction.0"),
    ),
    # the README's summary of the same table
    *[replace(c, doc="README.md", section="Use your own Wan weights") for c in (
        C("Wan2.1-I2V-14B-480P, 50.6 GiB", "50.6", WAN, "checkpoints.Wan2.1-I2V-14B-480P.gib_bf16.cascade_shared"),
        C("Wan2.1-I2V-14B-480P, 50.6 GiB", "204.3", WAN, "checkpoints.Wan2.1-I2V-14B-480P.gib_bf16.cascade_copies"),
        C("38.4 GiB on the GPU", "38.4", WAN, "checkpoints.Wan2.1-I2V-14B-480P.gib_bf16.gpu_offload_model"),
        C("on Wan2.2-TI2V-5B, 24.7 GiB", "24.7", WAN, "checkpoints.Wan2.2-TI2V-5B.gib_bf16.cascade_shared"),
        C("on Wan2.2-TI2V-5B, 24.7 GiB", "11.4", WAN, "checkpoints.Wan2.2-TI2V-5B.gib_bf16.gpu_offload_model"),
    )],
]
