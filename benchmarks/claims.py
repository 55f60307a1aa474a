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
TRACK_T, KP_T, VAL_T = "curation_trackers_tuning", "curation_keypoints_tuning", "curation_validation_tuning"
TRACK_S, KP_S, VAL_S = "curation_trackers", "curation_keypoints", "curation_validation"
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

CASCADE = "model_cascade"

CLAIMS: list[Claim] = [
    *in_section(
        "Long-video cascade",
        C("| colour distance slope, cascade |", "0.13", CASCADE, "drift.cascade.colour_slope_per_min"),
        C("| colour distance slope, cascade |", "-0.12", CASCADE, "drift.cascade.colour_slope_ci95.0"),
        C("| colour distance slope, cascade |", "0.37", CASCADE, "drift.cascade.colour_slope_ci95.1"),
        C("| colour distance slope, chained |", "0.22", CASCADE, "drift.chained.colour_slope_per_min"),
        C("| colour distance slope, chained |", "-0.07", CASCADE, "drift.chained.colour_slope_ci95.0"),
        C("| colour distance slope, chained |", "0.52", CASCADE, "drift.chained.colour_slope_ci95.1"),
        C("| ratio | 0.59", "0.59", CASCADE, "drift.colour_slope_per_min_ratio_cascade_over_chained"),
        C("| seams: frame change at sub-clip joins", "0.92", CASCADE, "drift.cascade.seam_ratio"),
        C("| seams: frame change at sub-clip joins", "0.92", CASCADE, "drift.chained.seam_ratio"),
        C("| 2 Ray actors against serial", "0.51", CASCADE, "parallel.speedup"),
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
]
