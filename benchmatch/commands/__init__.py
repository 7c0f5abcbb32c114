"""The `benchmatch` subcommands, one module per stage: measure, learn, match."""
