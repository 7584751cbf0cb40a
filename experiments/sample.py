"""Sample completions from a policy: the embedded tiny default, or a local HF checkpoint.

    python experiments/sample.py                                   # tiny preset, random init
    python experiments/sample.py --checkpoint=/path/to/Qwen2.5-Math-1.5B --max_new_tokens=256

Until the trainer lands this is the repository's main job: it exercises the tokenizer's chat
template, the HF loader and the jitted sampler end to end, and prints the completions and the decode
speed. With `--export_to=DIR` it also writes the params back as an HF folder that transformers
loads.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags, logging

from rlvr_jax import sampling
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import hf
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Local HF folder; default: tiny preset.")
_PRESET = flags.DEFINE_string("preset", "tiny", "Model preset when no --checkpoint is given.")
_PROMPTS = flags.DEFINE_multi_string(
    "prompt",
    [
        "Tom has 12 apples. He buys 7 more and gives away 5. How many apples does he have now?",
        "A box holds 6 pens. How many pens are in 4 boxes?",
    ],
    "User prompts (repeatable).",
)
_SYSTEM = flags.DEFINE_string(
    "system", "Solve the problem. Put the final answer in \\boxed{}.", "System prompt."
)
_SAMPLES = flags.DEFINE_integer("samples", 4, "Completions per prompt (G).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Completion budget in tokens.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "0 for greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "0 disables top-k.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "1 disables nucleus sampling.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_EXPORT_TO = flags.DEFINE_string("export_to", None, "Write the params as an HF folder here.")


def main(argv):
    del argv
    if _CHECKPOINT.value:
        model_cfg, params, _ = hf.load_checkpoint(_CHECKPOINT.value)
        tok = tokenizer_lib.load_tokenizer(_CHECKPOINT.value)
    else:
        model_cfg = config_lib.get_preset(_PRESET.value)
        params = params_lib.init_params(model_cfg, jax.random.key(_SEED.value))
        tok = tokenizer_lib.load_tiny_tokenizer()
    logging.info("model %s: %.2fM params", model_cfg.model_type, model_cfg.num_params() / 1e6)
    prompts = [tok.apply_chat_template(p, system=_SYSTEM.value) for p in _PROMPTS.value]
    prompts = [p for p in prompts for _ in range(_SAMPLES.value)]
    cfg = sampling.SamplingConfig(
        max_new_tokens=_MAX_NEW.value,
        temperature=_TEMPERATURE.value,
        top_k=_TOP_K.value,
        top_p=_TOP_P.value,
        eos_ids=tok.eos_ids,
        pad_id=tok.pad_id,
    )
    key = jax.random.key(_SEED.value)
    start = time.perf_counter()
    out = jax.device_get(sampling.generate(params, prompts, key, model_cfg=model_cfg, cfg=cfg))
    first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(sampling.generate(params, prompts, key, model_cfg=model_cfg, cfg=cfg))
    warm = time.perf_counter() - start
    for i, prompt in enumerate(_PROMPTS.value):
        print(f"\n=== prompt {i}: {prompt}")
        for j in range(i * _SAMPLES.value, (i + 1) * _SAMPLES.value):
            text = tok.decode(out.tokens_BxTc[j, : out.lengths_B[j]], skip_special_tokens=True)
            logp = float(np.sum(out.logps_BxTc[j]))
            print(f"--- sample {j} ({out.lengths_B[j]} tokens, logp {logp:.1f}): {text!r}")
    tokens = int(np.sum(out.lengths_B))
    print(
        f"\n{len(prompts)} samples, {tokens} tokens; first call {first:.2f}s (compile included), "
        f"warm call {warm:.3f}s = {tokens / warm:.0f} tokens/s"
    )
    if _EXPORT_TO.value:
        hf.save_checkpoint(_EXPORT_TO.value, model_cfg, params)
        print(f"exported HF checkpoint to {_EXPORT_TO.value}")


if __name__ == "__main__":
    app.run(main)
