"""rltune.eval: answer grading and (issue 3) the pass@k / maj@k eval harness."""
