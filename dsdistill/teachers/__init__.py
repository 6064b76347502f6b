"""Teacher committees for the decoupled soft-label condensers (SRe2L, CV-DD).

``train_teachers`` trains (or imports) one teacher per model into a directory; ``load_committee``
loads them back as frozen eval-mode models with their validation-accuracy priors. See
:mod:`dsdistill.teachers.training` for the recipe and :mod:`dsdistill.teachers.store` for the files.

Example:
    >>> from dsdistill.teachers import load_committee       # doctest: +SKIP
    >>> committee = load_committee("runs/teachers/mnist", device="cpu")
    >>> [(t.name, round(t.val_accuracy, 3)) for t in committee]
"""

from dsdistill.teachers.store import MANIFEST, Teacher, check_fits, has_batchnorm, load_committee, teacher_names
from dsdistill.teachers.training import TeacherRecipe, import_checkpoint, train_one, train_teachers

__all__ = ["MANIFEST", "Teacher", "TeacherRecipe", "check_fits", "has_batchnorm", "import_checkpoint", "load_committee",
           "teacher_names", "train_one", "train_teachers"]
