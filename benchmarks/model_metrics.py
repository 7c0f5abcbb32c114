"""Model metrics beyond accuracy: precision/recall/F1 and fairness across subgroups.

`classification_metrics` and `fairness_metrics` work on plain label arrays (scikit-learn and
fairlearn do the arithmetic); `asset_model_metrics` runs an asset's model over its held-out split
and returns the result-row columns (`precision_macro`, ..., `sensitive_attribute`). The core calls
it once per trial, after measuring and outside every measured window: fairlearn's MetricFrame
costs tens of milliseconds, which must not leak into train_time_s or time_to_accuracy_s (the
per-epoch `evaluate` stays accuracy only for that reason).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

# The columns this module fills; the core copies exactly these onto a row.
ROW_COLUMNS = ("precision_macro", "recall_macro", "f1_macro", "fairness_dp_diff", "fairness_eo_diff",
               "accuracy_worst_group", "sensitive_attribute")


def classification_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Accuracy and macro / support-weighted precision, recall and F1.

    A class that is never predicted gets precision 0 (scikit-learn's zero_division=0), the usual
    convention: a model that ignores a class is penalised rather than having the class dropped
    from the average.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    yt, yp = _labels(y_true), _labels(y_pred)
    if len(yt) != len(yp) or len(yt) == 0:
        raise ValueError(f"y_true and y_pred must be non-empty and of equal length, got {len(yt)} and {len(yp)}")
    out = {"accuracy": float(accuracy_score(yt, yp))}
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(yt, yp, average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    return out


def fairness_metrics(y_true: Any, y_pred: Any, sensitive: Any) -> dict[str, Any]:
    """Per-group accuracy (and selection rate), the worst group, and fairlearn's disparity measures.

    Demographic parity and equalized odds are defined for binary labels (1 = selected), so for
    multi-class labels `fairness_dp_diff`, `fairness_eo_diff` and the selection rates are None;
    per-group accuracy is reported either way. Equalized odds is also None when some group lacks
    positives or negatives (its TPR or FPR is undefined), rather than a number fairlearn would
    compute from the remaining groups.
    """
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
        selection_rate,
    )
    from sklearn.metrics import accuracy_score

    yt, yp, s = _labels(y_true), _labels(y_pred), np.asarray(sensitive).astype(str)
    if not len(yt) == len(yp) == len(s) or len(yt) == 0:
        raise ValueError(f"y_true, y_pred and sensitive must be non-empty and of equal length, "
                         f"got {len(yt)}, {len(yp)}, {len(s)}")
    binary = set(np.unique(np.concatenate([yt, yp])).tolist()) <= {0, 1}
    metrics: dict[str, Any] = {"accuracy": accuracy_score}
    if binary:
        metrics["selection_rate"] = selection_rate
    frame = MetricFrame(metrics=metrics, y_true=yt, y_pred=yp, sensitive_features=s)
    by_group = frame.by_group
    acc = {str(g): float(v) for g, v in by_group["accuracy"].items()}
    worst = min(acc, key=acc.__getitem__)
    dp = eo = None
    if binary and len(acc) > 1:  # one group has no disparity to speak of: missing, not 0
        dp = float(demographic_parity_difference(yt, yp, sensitive_features=s))
        if all(len(np.unique(yt[s == g])) == 2 for g in acc):
            eo = _finite(equalized_odds_difference(yt, yp, sensitive_features=s))
    return {
        "groups": {str(g): int((s == g).sum()) for g in acc},
        "accuracy_by_group": acc,
        "selection_rate_by_group": {str(g): float(v) for g, v in by_group["selection_rate"].items()} if binary else None,
        "accuracy_worst_group": acc[worst],
        "worst_group": worst,
        "fairness_dp_diff": dp,
        "fairness_eo_diff": eo,
    }


@torch.inference_mode()
def predict_labels(asset: Any, model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """The asset's integer predictions (run_batch + postprocess, what the SUT hands LoadGen), in the
    model's own device and dtype."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else x.dtype
    was_training = model.training
    model.eval()
    try:
        # Floating inputs in the model's dtype; integer inputs (token ids) stay as they are.
        cast = {"device": device, "dtype": dtype} if x.is_floating_point() else {"device": device}
        parts = [asset.postprocess(asset.run_batch(model, x[i : i + batch_size].to(**cast))).cpu()
                 for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts).numpy() if parts else np.empty(0, dtype=np.int64)


def asset_model_metrics(asset: Any, model: nn.Module, data: Any) -> dict[str, Any]:
    """Row columns for `model` on the held-out split: all None (and an empty attribute) without labels.

    An asset may define `model_metrics(model, data) -> dict` to compute them its own way; otherwise
    predictions come from `predict_labels` and fairness is computed when the data carries a
    sensitive attribute (`AssetData.sensitive_test`).
    """
    out: dict[str, Any] = {c: None for c in ROW_COLUMNS}
    out["sensitive_attribute"] = ""
    own = getattr(asset, "model_metrics", None)
    if own is not None:
        out.update({k: v for k, v in own(model, data).items() if k in ROW_COLUMNS})
        return out
    if not getattr(data, "has_labels", False):
        return out
    y_true = data.y_test.cpu().numpy()
    y_pred = predict_labels(asset, model, data.x_test)
    cls = classification_metrics(y_true, y_pred)
    out.update({k: cls[k] for k in ("precision_macro", "recall_macro", "f1_macro")})
    sensitive = getattr(data, "sensitive_test", None)
    if sensitive is not None:
        fair = fairness_metrics(y_true, y_pred, _numpy(sensitive))
        out.update({k: fair[k] for k in ("fairness_dp_diff", "fairness_eo_diff", "accuracy_worst_group")})
        out["sensitive_attribute"] = getattr(data, "sensitive_name", "") or "sensitive"
    return out


def _labels(y: Any) -> np.ndarray:
    arr = _numpy(y).reshape(-1)
    if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)  # float-coded labels (1.0) compare equal to integer predictions
    return arr


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _finite(value: Any) -> float | None:
    v = float(value)
    return v if np.isfinite(v) else None


__all__ = ["ROW_COLUMNS", "asset_model_metrics", "classification_metrics", "fairness_metrics", "predict_labels"]
