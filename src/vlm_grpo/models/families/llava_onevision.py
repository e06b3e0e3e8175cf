"""LLaVA-OneVision (`llava_onevision`, LlavaOnevisionForConditionalGeneration): a SigLIP vision
tower, an MLP projector and a Qwen2 language model. Each image is encoded as its base tile plus
"anyres" tiles on the best-fitting grid of `image_grid_pinpoints`, with a learned newline
embedding closing every row of features.

Works offline here. `LlavaOnevisionProcessor` takes its video processor as an optional argument
and builds without one (no torchvision needed); images go through the PIL image processor
(`LlavaOnevisionImageProcessorPil`). The subclass below loads folders saved by the standard
processor, ignoring their video processor settings (videos cannot be given to it).

Tokens. The chat template is the llava-onevision-qwen2 `-hf` checkpoints' (`<|im_start|>role `,
images first as `<image>`, each text after a newline, `<|im_end|>` closing the turn, no newline
between turns), with one addition: a message whose content is a plain string (the system prompt of
the R1-V style) is written as text rather than dropped. The turn ends with `<|im_end|>`; `<image>`
and `<video>` are placeholders (the config's image and video token indices). Passes are per row.
"""

from __future__ import annotations

from transformers import LlavaOnevisionProcessor

from .base import FamilyAdapter
from .processors import SavedAsStandard

LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ '\\n' + message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\\n' + content['text'] }}{% endfor %}{% endif %}"
    "{{ '<|im_end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPECIAL_TOKENS = {"image_token": "<image>", "video_token": "<video>"}


class ImageOnlyLlavaOnevisionProcessor(SavedAsStandard, LlavaOnevisionProcessor):
    standard_name = "LlavaOnevisionProcessor"

    # Every setting named: `from_pretrained` passes a saved folder's settings only to named arguments.
    # No `video_processor` argument: ProcessorMixin derives its sub-processors from this signature.
    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens=None,
        vision_feature_select_strategy=None,
        chat_template=None,
        image_token="<image>",
        video_token="<video>",
        vision_aspect_ratio="anyres_max_9",
        **kwargs,
    ):
        super().__init__(
            image_processor,
            tokenizer,
            None,
            num_image_tokens=num_image_tokens,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template,
            image_token=image_token,
            video_token=video_token,
            vision_aspect_ratio=vision_aspect_ratio,
        )


class LlavaOnevisionAdapter(FamilyAdapter):
    family = "llava-onevision"
    model_types = ("llava_onevision",)
    processor_class = ImageOnlyLlavaOnevisionProcessor
    placeholder_keys = ("image_token_index", "video_token_index")
    turn_end_token = "<|im_end|>"
