"""Reply engines: vLLM in-process, a remote vLLM server, or transformers; one interface for the bot."""
