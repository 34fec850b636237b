#!/usr/bin/env python3
"""How many answers of a docanalyze output loop: the share whose text repeats some 8-word
phrase 3 times or more, and the share that ran to --max-tokens (stop_reason `length`).

    python3 scripts/loop_stats.py results.csv [more outputs...]   (CSV or JSONL)
"""
import csv
import json
import sys
from collections import Counter


def records(path):
    with open(path, newline="") as f:
        if path.endswith(".csv"):
            yield from csv.DictReader(f)
        else:
            yield from (json.loads(line) for line in f if line.strip())


def loops(text, n=8, times=3):
    words = text.split()
    phrases = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return any(c >= times for c in phrases.values())


for path in sys.argv[1:]:
    rows = [r for r in records(path) if r["status"] != "error"]
    looping = sum(loops(r["output"]) for r in rows)
    at_length = sum(r["stop_reason"] == "length" for r in rows)
    print(f"{path}: {looping} of {len(rows)} answers repeat an 8-word phrase 3+ times; "
          f"{at_length} of {len(rows)} ran to --max-tokens")
