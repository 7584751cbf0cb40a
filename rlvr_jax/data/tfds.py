"""GSM8K from a locally prepared TFDS dataset, read with tfds.data_source (no TensorFlow needed).

The dataset must already be in `data_dir` in the array_record format, prepared once online with
`tfds.builder("gsm8k", data_dir=DIR, file_format="array_record").download_and_prepare()`;
nothing is downloaded here.
"""

from __future__ import annotations

import os

from rlvr_jax.data import types

TFDS_PIN = "tensorflow-datasets>=4.9.10,<4.10"  # installs without TensorFlow; pulls array_record


def _decode(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_tfds_gsm8k(data_dir: str, split: str = "test") -> list[types.Example]:
    """The `split` ("train", "test", "train_socratic", ...) of TFDS gsm8k under `data_dir`."""
    try:
        import tensorflow_datasets as tfds  # lazy: heavy, and optional
    except ImportError as e:
        raise ImportError(
            f"load_tfds_gsm8k needs tensorflow-datasets (TensorFlow is not needed): "
            f"pip install '{TFDS_PIN}'; or read the GSM8K jsonl with data.files.load_gsm8k"
        ) from e
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"TFDS data_dir not found: {data_dir}")
    source = tfds.data_source("gsm8k", data_dir=data_dir, split=split, download=False)
    examples = []
    for i in range(len(source)):
        row = {k: _decode(v) for k, v in source[i].items()}
        # short_answer is TFDS's split of the answer at '#### '; commas removed as in files.py.
        answer = row.get("short_answer", "").strip().replace(",", "")
        if not answer:
            raise ValueError(f"{data_dir} gsm8k/{split}, index {i}: empty field 'short_answer'")
        examples.append(
            types.Example(
                uid=f"gsm8k/{split}:{i}",
                prompt=row["question"],
                answer=answer,
                solution=row.get("answer"),
                source="gsm8k",
            )
        )
    return examples
