"""`python -m bot`: the same as `twin serve` (the recipe is bot.serve.serve)."""

from bot.serve import main

main()
