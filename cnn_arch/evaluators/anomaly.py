"""``anomaly``: scores every example of the eval split and reports AUROC (issue 12).

One-class protocol (Ruff et al. 2018 Sec. 4.1; Golan & El-Yaniv 2018 Sec. 5.1): the
model was trained on ``config.normal_class`` only; every eval example of another class
is an anomaly. Out-of-distribution protocol (Hendrycks & Gimpel 2017): with
``ood_dataset`` set, the whole eval split is normal and the same split of
``ood_dataset`` is anomalous. Metrics: ``auroc`` of the first method in ``methods``
and ``auroc_<method>`` of every method (``cnn_arch.anomaly.scoring``).

``scores_path`` (set by ``python -m cnn_arch.anomaly``) saves the per-example arrays:
``score`` (the first method's), ``score_<method>``, ``is_anomaly``, ``label``, and with
``calibration_split`` the first method's scores of that split's normal-class images
(``calibration_score``: held-out normal images, for a threshold at a chosen
false-positive rate).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cnn_arch import workdir
from cnn_arch.anomaly import roc, scoring
from cnn_arch.evaluators.base import Evaluator, register


@register("anomaly")
@dataclasses.dataclass
class Anomaly(Evaluator):
    methods: tuple = ("task",)
    knn_k: int = 5  # neighbours averaged by the kNN score
    knn_bank: int = 2000  # training images (the normal class) the kNN score compares to
    ood_dataset: str = ""
    calibration_split: str = ""
    scores_path: str = ""

    @staticmethod
    def check_options(name, spec, config) -> None:
        from cnn_arch import models, tasks  # lazy: evaluators are imported by tasks' users

        where = f"config.evals.{name}"
        methods = tuple(spec.get("methods", ("task",)))
        unknown = sorted(set(methods) - set(scoring.METHODS))
        if not methods or unknown:
            raise ValueError(
                f"{where}.methods={methods!r}: choose from {', '.join(scoring.METHODS)}"
            )
        if config.normal_class < 0 and not spec.get("ood_dataset", ""):
            raise ValueError(
                f"{where} needs config.normal_class (the one-class protocol) or ood_dataset "
                "(the out-of-distribution protocol) to know which examples are anomalies"
            )
        task = config.task or models.spec(config.model).task
        detector = hasattr(tasks.base._REGISTRY[task], "scores")
        if "task" in methods and not detector:
            raise ValueError(f"{where}.methods has 'task' but {task!r} is not an anomaly task")
        if "msp" in methods and task != "classification":
            raise ValueError(f"{where}.methods has 'msp', which needs a classifier")
        if "knn" in methods and not hasattr(models.spec(config.model).module_cls, "features"):
            raise ValueError(f"{where}.methods has 'knn' but {config.model!r} has no features()")
        for key in ("knn_k", "knn_bank"):
            value = spec.get(key, 1)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}.{key}={value!r}: it must be an integer >= 1")

    def __post_init__(self):
        self.methods = tuple(self.methods)
        self.scorer = scoring.Scorer(self.run, self.methods, self.knn_k)

    def arrays(self, state) -> dict[str, np.ndarray]:
        """Per-example scores, labels and is_anomaly of the eval split (and the OOD set)."""
        config, variables = self.run.config, state.variables
        if "knn" in self.methods:
            self.scorer.fit_bank(variables, scoring.training_images(self.run, self.knn_bank))
        scores, labels = self.scorer.score_split(variables, config)
        if self.ood_dataset:
            ood_config = scoring.with_split(config, config.eval_split, self.ood_dataset)
            ood_scores, ood_labels = self.scorer.score_split(variables, ood_config)
            is_anomaly = np.r_[np.zeros(len(labels), bool), np.ones(len(ood_labels), bool)]
            scores = {m: np.r_[scores[m], ood_scores[m]] for m in scores}
            labels = np.r_[labels, ood_labels]
        else:
            is_anomaly = labels != config.normal_class
        out = {"score": scores[self.methods[0]], "is_anomaly": is_anomaly, "label": labels}
        out.update({f"score_{m}": s for m, s in scores.items()})
        if self.calibration_split:
            split = scoring.with_split(config, self.calibration_split)
            images = scoring.class_images(self.run, split, max(config.normal_class, 0), 10**9)
            if self.ood_dataset:  # every class is normal
                images = np.concatenate([b for b, _ in scoring.split_batches(self.run, split)])
            calib = self.scorer.scores(variables, images)
            out["calibration_score"] = calib[self.methods[0]]
        return out

    def __call__(self, state):
        arrays = self.arrays(state)
        if self.scores_path:
            target = workdir.path(self.scores_path)  # local or an object store
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as f:
                np.savez(f, **arrays)
        result = {
            f"auroc_{m}": roc.auroc(arrays[f"score_{m}"], arrays["is_anomaly"])
            for m in self.methods
        }
        result["auroc"] = result[f"auroc_{self.methods[0]}"]
        result["anomalous_fraction"] = float(np.mean(arrays["is_anomaly"]))
        result["num_examples"] = len(arrays["is_anomaly"])
        return result
