"""SmolVLM (`smolvlm`, SmolVLMForConditionalGeneration): the Idefics3 architecture, a SigLIP
vision tower whose patch features are pixel-shuffled (`scale_factor`) into fewer, wider tokens, and
a Llama language model. Large images are split into tiles plus one downscaled global image.

Processor. `SmolVLMProcessor` cannot be built here: its constructor requires the `num2words`
package (used only to write video prompts) and it expects a video processor, which needs
torchvision. The image-only subclass below skips both, keeps SmolVLM's image prompt (tiles
wrapped in `<fake_token_around_image>` with `<row_i_col_j>` tags, then `<global-img>`) and loads
folders saved by the standard processor
(ignoring their video settings: videos cannot be given to it). Images go through the PIL image
processor (`SmolVLMImageProcessorPil`).

Tokens. The chat template is the SmolVLM instruction checkpoints' (`User:` / `Assistant:`, `<image>`
where an image goes), with one addition: a message whose content is a plain string (the system
prompt of the R1-V style) is written as text rather than dropped. A turn ends with
`<end_of_utterance>`. Placeholders: the SmolVLM vocabulary holds `<global-img>`, the 36
`<row_i_col_j>` tags, `<fake_token_around_image>` and `<image>` at consecutive ids ending at the
config's `image_token_id` (49152-49190 in the published checkpoints); the tiny tokenizer keeps that
layout, so the block is read off the config alone.

`idefics3` (Idefics3ForConditionalGeneration) is the same architecture but its published
checkpoint (Idefics3-8B-Llama3) has another vocabulary layout, which could not be checked offline
here, so it is left to the generic adapter. Passes are per row (no prefix sharing).
"""

from __future__ import annotations

from transformers.models.smolvlm.processing_smolvlm import SmolVLMProcessor
from transformers.processing_utils import ProcessorMixin

from ..compat import pil_image_processor
from .base import FamilyAdapter
from .processors import SavedAsStandard

SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# In the order of the SmolVLM vocabulary: the image placeholders are one block ending with <image>.
PLACEHOLDERS = (
    ["<global-img>"]
    + [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]
    + ["<fake_token_around_image>", "<image>"]
)
SPECIAL_TOKENS = {f"extra_{i}": token for i, token in enumerate(PLACEHOLDERS)} | {
    "eos_token": "<end_of_utterance>",
    "pad_token": "<|endoftext|>",
    "bos_token": "<|im_start|>",
    "fake_image_token": "<fake_token_around_image>",
    "image_token": "<image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}


class ImageOnlySmolVLMProcessor(SavedAsStandard, SmolVLMProcessor):
    standard_name = "SmolVLMProcessor"

    # No `video_processor` argument: ProcessorMixin derives its sub-processors from this signature.
    def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None, **kwargs):
        # SmolVLMProcessor.__init__'s attributes, without its num2words check (videos only).
        self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
        self.image_token = getattr(tokenizer, "image_token", "<image>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
        self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
        self.image_seq_len = image_seq_len
        self.video_token = getattr(tokenizer, "video_token", "<video>")
        kwargs.pop("video_processor", None)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        # SmolVLMProcessor's own override reads the video processor's frame settings.
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


class SmolVLMAdapter(FamilyAdapter):
    family = "smolvlm"
    model_types = ("smolvlm",)
    processor_class = ImageOnlySmolVLMProcessor
    turn_end_token = "<end_of_utterance>"

    def load_processor(self, path: str, model_type: str, trust_remote_code: bool = False):
        pil_image_processor("smolvlm", "SmolVLMImageProcessorPil")  # loadable by name on every release
        return super().load_processor(path, model_type, trust_remote_code)

    def vision_token_ids(self, model) -> list[int]:
        image = model.config.image_token_id
        return list(range(image - len(PLACEHOLDERS) + 1, image + 1))
