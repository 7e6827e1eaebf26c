"""rltune.eval: the shared eval harness.

- `grading.grade(response, gold)`: the project's one answer grader;
- `benchmarks`: gsm8k, math500, aime24, aime25, amc23, minerva_math, olympiadbench, or any jsonl;
- `metrics`: pass@k, mean@n, maj@k (by answer equivalence), bootstrap CIs;
- `runner.evaluate(engine, tokenizer, settings)`: sample, grade, summarise (used by `rltune eval`
  and by the trainer's periodic evaluation);
- `plots.plot_pass_at_k`: pass@k curves of several runs.
"""
