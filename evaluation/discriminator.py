"""Can a classifier tell the twin's replies from the real ones? The discriminator accuracy, with its interval.

A character n-gram classifier (TF-IDF + logistic regression) learns, with stratified k-fold cross-validation,
to tell the persona's real held-out replies from the replies a model generated to the same contexts; its
accuracy on the replies it did not train on (every reply is predicted once, by the fold that left it out) is
the figure:

    0.5  it cannot tell them apart: the generated replies pass for the persona's own
    1.0  every generated reply gives itself away (length, punctuation, casing, wording, script)

Unlike the style distance, nobody chose the features: whatever habit differs, the classifier may find it.
The pooled predictions give a 95% Wilson interval: with 16 replies a side it is about ±0.17, with 100 about
±0.07, so two figures mean different things only where their intervals do not overlap.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

# Character n-grams of 1-4 within words see spelling, punctuation, emoji and casing habits in any script
# without a tokenizer; longer ones mostly memorise the words of a few replies.
NGRAMS = (1, 4)
# The vectorizer folds all whitespace into one space, so a newline between a burst's messages would vanish:
# a mark of its own keeps how many messages a reply has (and what each one ends with) visible.
MESSAGE_BREAK = " ¶ "
# lbfgs converges on a few hundred sparse rows long before this; the default 100 can stop short on tiny folds.
MAX_ITER = 1000
# z of a two-sided 95% interval.
Z95 = 1.959964


@dataclass(frozen=True)
class Accuracy:
    """A share of correct predictions with its 95% interval: `correct` of `n`."""

    correct: int
    n: int

    @property
    def value(self) -> float:
        return round(self.correct / self.n, 4)

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    def as_dict(self) -> dict:
        low, high = self.interval
        return {"accuracy": self.value, "low": low, "high": high, "n": self.n}


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of `successes` in `n` trials (4 places): unlike the normal approximation it
    stays inside [0, 1] and is honest near 0.5 and 1.0 with a few dozen trials."""
    if n <= 0:
        raise ValueError("an interval needs at least one trial")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def burst_text(burst: Sequence[str]) -> str:
    """A reply (a burst of messages) as one text for the classifier."""
    return MESSAGE_BREAK.join(burst)


def discriminator(
    real: Sequence[Sequence[str]], generated: Sequence[Sequence[str]], folds: int = 5, seed: int = 0
) -> Accuracy | None:
    """The cross-validated accuracy of telling `real` replies from `generated` ones, pooled over the folds.
    Empty replies (dropped as degenerate, counted by the style statistics) are left out; the larger side is
    sampled down to the smaller by `seed`, so guessing one class scores 0.5. None when either side has fewer
    than `folds` replies: too few to say."""
    # Imported here: scikit-learn takes a second to import and only a report needs it.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    texts = [[burst_text(r) for r in side if any(m.strip() for m in r)] for side in (real, generated)]
    n = min(len(side) for side in texts)
    if n < folds:
        return None
    rng = random.Random(seed)
    kept = [side if len(side) == n else rng.sample(side, n) for side in texts]
    classifier = make_pipeline(
        # lowercase=False: starting messages in lowercase is one of the habits a twin must get right.
        TfidfVectorizer(analyzer="char_wb", ngram_range=NGRAMS, sublinear_tf=True, lowercase=False),
        LogisticRegression(max_iter=MAX_ITER),
    )
    labels = [0] * n + [1] * n
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(classifier, kept[0] + kept[1], labels, cv=cv)
    return Accuracy(int(sum(int(p) == y for p, y in zip(predicted, labels, strict=True))), 2 * n)


def discriminator_accuracy(
    real: Sequence[Sequence[str]], generated: Sequence[Sequence[str]], folds: int = 5, seed: int = 0
) -> float | None:
    """`discriminator`'s accuracy alone (4 places): 0.5 = it cannot tell, 1.0 = it always can; None: too few."""
    figure = discriminator(real, generated, folds, seed)
    return None if figure is None else figure.value


def with_interval(value: float | None, interval: Sequence[float] | None, digits: int = 2) -> str:
    """ "0.82 [0.77, 0.87]" for a table ("—" when there is no figure, the value alone without an interval)."""
    if value is None:
        return "—"
    if not interval:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
