"""Chat rows: the question, images and answer of one conversation, as TRL's VLM examples and LLaVA write them.

TRL: messages `{"role", "content"}` whose content is a string or a list of parts, `{"type": "image"}` (the
next image of the row's image column; or one carrying its own `image`), `{"type": "video"}` (the next video
of the row's video column; or one carrying its own `video`, `path` or `url`, as transformers' chat templates
write it) and `{"type": "text", "text": ...}`. LLaVA (and LLaVA-Video): `{"from": "human" | "gpt", "value":
...}`, an `<image>` or `<video>` token in the text for each image or video. A row with no placeholder of a
kind at all shows all its media of that kind before its first user turn, where TRL's
`prepare_multimodal_messages` puts them. The question is the user turn the answer replies to (the last
user turn when the answer is in a column of its own); the answer, when read from the conversation, is the
first assistant turn after a user turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadSample

ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
MEDIA_TOKEN = re.compile(r"\s*<(?:image|video)>\s*")
_PLACEHOLDER = object()  # a media part that takes the next image (or video) of the row's column
VIDEO_KEYS = ("video", "path", "url")  # where a video part carries its own video


@dataclass(frozen=True)
class Turn:
    role: str
    """`user`, `assistant`, or the message's own role (`system`, `tool`: neither asked nor answered)."""
    text: str
    images: tuple[Any, ...]
    """Its image parts in order: an image the part carries, or `_PLACEHOLDER`."""
    videos: tuple[Any, ...] = ()
    """Its video parts in order, the same way."""


@dataclass(frozen=True)
class ChatRow:
    question: str
    images: list[Any]
    answer: str | None
    """The assistant turn that replies to the question; None when the conversation holds none."""
    videos: list[Any] = field(default_factory=list)


def read_chat(messages: Any, images: Any, row_id: str, answered_here: bool = True, videos: Any = None) -> ChatRow:
    """The question, the images and the videos in placeholder order, and (`answered_here`: the answer is not
    in a column of its own) the answering turn of one conversation. `images` and `videos` are the row's
    columns: one item, a list of them, or None."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise BadSample(f"{row_id}: the conversation is not a list of chat messages")
    turns = [_turn(message, row_id) for message in messages]
    asked, answered = _question_and_answer(turns, row_id, answered_here)
    placed_images = _place([t.images for t in turns if t.role == "user"], _listed(images), "image", row_id)
    placed_videos = _place([t.videos for t in turns if t.role == "user"], _listed(videos), "video", row_id)
    return ChatRow(turns[asked].text, placed_images, answered, placed_videos)


def _listed(given: Any) -> list[Any]:
    return list(given) if isinstance(given, (list, tuple)) else [] if given is None else [given]


def has_answer_turn(messages: Any) -> bool:
    """Whether a conversation holds an assistant turn after a user turn (an answer to read from it)."""
    if not isinstance(messages, (list, tuple)):
        return False
    roles = [_role(m) for m in messages if isinstance(m, dict)]
    return "user" in roles and "assistant" in roles[roles.index("user") :]


def _role(message: dict) -> str:
    role = message.get("role", message.get("from"))
    return ROLES.get(role, str(role))


def _turn(message: Any, row_id: str) -> Turn:
    if not isinstance(message, dict):
        raise BadSample(f"{row_id}: a chat message is {type(message).__name__}, not a dict with role and content")
    content = message.get("content", message.get("value"))
    if content is None or isinstance(content, str):
        # LLaVA marks each image or video with a token in the text; TRL's string content has none.
        text = content or ""
        images, videos = (_PLACEHOLDER,) * text.count("<image>"), (_PLACEHOLDER,) * text.count("<video>")
        return Turn(_role(message), MEDIA_TOKEN.sub(" ", text).strip(), images, videos)
    if not isinstance(content, (list, tuple)):
        raise BadSample(f"{row_id}: a chat message's content is {type(content).__name__}, not text or a list")
    texts, images, videos = [], [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text") or "").strip())
        elif kind == "image":
            carried = part.get("image")
            images.append(_PLACEHOLDER if carried is None else carried)
        elif kind == "video":
            carried = next((part[key] for key in VIDEO_KEYS if part.get(key) is not None), None)
            videos.append(_PLACEHOLDER if carried is None else carried)
    return Turn(_role(message), "\n".join(t for t in texts if t), tuple(images), tuple(videos))


def _question_and_answer(turns: list[Turn], row_id: str, answered_here: bool) -> tuple[int, str | None]:
    """The index of the question's turn and the text of the turn answering it (None: no such turn)."""
    users = [i for i, turn in enumerate(turns) if turn.role == "user"]
    if not users:
        raise BadSample(f"{row_id}: the conversation has no user turn")
    # With the answer in a column, earlier exchanges are examples (a few-shot prompt): the last user turn asks.
    replies = (i for i, turn in enumerate(turns) if turn.role == "assistant" and i > users[0])
    reply = next(replies, None) if answered_here else None
    if reply is None:
        return users[-1], None
    return max(i for i in users if i < reply), turns[reply].text


def _place(per_turn: list[tuple[Any, ...]], given: list[Any], kind: str, row_id: str) -> list[Any]:
    """The user turns' media parts of one `kind` in order, each placeholder taking the next of `given`."""
    parts = [part for parts in per_turn for part in parts]
    if not parts:
        return given
    wanted = sum(part is _PLACEHOLDER for part in parts)
    if wanted != len(given):
        raise BadSample(f"{row_id}: {wanted} {kind} placeholder(s) in the conversation but {len(given)} {kind}(s)")
    pending = iter(given)
    return [next(pending) if part is _PLACEHOLDER else part for part in parts]
