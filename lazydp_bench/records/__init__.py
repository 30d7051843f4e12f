"""Result records: the append-only JSONL store and its loader."""
