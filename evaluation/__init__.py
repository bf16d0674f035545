"""Evaluation: a report for every adapter (`twin eval`, and at the end of each training round).

Held-out loss and perplexity per persona, the style of generated replies against the real ones, opener
dialogues and a leak guard (the persona conditioning check lives with the tests: tests/conditioning.py).
Only reads storage and adapters; replies come from an engine through the interface the bot uses.
"""
