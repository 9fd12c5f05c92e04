"""Tiny, randomly initialised surya-ocr 0.17.1 checkpoints for offline tests.

The models use surya's real architecture classes (``SuryaModel`` for the
foundation/recognition model, ``EfficientViTForSemanticSegmentation`` for text
detection) but with very small widths/depths, so they build in a few seconds
on CPU and load through surya's own loaders from a local directory::

    FoundationPredictor(checkpoint=str(paths["recognition"]), device="cpu")
    DetectionPredictor(checkpoint=str(paths["detection"]), device="cpu")

The weights are random, so outputs are arbitrary; the point is to exercise
surya's code paths (loading, preprocessing, decoding, postprocessing) without
downloading the real weights.

Heavy imports (torch, surya) happen inside the functions.
"""

from __future__ import annotations

from pathlib import Path

# Special-token names the surya processor looks up by name
# (surya/common/surya/processor/__init__.py). Ids are assigned by the
# GreedyMathUTF16Tokenizer in list order after the UTF-16 and math ranges.
SYSTEM_TOKENS = [
    "</S>",  # EOS
    "<EOI>",  # end of input
    "<IMAGE>",
    "<PAD>",
    "<NOP>",  # no output
    "<ROT>",  # image rotated
    "<REG1>",
    "<REG2>",
    "<REG3>",
    "<REG4>",
    "<BEACON>",
    "<NO-MATH>",
    "<OCR-WB>",  # BOS: OCR with boxes
    "<OCR-WOB>",  # BOS: OCR without boxes
    "<BLOCKS-WOB>",
    "<LAYOUT>",
    "<TABLE-STRUCTURE>",
]

FORMATTING_TOKENS = [
    "<b>",
    "</b>",
    "<i>",
    "</i>",
    "<u>",
    "</u>",
    "<sup>",
    "</sup>",
    "<sub>",
    "</sub>",
    "<br>",
]

MATH_EXTERNAL_TOKENS = ['<math display="block">', "<math>", "</math>"]

TABLE_STRUCTURE_TOKENS = ["<table-row>", "<table-column>", "<table-header>"]

REASONING_TOKENS = ["<think>", "</think>"]

RESERVED_TOKENS = [f"<RESERVED-{i}>" for i in range(4)]

# A couple of math tokens so the math-vocab range is not empty.
MATH_VOCAB = {"\\frac": 0, "\\alpha": 1, "\\sum": 2, "\\sqrt": 3}


def _special_tokens_dict() -> dict:
    from surya.common.util import SCRIPT_TOKEN_MAPPING
    from surya.layout.label import LAYOUT_PRED_RELABEL

    return {
        "system": list(SYSTEM_TOKENS),
        "formatting": list(FORMATTING_TOKENS),
        "math_external": list(MATH_EXTERNAL_TOKENS),
        "script": list(SCRIPT_TOKEN_MAPPING.values()),
        "layout": list(LAYOUT_PRED_RELABEL.keys()),
        "reasoning": list(REASONING_TOKENS),
        "table_structure": list(TABLE_STRUCTURE_TOKENS),
        "reserved": list(RESERVED_TOKENS),
    }


def build_tiny_recognition(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random ``SuryaModel`` + ``GreedyMathUTF16Tokenizer``.

    The directory can be passed as ``checkpoint`` to ``FoundationPredictor``
    (and as ``FOUNDATION_MODEL_CHECKPOINT``). It holds ``config.json``,
    ``model.safetensors`` and the tokenizer files (``vocab_math.json``,
    ``specials.json``, ``specials_dict.json``, ``tokenizer_config.json``,
    ``special_tokens_map.json``). No processor config is needed: the loader
    builds ``SuryaOCRProcessor`` from the model config.
    """
    import torch
    from surya.common.surya import SuryaModel
    from surya.common.surya.config import SuryaModelConfig
    from surya.common.surya.decoder.config import SuryaDecoderConfig
    from surya.common.surya.encoder.config import SuryaEncoderConfig
    from surya.common.surya.processor.tokenizer import GreedyMathUTF16Tokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    specials = _special_tokens_dict()
    tokenizer = GreedyMathUTF16Tokenizer(math_vocab=dict(MATH_VOCAB), special_tokens_dict=specials)
    tokenizer.save_pretrained(str(directory))

    # Absolute token ids; the model config must use exactly these.
    ids = tokenizer.SPECIAL_TOKEN_MAPPING
    vocab_size = tokenizer.vocab_size  # 65536 UTF-16 units + math + specials

    hidden = 64
    n_layers, n_heads, n_kv_heads = 2, 4, 2

    encoder = SuryaEncoderConfig(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        # the merged image embeddings feed the decoder directly
        out_hidden_size=hidden,
        fullatt_block_indexes=(1,),
    )
    decoder = SuryaDecoderConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=4096,
    )
    config = SuryaModelConfig(
        vocab_size=vocab_size,
        vision_encoder=encoder.to_dict(),
        decoder=decoder.to_dict(),
        special_ocr_tokens=specials,
        bos_token_id=ids["<OCR-WB>"],
        eos_token_id=ids["</S>"],
        pad_token_id=ids["<PAD>"],
        image_token_id=ids["<IMAGE>"],
        eoi_token_id=ids["<EOI>"],
        beacon_token_id=ids["<BEACON>"],
        register_token_ids=[ids[f"<REG{i}>"] for i in range(1, 5)],
        bbox_embed_size=16,
        # The foundation KV cache (surya/foundation/cache) reads these from the
        # top-level config, not from config.decoder.
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
    )

    torch.manual_seed(seed)
    model = SuryaModel(config)
    # nn.Embedding's default N(0, 1) init plus the tied lm_head makes the
    # untrained decoder echo its last input token with probability ~1.
    # Re-initialise embeddings the usual HF way (N(0, initializer_range)).
    std = decoder.initializer_range
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight.normal_(mean=0.0, std=std)
    model.eval()
    model.save_pretrained(str(directory))
    return directory


def build_tiny_detection(directory: Path, seed: int = 0, text_logit_bias: float = 2.0) -> Path:
    """Save a tiny random ``EfficientViTForSemanticSegmentation`` + processor.

    The directory can be passed as ``checkpoint`` to ``DetectionPredictor``
    (and as ``DETECTOR_MODEL_CHECKPOINT``).

    With HF's init the untrained head outputs logits ~0, i.e. a flat 0.5
    heatmap that is below surya's text threshold, so nothing is detected and
    recognition never runs in full-page mode. ``text_logit_bias`` is added to
    the bias of the text-heatmap channel (sigmoid(2.0) ~ 0.88), which makes
    the detector report one page-sized text region. Use 0.0 for a detector
    that finds nothing.
    """
    import torch
    from surya.detection.model.config import EfficientViTConfig
    from surya.detection.model.encoderdecoder import (
        EfficientViTForSemanticSegmentation,
    )
    from surya.detection.processor import SegformerImageProcessor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    config = EfficientViTConfig(
        widths=(8, 16, 32, 64, 128),
        head_dim=16,
        depths=(1, 1, 1, 1, 1),
        hidden_sizes=(16, 32, 64, 128),
        decoder_layer_hidden_size=32,
        decoder_hidden_size=64,
        num_labels=2,  # text heatmap + affinity map
    )
    torch.manual_seed(seed)
    model = EfficientViTForSemanticSegmentation(config)
    with torch.no_grad():
        model.decode_head.classifier.bias[0] += text_logit_bias
    model.eval()
    model.save_pretrained(str(directory))

    # Smaller than the real checkpoint's input size to keep CPU tests fast.
    SegformerImageProcessor(size={"height": 512, "width": 512}).save_pretrained(str(directory))
    return directory


def build_tiny_models(root: Path, seed: int = 0) -> dict:
    """Build both tiny models under ``root``; returns their directories."""
    root = Path(root)
    return {
        "recognition": build_tiny_recognition(root / "recognition", seed=seed),
        "detection": build_tiny_detection(root / "detection", seed=seed),
    }


def count_parameters(directory: Path) -> int:
    """Number of stored parameters in a saved checkpoint (safetensors)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                total += _prod(f.get_slice(key).get_shape())
    return total


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
