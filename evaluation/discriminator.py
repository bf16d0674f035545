"""Can a classifier tell the twin's replies from the real ones? The discriminator accuracy.

A character n-gram classifier (TF-IDF + logistic regression) learns, with stratified k-fold cross-validation,
to tell the persona's real held-out replies from the replies a model generated to the same contexts; its
accuracy on the folds it did not train on is the figure:

    0.5  it cannot tell them apart: the generated replies pass for the persona's own
    1.0  every generated reply gives itself away (length, punctuation, casing, wording, script)

Unlike the style distance, nobody chose the features: whatever habit differs, the classifier may find it.
With a few dozen replies a side the figure moves by several points from one sample to the next.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

# Character n-grams of 1-4 within words see spelling, punctuation, emoji and casing habits in any script
# without a tokenizer; longer ones mostly memorise the words of a few replies.
NGRAMS = (1, 4)
# The vectorizer folds all whitespace into one space, so a newline between a burst's messages would vanish:
# a mark of its own keeps how many messages a reply has (and what each one ends with) visible.
MESSAGE_BREAK = " ¶ "
# lbfgs converges on a few hundred sparse rows long before this; the default 100 can stop short on tiny folds.
MAX_ITER = 1000


def burst_text(burst: Sequence[str]) -> str:
    """A reply (a burst of messages) as one text for the classifier."""
    return MESSAGE_BREAK.join(burst)


def discriminator_accuracy(
    real: Sequence[Sequence[str]], generated: Sequence[Sequence[str]], folds: int = 5, seed: int = 0
) -> float | None:
    """Mean cross-validated accuracy (4 places) of telling `real` replies from `generated` ones: 0.5 = it
    cannot tell, 1.0 = it always can. Empty replies (dropped as degenerate, counted by the style statistics)
    are left out; the larger side is sampled down to the smaller by `seed`, so guessing one class scores 0.5.
    None when either side has fewer than `folds` replies: too few to say."""
    # Imported here: scikit-learn takes a second to import and only a report needs it.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
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
    scores = cross_val_score(classifier, kept[0] + kept[1], labels, cv=cv, scoring="accuracy")
    return round(float(scores.mean()), 4)
