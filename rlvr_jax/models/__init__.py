"""The policy family: config, parameters, forward pass, HF interop, tokenizer."""
