"""Text from an aggregate: the tables (`tables`), the notes under them (`notes`), the chosen
runs (`listing`, `tables --show-hparams`), search importances (`importance`)."""
