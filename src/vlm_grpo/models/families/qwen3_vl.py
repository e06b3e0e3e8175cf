"""Qwen3-VL and Qwen3-VL-MoE: a torchvision-free processor, M-RoPE prefix prefill, image- and
video-feature sharing with deepstack features (tiny builders: `models/tiny/qwen.py`). Everything the Qwen2-VL
adapter does the same way is inherited from it.

Processor. `Qwen3VLProcessor(...)` cannot be built without torchvision (its video processor
mapping fails), and `AutoProcessor` on a Qwen3-VL folder then fails too; the subclass below leaves
that video processor out and takes videos through `frames.FrameVideoProcessor`, loads folders saved by
the standard processor (ignoring their video processor settings) and saves folders that name it. The
processor writes each frame pair of a video as `<t seconds>` and the pair's tokens between vision start
and end, the timestamps from the frames' indices in the source (`frames.video_call`'s metadata).
Images go through the same Qwen2-VL image processor class as Qwen2-VL's, configured with patch
size 16, so the inherited `fit_image` resizes to multiples of 16 x merge size (32) as the processor
does.

Shared prefix. As for Qwen2-VL, with `get_rope_index` (which needs `mm_token_type_ids`) giving
the interleaved M-RoPE positions of the prompt. The forward takes position ids of 3 rows (the
temporal, height and width axes) or 4 (`generate` adds a first row of plain text positions,
read only to build the attention mask when no 2-D mask is given and by flash attention's
packed-sequence check); the model's own training forward and this adapter pass 3 rows, always
with a 2-D mask. Positions are passed explicitly, so the rope deltas the model caches between
calls are never read.

Image-feature sharing. Qwen3-VL adds deepstack features (merged outputs of early vision layers)
to the hidden states of the first decoder layers at the image positions. Each image's main and
deepstack features are encoded once and handed to its rows together, so sharing stays exact.

Qwen3-VL-MoE (`qwen3_vl_moe`, its own family `qwen3-vl-moe`) is the same model with sparse
expert MLPs and gets the same treatment; its tiny version (4 experts, 2 per token) passes the same
checks. Its router picks experts by top-k, so where two experts' router logits tie to within float
rounding, the shared and per-row passes can route a token differently; in float32 on the tiny
model this did not happen, in bfloat16 it can, as it can between any two batch compositions.
"""

from __future__ import annotations

from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

from .base import base_model
from .frames import WithFrames
from .qwen2_vl import Qwen2VLAdapter


class ImageOnlyQwen3VLProcessor(WithFrames, Qwen3VLProcessor):
    standard_name = "Qwen3VLProcessor"


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3-vl"
    model_types = ("qwen3_vl",)
    processor_class = Qwen3VLProcessor
    image_only_processor = ImageOnlyQwen3VLProcessor
    video_processor_type = "Qwen3VLVideoProcessor"

    # ------------------------------------------------------------ image-feature sharing
    def image_features(self, model, pixel_values, image_grid_thw) -> tuple:
        """Per image: (its merged features, its deepstack features, one per deepstack layer)."""
        out = base_model(model).model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
        return _with_deepstack(out)

    def video_features(self, model, pixel_values_videos, video_grid_thw) -> tuple:
        """Per video: its merged features and its deepstack features, as for an image."""
        return _with_deepstack(base_model(model).model.get_video_features(pixel_values_videos, video_grid_thw))

    def image_encoder_output(self, per_row: tuple):
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        layers = len(per_row[0][1]) if per_row else 0
        return BaseModelOutputWithDeepstackFeatures(
            pooler_output=tuple(main for main, _ in per_row),
            deepstack_features=[tuple(deep[layer] for _, deep in per_row) for layer in range(layers)],
        )


def _with_deepstack(out) -> tuple:
    """Per item of a vision output: (its merged features, its deepstack features, one per deepstack layer)."""
    return tuple(
        (main, tuple(layer[i] for layer in out.deepstack_features)) for i, main in enumerate(out.pooler_output)
    )


class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    family = "qwen3-vl-moe"
    model_types = ("qwen3_vl_moe",)
