"""What one setting does to the reported score and to throughput, paired by seed (a script that
reads run records and prints; used for the precision/batching evidence in docs/throughput.md).

Runs are paired when their resolved configurations differ only in the varied setting and the seed;
`train.precision` is read from what it resolved to (the record's `execution`), so `auto` pairs too.

    python benchmarks/accuracy_effect.py results/throughput_accuracy/runs --vary train.precision train.batching
"""

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from harness.analysis.tables import paired_stats
from harness.results import NON_SEMANTIC, _without

SEEDS = {"train": ("seed",), "eval": ("split_seed",)}


def _records(root: Path) -> list:
    records = [json.loads(p.read_text()) for p in sorted(root.rglob("result.json"))]
    return [r for r in records if r.get("status") == "success"]


def _value(record: dict, dotted: str):
    if dotted == "train.precision":
        return record["execution"]["precision"]
    node = record["config"]
    for part in dotted.split("."):
        node = node[part]
    return node


def _rest(record: dict, dotted: str) -> str:
    """The configuration without the seed, the non-semantic settings and the varied setting."""
    group, key = dotted.split(".", 1)
    drop = {g: NON_SEMANTIC.get(g, ()) + SEEDS.get(g, ()) + ((key,) if g == group else ())
            for g in set(NON_SEMANTIC) | set(SEEDS) | {group}}
    execution = {k: v for k, v in record["execution"].items() if dotted != f"train.{k}"}
    return json.dumps([_without(record["config"], drop), execution], sort_keys=True, default=str)


def effects(records: list, dotted: str) -> list:
    groups = defaultdict(lambda: defaultdict(dict))  # rest -> value -> seed -> record
    for r in records:
        groups[_rest(r, dotted)][str(_value(r, dotted))][r["seed"]] = r
    rows = []
    for by_value in groups.values():
        values = sorted(by_value)
        for i, a in enumerate(values):
            for b in values[i + 1:]:
                seeds = sorted(set(by_value[a]) & set(by_value[b]))
                if not seeds:
                    continue
                ra, rb = [by_value[a][s] for s in seeds], [by_value[b][s] for s in seeds]
                metric = ra[0]["report_metric"]
                score = lambda rs: [r["metrics"][metric] for r in rs]  # noqa: E731
                speed = lambda rs: statistics.median(r["cost"]["tokens_per_second"] for r in rs)  # noqa: E731
                stats = paired_stats([y - x for x, y in zip(score(ra), score(rb))])
                rows.append({"setting": dotted, "label": ra[0]["labels"]["method"], "task": ra[0]["labels"]["task"],
                             "a": a, "b": b, "seeds": seeds, "metric": metric, "mean_a": statistics.mean(score(ra)),
                             "mean_b": statistics.mean(score(rb)), **stats,
                             "tokens_per_s_a": speed(ra), "tokens_per_s_b": speed(rb),
                             "padded_per_real_a": statistics.median(r["cost"].get("padded_per_real_token", float("nan"))
                                                                    for r in ra),
                             "padded_per_real_b": statistics.median(r["cost"].get("padded_per_real_token", float("nan"))
                                                                    for r in rb)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, help="a directory holding run records (searched recursively)")
    ap.add_argument("--vary", nargs="+", required=True, help="dotted settings, e.g. train.precision")
    args = ap.parse_args()
    records = _records(args.runs)
    print(f"{len(records)} successful records under {args.runs}")
    print(f"| setting | task | config | a -> b | n | {'score a':>8} | {'score b':>8} | b - a [95% t CI] | sign-flip p"
          f" | tokens/s a -> b | padded/real a -> b |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for dotted in args.vary:
        for e in effects(records, dotted):
            print(f"| {e['setting']} | {e['task']} | {e['label']} | {e['a']} -> {e['b']} | {e['n']} | {e['mean_a']:.4f}"
                  f" | {e['mean_b']:.4f} | {e['mean_diff']:+.4f} [{e['t_ci95_low']:+.4f}, {e['t_ci95_high']:+.4f}]"
                  f" | {e['p_signflip']:.2f} | {e['tokens_per_s_a']:,.0f} -> {e['tokens_per_s_b']:,.0f}"
                  f" ({e['tokens_per_s_b'] / e['tokens_per_s_a']:.2f}x) | {e['padded_per_real_a']:.2f} ->"
                  f" {e['padded_per_real_b']:.2f} |")


if __name__ == "__main__":
    main()
