"""The numbers benchmarks/README.md reports, each tied to the results JSON and the value it comes from.

A claim names the README line it is on (a piece of text unique to that line), the number as written there, the
results file and the dotted path of the value (list items by index), and `scale` when the README writes the value in
other units (ms for seconds: 1000; a percentage: 100). tests/test_readme_claims.py checks every claim: the line says
the number, and the value at the path, times `scale` and rounded as the number is written, equals it. A number typed
in by hand, or left behind when its benchmark is rerun, fails the test.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    line: str  # text found on the README line that states the number (and on no other line)
    written: str  # the number as written: "0.622", "1.050", "82" (trailing x or % are not part of it)
    result: str  # benchmarks/results/<result>.json
    path: str  # dotted path into that JSON
    scale: float = 1.0
    doc: str = "benchmarks/README.md"


C = Claim
TRACK_T, KP_T, VAL_T = "curation_trackers_tuning", "curation_keypoints_tuning", "curation_validation_tuning"
TRACK_S, KP_S, VAL_S = "curation_trackers", "curation_keypoints", "curation_validation"
PIPE, TRAIN, PREP, MASK, DIR = "curation_pipeline", "model_train_step", "model_prepare", "model_mask_head", "directors"
LATER = "mask_iou_held_out.iou_later_frames."

CLAIMS: list[Claim] = [
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
