"""A report's headline figures: what storage keeps, `twin eval` prints and /status shows."""

from __future__ import annotations

from .discriminator import with_interval


def headline(data: dict) -> dict:
    """The few figures that say whether this adapter is better than the base model and the previous one."""
    models = (data.get("loss") or {}).get("models") or {}
    style = data.get("style_overall") or {}
    figure = lambda m, k: (models.get(m) or {}).get(k)  # noqa: E731
    styled = lambda m, k: (style.get(m) or {}).get(k)  # noqa: E731
    owner = data.get("owner")
    return {
        "version": data["version"],
        "status": data["status"],
        "previous_version": data.get("previous_version"),
        "eval_loss": figure("current", "loss"),
        "eval_ppl": figure("current", "ppl"),
        "base_eval_loss": figure("base", "loss"),
        "previous_eval_loss": figure("previous", "loss"),
        "owner": owner,
        "owner_eval_loss": (figure("current", "per_persona") or {}).get(owner),
        "style_distance": styled("current", "distance"),
        "base_style_distance": styled("base", "distance"),
        "previous_style_distance": styled("previous", "distance"),
        "discriminator": styled("current", "discriminator"),
        "discriminator_ci": styled("current", "discriminator_ci"),
        "base_discriminator": styled("base", "discriminator"),
        "previous_discriminator": styled("previous", "discriminator"),
        "question_share": styled("current", "question"),
        "base_question_share": styled("base", "question"),
        "real_question_share": styled("real", "question"),
        "engine": data.get("engine"),
    }


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def describe(figures: dict) -> str:
    """The headline on one line."""
    if figures.get("status") == "leak":
        return "FAILED: eval sessions are in its training data, so its eval figures mean nothing (retrain with --full)"
    return (
        f"eval loss {_fmt(figures.get('eval_loss'))} (ppl {_fmt(figures.get('eval_ppl'), '.1f')}; base "
        f"{_fmt(figures.get('base_eval_loss'))}, previous {_fmt(figures.get('previous_eval_loss'))}); style distance "
        f"{_fmt(figures.get('style_distance'), '.2f')} (base {_fmt(figures.get('base_style_distance'), '.2f')}, "
        f"previous {_fmt(figures.get('previous_style_distance'), '.2f')}); discriminator "
        f"{with_interval(figures.get('discriminator'), figures.get('discriminator_ci')).replace('—', '-')} "
        "(0.5 = passes for real; base "
        f"{_fmt(figures.get('base_discriminator'), '.2f')}, "
        f"previous {_fmt(figures.get('previous_discriminator'), '.2f')}); ending in a question "
        f"{_fmt(figures.get('question_share'), '.0%')} (real {_fmt(figures.get('real_question_share'), '.0%')}, "
        f"base {_fmt(figures.get('base_question_share'), '.0%')})"
    )
