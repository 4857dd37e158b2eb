"""A sweep folder read into tables: run folders (`run_folders`), bulk JSONL parsing (`jsonl`,
`parsing`, with the cache of parsed runs), hparams (`headers`), the records and swad tables
(`records`), search runs and trials (`search_runs`)."""
