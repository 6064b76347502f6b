"""Storage accounting next to every accuracy: bytes by part, models needed while training, ratios.

Every image evaluation report carries :func:`storage_breakdown`'s dict in ``report.storage`` and
prints :func:`storage_lines`. The parts:

* ``images``: the stored images plus components counted as images (INFER's compensators);
* ``labels``: hard labels, static soft labels, per-epoch replay labels with their augmentation
  parameters, components counted as labels (NRR-DD's distances), and a learned lr (4 B);
* ``label_generator``: components that *produce* labels (HeLlO's adapters and head);
* ``models at training time``: models that are not in the file but must exist while a student
  trains (an online teacher committee, a frozen CLIP backbone). They are reported on their own
  line and in ``total_with_models``, never folded away.

Ratios are to the full training split as uint8 pixels (``N x C x H x W`` bytes), the convention
of the field's compression ratios, and to the synthetic images alone. ``per_epoch_label_bytes``
is what FKD-style per-epoch relabeling (SRe2L/CV-DD: fp16 full logits for every (epoch, sample),
plus 21 B of crop/flip/CutMix parameters) would store for the same number of counted images over
the evaluated epochs: the yardstick the label-light methods exist to beat.
"""

from __future__ import annotations

from typing import Any

from dsdistill.synthetic import SyntheticSet

#: Replay parameters per (epoch, sample) as dsdistill stores them: crop int16 x4, flip uint8,
#: CutMix partner int32, CutMix box int16 x4.
REPLAY_PARAM_BYTES = 8 + 1 + 4 + 8


def per_epoch_label_bytes(num_samples: int, epochs: int, num_classes: int) -> int:
    """Bytes of FKD-style per-epoch soft labels (fp16 full logits + replay parameters)."""
    return int(num_samples) * int(epochs) * (2 * int(num_classes) + REPLAY_PARAM_BYTES)


def storage_breakdown(syn: SyntheticSet, real: Any, *, training_models: dict[str, int] | None = None,
                      effective_instances: int | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Bytes by part of ``syn``, models needed at training time, and ratios to the full dataset.

    Args:
        syn: The evaluated set.
        real: The real dataset (``train_images`` ``(N, C, H, W)`` gives the full size).
        training_models: ``{description: bytes}`` of every model the student's training needs that
            the file does not contain (empty when the file alone suffices).
        effective_instances: Distinct training instances the student sees (default: the stored
            images; INFER expands its compensators into more).
        epochs: Student epochs, for the per-epoch relabeling comparison (omitted when None).

    Returns:
        ``{"synthetic": syn.storage_bytes(), "parts": {"images", "labels", "label_generator"},
        "training_models": {...}, "models_at_training": int, "total": int, "total_with_models": int,
        "full_train_uint8_bytes": int, "ratio_to_full": float, "ratio_to_full_with_models": float,
        "ratio_to_images": float, "counted_images": int, "training_instances": int,
        "label_bytes": int, "per_epoch_label_bytes": int | None, "epochs": int | None}``.
    """
    st = syn.storage_bytes()
    models = {str(k): int(v) for k, v in (training_models or {}).items()}
    parts = {"images": st["images"] + st["component_images"],
             "labels": (st["labels"] + st["soft_labels"] + st["replay_labels"] + st["replay_params"]
                        + st["component_labels"] + st["lr"]),
             "label_generator": st["label_generator"]}
    full = int(real.train_images.shape[0] * real.train_images[0].numel())
    per_image = max(1, syn.images[0].numel() * 4) if syn.num_images else 1
    counted = syn.num_images + st["component_images"] // per_image
    model_bytes = sum(models.values())
    return {"synthetic": st, "parts": parts, "training_models": models, "models_at_training": model_bytes,
            "total": st["total"], "total_with_models": st["total"] + model_bytes,
            "full_train_uint8_bytes": full, "ratio_to_full": st["total"] / full,
            "ratio_to_full_with_models": (st["total"] + model_bytes) / full,
            "ratio_to_images": st["total"] / max(1, parts["images"]),
            "counted_images": int(counted),
            "training_instances": int(effective_instances if effective_instances is not None else syn.num_images),
            "label_bytes": parts["labels"] - st["labels"] - st["lr"],
            "per_epoch_label_bytes": None if not epochs else per_epoch_label_bytes(
                syn.ipc * syn.num_classes, epochs, syn.num_classes),
            "epochs": epochs}


def _b(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n:,} B ({n / scale:.1f} {unit})"
    return f"{n:,} B"


def storage_lines(storage: dict[str, Any]) -> list[str]:
    """Human-readable lines for a report (empty for dicts not made by :func:`storage_breakdown`)."""
    if "parts" not in storage:
        return []
    p = storage["parts"]
    lines = [f"storage: images {_b(p['images'])} ({storage['counted_images']} counted images), labels "
             f"{_b(p['labels'])} (soft/replayed/derived labels {_b(storage['label_bytes'])}), label generator "
             f"{_b(p['label_generator'])}; total {_b(storage['total'])} = {100 * storage['ratio_to_full']:.4f}% of "
             f"the full training set ({_b(storage['full_train_uint8_bytes'])} as uint8), "
             f"{storage['ratio_to_images']:.2f}x the images alone"]
    if storage["training_models"]:
        models = "; ".join(f"{k} {_b(v)}" for k, v in storage["training_models"].items())
        lines.append(f"models needed at training time (not in the file): {models}; total with them "
                     f"{_b(storage['total_with_models'])} = {100 * storage['ratio_to_full_with_models']:.4f}% of full")
    else:
        lines.append("models needed at training time: none (the file alone suffices)")
    if storage["training_instances"] != storage["counted_images"]:
        lines.append(f"effective training instances: {storage['training_instances']} "
                     f"(counted budget {storage['counted_images']} images)")
    if storage.get("per_epoch_label_bytes"):
        per = storage["per_epoch_label_bytes"]
        lines.append(f"per-epoch relabeling of the same IPC over {storage['epochs']} epochs would store "
                     f"{_b(per)} of labels (fp16 logits + replay parameters); this file's labels and label "
                     f"generator: {_b(storage['label_bytes'] + p['label_generator'])}")
    return lines
