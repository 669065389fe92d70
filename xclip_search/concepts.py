"""Concepts: labels learned from a few marked moments, scored from the stored ``v`` (and X-CLIP's own score).

X-CLIP scores only words it knows. A concept is a label it does not know ("jam at station 3", an invented
word) taught by a handful of examples. Every indexed segment's ``v`` is stored, so a concept is a small
classifier over the unit ``v``, learned in milliseconds without decoding a frame:

    logit(x) = w · (v̂ - μ) + w_text · exp(logit_scale) · (s(x) - s̄) + b,    P(concept | x) = σ(logit(x))

where ``s(x)`` is X-CLIP's exact prompted score of the concept's text for the segment (``cos(v, t + PG(t,
Z))``) and ``μ``, ``s̄`` are the negatives' means. The text term is used only when the concept's name (or a
text given for it) is meaningful to the model: its prompted score must separate the positives from the
negatives (`TEXT_SEPARATION`); an invented word's score is noise and is left out. Its weight has a prior of 1
(X-CLIP's own logit scale), so a few examples refine zero-shot rather than replace it.

Why this model (``scripts/eval_concepts.py`` measures the alternatives on the demo model): a prototype
(``cos`` to the positives' mean) and a Tip-Adapter-style cache reach similar accuracy at 4+ examples, but need a
separate calibration fit that a handful of positives cannot support; weighted, L2-regularised logistic
regression gives probabilities that are calibrated on held-out clips directly, and takes the text score as
one more feature. The classes are weighted equally, so the probability is for an even prior: 0.5 means the
segment is as likely an instance as not, whatever share of the library the concept covers.

This module is numpy only: the caller (`xclip_search.concept_index`) reads ``v`` and computes the text score.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

#: How many segments of the index stand in for "not this concept" when no negatives are given.
DEFAULT_NEGATIVES = 1024
#: L2 penalty on the weights over ``v`` (relative to a loss that averages each class); measured on the demo
#: model for calibration and accuracy at 1-8 examples (scripts/eval_concepts.py).
L2_V = 0.001
#: Penalty pulling the text weight towards 1 (X-CLIP's own logit scale).
L2_TEXT = 0.05
#: Weight of a concept's learned term when it refines X-CLIP's zero-shot among a label set (`tag_probs`): a
#: small correction, measured on the demo model's confusable two-shape captions so that a few examples beat
#: zero-shot overall and lose at most a point on the clips zero-shot gets right (scripts/eval_concepts.py).
TAG_CORRECTION = 0.003
#: The text's prompted score is an input when the positives' mean is this many negatives' standard deviations
#: above the negatives' mean (an invented word scores about 0).
TEXT_SEPARATION = 1.0
METHOD = "logistic-v+text"
MAX_NAME = 200
_NAME_RE = re.compile(r"[^,\x00-\x1f]+")


def check_name(name: str) -> str:
    """A concept name is a label: non-empty, no commas (labels are comma-separated), at most 200 characters."""
    cleaned = (name or "").strip()
    if not cleaned or len(cleaned) > MAX_NAME or not _NAME_RE.fullmatch(cleaned):
        raise InvalidArgumentError(
            f"Invalid concept name {name!r}",
            hint="A concept name is a label: 1-200 characters, no commas, e.g. 'jam at station 3'.",
        )
    return cleaned


@dataclass(frozen=True)
class ConceptModel:
    """A learned concept's classifier (see the module docstring); `text` is None when no text term is used."""

    weights: np.ndarray  # (D,) over the unit v
    bias: float
    text: str | None
    text_weight: float  # multiplies exp(logit_scale) * prompted score
    logit_scale: float
    #: The learned term's mean over the negatives (``weights · μ``), so that `correction` is 0 on a typical
    #: segment; None for a concept stored before it was kept (it then keeps its own probability in `tag_probs`).
    centre: float | None = None

    @property
    def refines_zero_shot(self) -> bool:
        """True when X-CLIP knows the concept's text: among labels it is X-CLIP's zero-shot plus a correction."""
        return self.text is not None and self.centre is not None

    def correction(self, v: np.ndarray) -> np.ndarray:
        """The learned term over ``v`` centred on the negatives (what the examples add to X-CLIP's score)."""
        unit = _unit(v)
        return unit @ self.weights.astype(np.float64) - (self.centre or 0.0)

    @property
    def uses_text(self) -> bool:
        return self.text is not None

    def logits(self, v: np.ndarray, text_scores: np.ndarray | None = None) -> np.ndarray:
        """Logits for segments' ``v`` (B, D; normalised here) and, when `uses_text`, their text scores (B,)."""
        v = np.asarray(v, np.float32)
        unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        out = unit.astype(np.float64) @ self.weights.astype(np.float64) + self.bias
        if self.uses_text:
            if text_scores is None:
                raise ValueError("this concept needs the prompted scores of its text")
            out = out + self.text_weight * self.logit_scale * np.asarray(text_scores, np.float64)
        return out

    def probs(self, v: np.ndarray, text_scores: np.ndarray | None = None) -> np.ndarray:
        return _sigmoid(self.logits(v, text_scores))

    def to_json(self) -> str:
        """JSON (no pickle): the weights as base64 float32."""
        return json.dumps(
            {
                "method": METHOD,
                "weights": base64.b64encode(self.weights.astype("<f4").tobytes()).decode("ascii"),
                "bias": self.bias,
                "text": self.text,
                "text_weight": self.text_weight,
                "logit_scale": self.logit_scale,
                "centre": self.centre,
            }
        )

    @classmethod
    def from_json(cls, data: str) -> ConceptModel:
        d = json.loads(data)
        weights = np.frombuffer(base64.b64decode(d["weights"]), dtype="<f4").astype(np.float32)
        return cls(
            weights=weights,
            bias=float(d["bias"]),
            text=d.get("text"),
            text_weight=float(d.get("text_weight", 0.0)),
            logit_scale=float(d["logit_scale"]),
            centre=None if d.get("centre") is None else float(d["centre"]),
        )


@dataclass(frozen=True)
class FitReport:
    """A fitted concept and what the fit measured: held-out (leave-one-out) balanced accuracy, None with fewer
    than 2 positives; the text's separation (None when no text was offered)."""

    model: ConceptModel
    positives: int
    negatives: int
    held_out_accuracy: float | None
    text_separation: float | None


def text_separation(pos_s: np.ndarray, neg_s: np.ndarray) -> float:
    """How many negatives' standard deviations the positives' mean prompted score lies above the negatives'."""
    spread = float(np.std(neg_s)) + 1e-6
    return float((np.mean(pos_s) - np.mean(neg_s)) / spread)


def fit_concept(
    pos_v: np.ndarray,
    neg_v: np.ndarray,
    *,
    logit_scale: float,
    text: str | None = None,
    pos_s: np.ndarray | None = None,
    neg_s: np.ndarray | None = None,
    force_text: bool = False,
    l2_v: float = L2_V,
    l2_text: float = L2_TEXT,
    held_out: bool = True,
) -> FitReport:
    """Fit a concept from positive and negative ``v`` (and, with `text`, their prompted scores for it).

    The text term is kept when its scores separate the classes (`TEXT_SEPARATION`) or `force_text` (a search
    refined by feedback: the query is the user's own text).
    """
    pos_v, neg_v = _unit(pos_v), _unit(neg_v)
    if len(pos_v) == 0:
        raise InvalidArgumentError("A concept needs at least one positive example")
    if len(neg_v) == 0:
        raise InvalidArgumentError("A concept needs negative examples", hint="Index some videos first.")
    separation = None
    use_text = False
    if text is not None and pos_s is not None and neg_s is not None:
        separation = text_separation(pos_s, neg_s)
        use_text = force_text or separation >= TEXT_SEPARATION
    ps = np.asarray(pos_s, np.float64) if use_text and pos_s is not None else None
    ns = np.asarray(neg_s, np.float64) if use_text and neg_s is not None else None
    model, accuracy = _fit(
        pos_v, neg_v, ps, ns, text if use_text else None, logit_scale, l2_v, l2_text, held_out and len(pos_v) >= 2
    )
    return FitReport(
        model=model,
        positives=len(pos_v),
        negatives=len(neg_v),
        held_out_accuracy=accuracy,
        text_separation=separation,
    )


def _fit(
    pos_v: np.ndarray,
    neg_v: np.ndarray,
    pos_s: np.ndarray | None,
    neg_s: np.ndarray | None,
    text: str | None,
    logit_scale: float,
    l2_v: float,
    l2_text: float,
    held_out_wanted: bool = False,
) -> tuple[ConceptModel, float | None]:
    """Weighted (each class half the loss), L2-regularised logistic regression by Newton's method; with
    `held_out_wanted`, also its leave-one-out balanced accuracy."""
    mu = neg_v.mean(axis=0)
    x = np.concatenate([pos_v, neg_v]).astype(np.float64) - mu
    n_pos, n_neg = len(pos_v), len(neg_v)
    dim = x.shape[1]
    columns = [x]
    penalty = [np.full(dim, l2_v)]
    prior = [np.zeros(dim)]
    s_ref = 0.0
    if pos_s is not None and neg_s is not None:
        s_ref = float(np.mean(neg_s))
        columns.append((logit_scale * (np.concatenate([pos_s, neg_s]) - s_ref))[:, None])
        penalty.append(np.array([l2_text]))
        prior.append(np.array([1.0]))
    columns.append(np.ones((len(x), 1)))
    penalty.append(np.array([1e-8]))
    prior.append(np.zeros(1))
    features = np.concatenate(columns, axis=1)
    y = np.concatenate([np.ones(n_pos), np.zeros(n_neg)])
    c = np.concatenate([np.full(n_pos, 0.5 / n_pos), np.full(n_neg, 0.5 / n_neg)])
    pen = np.concatenate(penalty)
    w = _newton(features, y, c, pen, np.concatenate(prior))
    held_out = _held_out_accuracy(features, y, c, pen, w) if held_out_wanted else None
    weights = w[:dim]
    text_weight = float(w[dim]) if text is not None else 0.0
    bias = float(w[-1] - weights @ mu - text_weight * logit_scale * s_ref)
    model = ConceptModel(
        weights=weights.astype(np.float32),
        bias=bias,
        text=text,
        text_weight=text_weight,
        logit_scale=logit_scale,
        centre=float(weights.astype(np.float32).astype(np.float64) @ mu),
    )
    return model, held_out


def _newton(x: np.ndarray, y: np.ndarray, c: np.ndarray, penalty: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Minimise the weighted log-loss plus the penalty: Newton steps, halved until the objective decreases."""

    def objective(w: np.ndarray) -> float:
        z = x @ w
        loss = np.logaddexp(0.0, z) - y * z
        return float(c @ loss + 0.5 * penalty @ ((w - prior) ** 2))

    w = prior.copy()
    current = objective(w)
    x32 = x.astype(np.float32)  # the Hessian's product in float32: 3x faster, and the line search guards the step
    for _ in range(50):
        p = _sigmoid(x @ w)
        grad = x.T @ (c * (p - y)) + penalty * (w - prior)
        hess = ((x32.T * (c * p * (1.0 - p)).astype(np.float32)) @ x32).astype(np.float64)
        hess[np.diag_indices_from(hess)] += penalty
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6:
            trial = objective(w - t * step)
            if trial <= current - 1e-4 * t * float(grad @ step):
                break
            t *= 0.5
        w = w - t * step
        done = abs(current - trial) < 1e-10
        current = trial
        if done or float(np.max(np.abs(t * step))) < 1e-7:
            break
    return w


def _held_out_accuracy(x: np.ndarray, y: np.ndarray, c: np.ndarray, penalty: np.ndarray, w: np.ndarray) -> float:
    """Balanced accuracy (mean of the positives' and the negatives' accuracy at P = 0.5) of leave-one-out
    predictions, each point predicted by the model fitted without it, from the one fit: one Newton step from
    the optimum with that point removed (Sherman-Morrison), ``z_-i = z_i + c_i (p_i - y_i) h_i / (1 - d_i h_i)``
    with ``h_i = x_i^T H^-1 x_i``. Exact for a quadratic loss, within a few per cent of refitting for this one."""
    z = x @ w
    p = _sigmoid(z)
    d = c * p * (1.0 - p)
    x32 = x.astype(np.float32)
    hess = ((x32.T * d.astype(np.float32)) @ x32).astype(np.float64)
    hess[np.diag_indices_from(hess)] += penalty
    h = np.einsum("ij,ij->i", x32 @ np.linalg.inv(hess).astype(np.float32), x32).astype(np.float64)
    z_out = z + c * (p - y) * h / np.maximum(1.0 - d * h, 1e-9)
    pos, neg = y == 1, y == 0
    return 0.5 * (float(np.mean(z_out[pos] >= 0)) + float(np.mean(z_out[neg] < 0)))


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64).reshape(len(v), -1) if len(v) else np.zeros((0, 1))
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64))))


def tag_probs(
    scores: np.ndarray,
    models: Sequence[ConceptModel | None],
    v: np.ndarray,
    text_scores: Sequence[np.ndarray | None],
    logit_scale: float,
    correction: float = TAG_CORRECTION,
) -> np.ndarray:
    """Tag probabilities (B, L) of labels for segments.

    `scores` holds X-CLIP's prompted score of each label, `models[j]` the concept a label names (None for a plain
    label) and `text_scores[j]` the prompted score of that concept's text when it differs from the label.

    * Plain labels: X-CLIP's zero-shot softmax over the plain labels (a vocabulary without concepts is unchanged).
    * A concept: its own probability (against the index's segments, calibrated).
    * Two or more concepts whose text X-CLIP knows (`ConceptModel.refines_zero_shot`): they share the most
      confident one's probability by X-CLIP's zero-shot softmax over their texts, each logit plus `correction`
      times the concept's learned term. Their own probabilities, each fitted against random segments, overturn
      zero-shot's right answers among confusable labels (its margins there are a fraction of a logit); as a small
      correction the examples fix some of zero-shot's mistakes and keep its right answers (measured in
      scripts/eval_concepts.py). One such concept alone keeps its own probability.
    """
    scores = np.asarray(scores, np.float64)
    probs = np.zeros(scores.shape, np.float64)
    plain = [j for j, m in enumerate(models) if m is None]
    if plain:
        z = logit_scale * scores[:, plain]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        probs[:, plain] = e / e.sum(axis=1, keepdims=True)
    own: dict[int, np.ndarray] = {}
    for j, model in enumerate(models):
        if model is not None:
            own[j] = scores[:, j] if text_scores[j] is None else np.asarray(text_scores[j], np.float64)
            probs[:, j] = model.probs(v, own[j] if model.uses_text else None)
    known = [j for j, m in enumerate(models) if m is not None and m.refines_zero_shot]
    if len(known) >= 2:
        z = np.stack(
            [logit_scale * own[j] + correction * models[j].correction(v) for j in known],  # type: ignore[union-attr]
            axis=1,
        )
        e = np.exp(z - z.max(axis=1, keepdims=True))
        probs[:, known] = e / e.sum(axis=1, keepdims=True) * probs[:, known].max(axis=1, keepdims=True)
    return probs


def calibration(probs: np.ndarray, truth: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Expected calibration error and the reliability table (equal-width bins) of predicted probabilities."""
    probs = np.asarray(probs, np.float64)
    truth = np.asarray(truth, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    table = []
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if not np.any(sel):
            continue
        conf, acc = float(probs[sel].mean()), float(truth[sel].mean())
        ece += float(sel.mean()) * abs(conf - acc)
        table.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "n": int(sel.sum()), "mean_prob": conf, "rate": acc})
    return {"ece": ece, "reliability": table}
