"""The `twin` command line: assembles every part's commands (collector, trainer, engine, evaluation, bot)."""
