"""The ``softlabel`` evaluation protocol: students trained on stored, replayed soft labels.

Recipe (SRe2L ``validate/train_FKD.py`` / CV-DD ``train_fkd.py``, see
:mod:`dsdistill.evaluators.softlabel_train`): AdamW lr 1e-3, weight decay 0.01 (not on biases and
norm parameters), per-epoch cosine with smoothing factor ``smoothing`` (1 = SRe2L, 2 = RDED/EDC),
batch 64, RandomResizedCrop + flip + CutMix **replayed from the file** (the student sees exactly
the inputs the teacher labelled), ``KL`` at the stored temperature T without a ``T^2`` factor.
Epochs default to the stored epochs; asking for more is an error (nothing is cycled), fewer uses
the first ones. The accuracy reported is the final epoch's on the test split.

For every (model, run) it trains, like DD-Ranking's label-robust score needs:

* ``synthetic``: the set with its soft labels;
* ``synthetic_hard``: the same images and replayed augmentation, cross-entropy on hard labels;
* ``random``: a random real subset of the same IPC, **relabelled at evaluation time with the same
  teachers the same way** (committee, weights, averaging, temperature, BN mode, dtype, top-k,
  epochs) and trained identically; this needs the teachers (``teachers=DIR`` or the directory
  recorded in the file);
* ``full`` (optional, ``full_epochs > 0``): the whole real training split, hard labels, fresh
  crop/flip/CutMix draws, same optimiser.

and reports ``IOR = Acc(syn, soft) - Acc(random, soft)`` and ``HLR = Acc(full, hard) -
Acc(syn, hard)`` from mean accuracy **fractions** (DD-Ranking feeds percent).

``online_teacher=True`` labels every mini-batch with the teachers during training instead of
replaying the file (RDED, INFER+Dyn, SRe2L's CIFAR script). The report flags it: such a student
uses knowledge the synthetic file does not contain, and the teachers' bytes are counted.

With a checkpoint (``--checkpoint-every N``, ``--resume``) finished students and the one in
progress are kept exactly like the dc/tm protocols' (:mod:`dsdistill.evaluators.checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dsdistill import distributed
from dsdistill.condenser import Checkpointer
from dsdistill.data.real import RealData
from dsdistill.errors import ConfigError
from dsdistill.evaluators.jobs import new_student, open_checkpoint, plan_jobs, run_jobs, test_and_val
from dsdistill.evaluators.storage import storage_breakdown, storage_lines
from dsdistill.evaluators.report import EvalReport, cell
from dsdistill.evaluators.softlabel_train import OnlineSource, ReplaySource, train_student
from dsdistill.registry import EVALUATORS
from dsdistill.rng import make_generator
from dsdistill.softlabels import ReplayLabels, relabel_like
from dsdistill.synthetic import SyntheticSet

ONLINE_NOTE = ("ONLINE TEACHER: soft labels were computed by the teachers during training; this uses "
               "knowledge the synthetic file does not contain (teacher bytes counted in storage)")


@dataclass(frozen=True)
class SoftLabelProtocol:
    """The ``softlabel`` recipe (module docstring); overridable per evaluation."""

    name: str = "softlabel"
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 64
    smoothing: float = 1.0
    description: str = ("AdamW 1e-3 wd 0.01, cosine (smoothing factor), RRC + flip + CutMix replayed from the "
                        "file, KL at the stored temperature (no T^2), final-epoch accuracy")


SOFTLABEL = EVALUATORS.register("softlabel")(SoftLabelProtocol())


@dataclass
class SoftLabelReport(EvalReport):
    """An :class:`EvalReport` with DD-Ranking's scores and the online-teacher flag."""

    scores: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        s = self.summary()
        st = self.storage.get("synthetic", {})
        lines = [f"{self.method} on {self.dataset}, IPC {self.ipc}, protocol softlabel ({self.protocol.get('epochs')} "
                 f"epochs, batch {self.protocol.get('batch_size')}, T {self.protocol.get('temperature'):g}), "
                 "final-epoch test accuracy (%), mean ± std over runs"]
        if self.protocol.get("online_teacher"):
            lines.append(ONLINE_NOTE)
        lines += ["", "| model | soft labels | hard labels | random + same soft labels | full (hard) | IOR | HLR |",
                  "|---|---|---|---|---|---|---|"]
        num = (lambda v: "–" if v is None else f"{v:+.4f}")  # noqa: E731
        for model, kinds in s.items():
            sc = self.scores.get(model, {})
            lines.append(f"| {model} | {cell(kinds.get('synthetic'))} | {cell(kinds.get('synthetic_hard'))} | "
                         f"{cell(kinds.get('random'))} | {cell(kinds.get('full'))} | {num(sc.get('ior'))} | "
                         f"{num(sc.get('hlr'))} |")
        lines += ["", f"label storage: soft labels {st.get('replay_labels', 0):,} B, replay parameters "
                      f"{st.get('replay_params', 0):,} B", *storage_lines(self.storage),
                  "IOR = Acc(syn, soft) - Acc(random, soft); HLR = Acc(full, hard) - Acc(syn, hard); "
                  "accuracy fractions (DD-Ranking)"]
        notes = sorted({n for sc in self.scores.values() for n in sc.get("notes", [])})
        return "\n".join(lines + notes)


def teachers_dir(syn: SyntheticSet, teachers: str | Path | None) -> Path | None:
    """``teachers``, else a directory recorded in the set (replay settings or provenance)."""
    if teachers:
        return Path(teachers)
    places = [syn.replay.settings if syn.replay is not None else {}, syn.provenance,
              syn.provenance.get("config") if isinstance(syn.provenance.get("config"), dict) else {}]
    for place in places:
        for key in ("teachers_dir", "teacher_dir", "teachers"):
            value = place.get(key)
            if isinstance(value, str) and value and Path(value).is_dir():
                return Path(value)
    return None


def provenance_sha256(syn: SyntheticSet) -> dict[str, str]:
    """``{teacher name: sha256}`` of the teachers the set's provenance records."""
    records = syn.provenance.get("teachers")
    if not isinstance(records, list):
        return {}
    return {t.get("name"): t.get("sha256") for t in records if isinstance(t, dict) and t.get("sha256")}


def load_recorded_teachers(syn: SyntheticSet, real: RealData, teachers: str | Path | None, device: str, *,
                           names: list[str] | None, recorded: dict[str, str], protocol: str, why: str):
    """The teachers a set was labelled with: from ``teachers`` or the directory the file records, each
    checked against its recorded sha256. Returns ``(committee, directory)``.

    Raises:
        ConfigError: No directory, or a teacher that is not the recorded one.
    """
    from dsdistill.teachers import load_committee

    directory = teachers_dir(syn, teachers)
    if directory is None:
        raise ConfigError(f"the {protocol} protocol needs the teachers for {why}, and the file records no existing "
                          "teachers directory; pass --teachers DIR (or --no-baseline to skip the random subset)")
    committee = load_committee(directory, names or None, device=device, real=real)
    for t in committee:
        if recorded.get(t.name) and t.meta.get("sha256") and recorded[t.name] != t.meta["sha256"]:
            raise ConfigError(f"teacher '{t.name}' in {directory} is not the one the set was labelled with "
                              f"(sha256 {t.meta['sha256'][:12]} vs {recorded[t.name][:12]}); pass the original teachers")
    return committee, directory


def load_teachers(syn: SyntheticSet, real: RealData, teachers: str | Path | None, device: str, why: str):
    """The committee the set was labelled with (names and weights from its replay settings)."""
    names = list(syn.replay.settings.get("teachers") or []) if syn.replay is not None else []
    committee, directory = load_recorded_teachers(syn, real, teachers, device, names=names,
                                                  recorded=provenance_sha256(syn), protocol="softlabel", why=why)
    weights = syn.replay.settings.get("weights") if syn.replay is not None else None
    if weights is not None and len(weights) != len(committee):
        raise ConfigError(f"the file's labels were made by {len(weights)} teachers but {directory} gives "
                          f"{len(committee)}; pass the teachers directory the set was labelled with")
    return committee, directory, torch.as_tensor(weights if weights is not None else [1.0] * len(committee),
                                                 dtype=torch.float64)


def _scores(s: dict, full_acc: float | None) -> dict[str, Any]:
    from dsdistill.compare import _fraction

    mean = lambda kind: None if kind not in s else s[kind]["mean"] / 100  # noqa: E731
    syn, hard, rnd = mean("synthetic"), mean("synthetic_hard"), mean("random")
    full = mean("full") if "full" in s else (None if full_acc is None else _fraction(full_acc, "full-data accuracy"))
    out: dict[str, Any] = {"ior": None if syn is None or rnd is None else syn - rnd,
                           "hlr": None if full is None or hard is None else full - hard, "full_acc": full, "notes": []}
    if out["ior"] is None:
        out["notes"].append("IOR needs the random-subset runs (teachers required)")
    if out["hlr"] is None:
        out["notes"].append("HLR needs the full-data hard-label accuracy: pass full_acc (--full-acc) or full_epochs")
    return out


def evaluate_softlabel(syn: SyntheticSet, real: RealData, *, models=("convnet",), runs: int = 3,
                       epochs: int | None = None, lr: float | None = None, batch_size: int | None = None,
                       smoothing: float | None = None, temperature: float | None = None, seed: int = 0,
                       device: str = "cpu", baseline: bool = True, hard: bool = True, teachers: str | Path | None = None,
                       online_teacher: bool = False, full_acc: float | None = None, full_epochs: int = 0,
                       progress: bool = True, file: str = "", checkpoint: Checkpointer | None = None) -> SoftLabelReport:
    """Evaluate ``syn`` under the ``softlabel`` protocol (module docstring); returns the report.

    ``checkpoint``: save finished students and the one in progress there every ``checkpoint.every``
    epochs and resume from it (:mod:`dsdistill.evaluators.checkpoint`; labels and augmentation are
    keyed by epoch, so a resumed student ends bitwise as an uninterrupted one on CPU);
    SIGINT/SIGTERM save and raise :class:`~dsdistill.condenser.Interrupted`.

    Raises:
        ConfigError: No replay labels (and not online), more epochs than stored, teachers needed
            but not found, the set does not match ``real``, or a checkpoint of another evaluation.
    """

    from dsdistill.evaluators.standard import check_compatible

    check_compatible(syn, real)
    rp: ReplayLabels | None = syn.replay
    if runs < 1:
        raise ConfigError(f"--runs must be at least 1, got {runs}")
    if rp is None and not online_teacher:
        raise ConfigError("the set stores no replay soft labels; the softlabel protocol needs them "
                          "(or --online-teacher with --teachers DIR)")
    epochs = epochs or (rp.epochs if rp is not None else None)
    if epochs is None:
        raise ConfigError("--online-teacher on a set without stored labels needs --epochs")
    if rp is not None and not online_teacher and epochs > rp.epochs:
        raise ConfigError(f"the file stores soft labels for {rp.epochs} epochs but {epochs} were asked for; "
                          f"use --epochs <= {rp.epochs} (labels are not cycled) or --online-teacher")
    p = SOFTLABEL
    lr, batch_size, smoothing = lr or p.lr, batch_size or p.batch_size, smoothing or p.smoothing
    temp = temperature or (rp.temperature if rp is not None else 20.0)
    committee, tdir, weights = (None, None, None)
    if online_teacher or baseline:
        committee, tdir, weights = load_teachers(syn, real, teachers, device,
                                                 "--online-teacher" if online_teacher else "the random-subset baseline")
    settings = dict(rp.settings) if rp is not None else {}
    shape_hw = tuple(syn.images.shape[2:])

    def online(weights_: torch.Tensor) -> OnlineSource:
        return OnlineSource([t.model for t in committee], weights_ / weights_.sum(), settings.get("average", "logits"),
                            temp, rp.size if rp is not None else shape_hw, shape_hw,
                            tuple(settings.get("scale", (0.08, 1.0))), tuple(settings.get("ratio", (3 / 4, 4 / 3))),
                            bool(settings.get("flip", True)), settings.get("mix", "cutmix"),
                            rp is not None and rp.micro_batch > 0)

    kinds = ["synthetic"] + (["synthetic_hard"] if hard else []) + (["random"] if baseline else [])
    kinds += ["full"] if full_epochs > 0 else []
    all_jobs, jobs = plan_jobs(models, runs, kinds)
    report = SoftLabelReport(
        file=file, method=syn.method, dataset=syn.dataset, ipc=syn.ipc, num_classes=syn.num_classes,
        protocol={"name": p.name, "description": p.description, "epochs": epochs, "stored_epochs": rp.epochs if rp else 0,
                  "lr": lr, "weight_decay": p.weight_decay, "optimizer": "adamw", "batch_size": batch_size,
                  "schedule": f"cosine per epoch, smoothing {smoothing:g}", "smoothing": smoothing,
                  "temperature": temp, "loss": "KL(batchmean), no T^2", "augment": "rrc+flip+cutmix",
                  "soft_labels": True, "labels": "online teacher" if online_teacher else "replayed from file",
                  "online_teacher": bool(online_teacher), "label_settings": settings,
                  "random_baseline": "random real subset relabelled with the same teachers the same way",
                  "full_epochs": full_epochs},
        settings={"models": list(models), "runs": runs, "seed": seed, "device": device,
                  "processes": distributed.world_size(), "teachers_dir": str(tdir) if tdir else None,
                  "selection": "final epoch (no test-set selection)", "std": "population (ddof=0)"})
    state = open_checkpoint(checkpoint, syn, real, jobs, seed, {
        **report.protocol, **report.settings,
        "teachers": None if committee is None else [[t.name, t.meta.get("sha256")] for t in committee]})
    random_labels = {}

    def train(job, resume, hook, tick):
        model_name, run, kind = job
        gen = make_generator(seed, "softlabel", kind, model_name, run)
        images, labels, source = syn.images, syn.labels, None
        if kind == "random":
            idx = real.sample_indices(syn.ipc, make_generator(seed, "random-subset", run)).reshape(-1)
            images, labels = real.train_images[idx], real.train_labels[idx]
            if not online_teacher:  # one relabelled subset per run, shared by the student models
                if run not in random_labels:
                    random_labels[run] = relabel_like(images.to(device), [t.model for t in committee], rp, epochs=epochs,
                                                      generator=make_generator(seed, "random-relabel", run))
                source = ReplaySource(random_labels[run], temperature)
        elif kind == "full":
            images, labels = real.train_images, real.train_labels
            source = OnlineSource([], torch.ones(1), "logits", temp, rp.size if rp else shape_hw, shape_hw,
                                  tuple(settings.get("scale", (0.08, 1.0))),
                                  tuple(settings.get("ratio", (3 / 4, 4 / 3))),
                                  bool(settings.get("flip", True)), settings.get("mix", "cutmix"))
        elif not online_teacher:
            source = ReplaySource(rp, temperature)
        if source is None:
            source = online(weights)
        model = new_student(model_name, real, seed, run, device)
        train_student(model, images.to(device), labels, source, epochs=full_epochs if kind == "full" else epochs,
                      batch_size=batch_size, lr=lr, weight_decay=p.weight_decay, smoothing=smoothing,
                      hard=kind in ("synthetic_hard", "full"), generator=gen, progress=tick, resume=resume,
                      checkpoint=hook)
        return test_and_val(model, real, device)

    report.runs = run_jobs(all_jobs, jobs, train, epochs=lambda job: full_epochs if job[2] == "full" else epochs,
                           state=state, checkpoint=checkpoint, progress=progress)
    report.scores = {model: _scores(kinds_, full_acc) for model, kinds_ in report.summary().items()}
    teacher_bytes = 0 if not online_teacher else sum(p_.numel() * p_.element_size() for t in committee
                                                     for p_ in t.model.state_dict().values())
    report.storage = storage_breakdown(syn, real, epochs=epochs, training_models={
        f"teachers (online: {', '.join(t.name for t in committee)})": teacher_bytes} if online_teacher else None)
    if online_teacher:
        report.storage["teacher_bytes"] = teacher_bytes
        report.settings["online_teacher_note"] = ONLINE_NOTE
    return report
