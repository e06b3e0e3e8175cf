"""Column layouts: which columns of a row hold its image(s), question and answer.

Flat rows hold each in a column of its own, in one of these layouts:
- CLEVR-cogen (`image`, `problem`, `solution` = `<answer> N </answer>`);
- SuperCLEVR-200 as R1-V ships it (`image_path`, `question`, `ground_truth`) with an images root;
- generic (`image` a path, bytes or a list of them, or `images`; `question`, `answer`, optional `choices`).
Any flat layout may have a `video` (or `video_path`) column beside or in place of its image column: a video
file's path, its bytes, or a list of frame files (`data/videos.py`).
Chat rows hold the question in a conversation (`prompt`, `messages` or `conversations`, read by
`chat.py`), the images in `images` or `image`, a video in `videos` (a list, one per video placeholder) or
`video` (the video itself), the answer in `solution` or `answer`, else in the conversation's assistant turn;
a prompt shows at most one video. The layout is found from the columns the rows have; where they leave it
open (a question column and a conversation, or no column for a field) the error names the
`data.columns` mapping that settles it. The task turns a row's question, answer and choices into the
prompt's question and the ground truth (`Task.read_sample`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config_checks import COLUMN_FIELDS
from ..errors import BadSample
from ..tasks import Task
from .chat import has_answer_turn, read_chat
from .samples import Sample

FIELDS = COLUMN_FIELDS  # image, question, answer, choices, conversation, video: what data.columns maps

# Flat layouts: the columns holding (image, question, answer), tried in order.
FLAT = (
    ("image", "problem", "solution"),  # CLEVR-cogen
    ("image_path", "question", "ground_truth"),  # SuperCLEVR-200 (R1-V)
    ("image", "question", "answer"),  # generic
    ("images", "question", "answer"),  # an image folder whose metadata lists `file_names`
)
CONVERSATIONS = ("prompt", "messages", "conversations")  # TRL's prompt-only and full chats, LLaVA's
CHAT_IMAGES = ("images", "image")
CHAT_ANSWERS = ("solution", "answer")
VIDEOS = ("video", "video_path")  # a flat row's video, beside or in place of its image
CHAT_VIDEOS = ("videos", "video")  # a chat row's: a list matched to its video placeholders, or one video
LISTED_VIDEOS = "videos"  # the column that holds a list of videos (elsewhere a list is one video's frames)


@dataclass(frozen=True)
class Columns:
    """The column of each field in a data set's rows."""

    image: str | None
    """None: a chat row's images are only those its messages carry."""
    question: str | None = None
    """A flat row's question; None for chat rows."""
    answer: str | None = None
    """None: the conversation's assistant turn is the answer."""
    choices: str = "choices"
    conversation: str | None = None
    """A chat row's messages; None for flat rows."""
    video: str | None = None
    """A row's video (a chat row's `videos`: a list of them); None: the rows have none."""

    def prompt_columns(self) -> set[str | None]:
        """The columns that make the prompt (a reward reads the row's other columns)."""
        return {self.image, self.question, self.conversation, self.video}


def find_columns(head: Sequence[Mapping[str, Any]], mapping: Mapping[str, str], name: str) -> Columns:
    """Which column holds each field: `mapping` (data.columns) first, else the layout the rows' columns fit."""
    columns: set[str] = set().union(*(row.keys() for row in head))
    missing = sorted(f"{field}={col}" for field, col in mapping.items() if col not in columns)
    if missing:
        raise ValueError(
            f"{name}: data.columns names columns it does not have ({', '.join(missing)}); it has {sorted(columns)}"
        )
    conversation = _conversation_column(head, columns, mapping)
    question = None if "conversation" in mapping else mapping.get("question") or _first(_flat(1), columns)
    if conversation and question:
        raise ValueError(
            f"{name}: rows hold both a question column and a conversation; set data.columns.question={question} "
            f"to ask that column, or data.columns.conversation={conversation} to ask the conversation"
        )
    if conversation:
        return _chat_columns(conversation, head, columns, mapping, name)
    return _flat_columns(columns, mapping, name)


def make_sample(row_id: str, row: Mapping[str, Any], columns: Columns, domain: str, task: Task) -> Sample:
    """A sample from one row whose fields are in `columns`; the task reads the question and answer."""
    video = _given(row.get(columns.video)) if columns.video else None
    if columns.conversation is None:
        image = _given(row.get(columns.image)) if columns.image else None
        question, answer = row.get(columns.question), row.get(columns.answer)
    else:
        images = row.get(columns.image) if columns.image else None
        # A list in a `video` column is one video's frames: only `videos` lists several videos.
        videos = video if columns.video == LISTED_VIDEOS or video is None else [video]
        messages = row.get(columns.conversation)
        chat = read_chat(messages, images, row_id, answered_here=columns.answer is None, videos=videos)
        question, image, video = chat.question, chat.images, _one_video(chat.videos, row_id)
        answer = row.get(columns.answer) if columns.answer else chat.answer
    if not isinstance(question, str) or not question.strip():
        raise BadSample(f"{row_id}: the question is empty")
    if video is None and (image is None or (isinstance(image, (list, tuple)) and not image)):
        raise BadSample(f"{row_id}: no image" + (" and no video" if columns.video else ""))
    fields = {"choices": row.get(columns.choices)} if columns.choices in row else {}
    question, target = task.read_sample(question.strip(), answer, fields, row_id)
    return Sample(row_id, image, question, target, domain, video=video)


def _given(value: Any) -> Any:
    """A cell's image or video; a blank one (a CSV row without it) as None."""
    return None if isinstance(value, str) and not value.strip() else value


def _one_video(videos: list[Any], row_id: str) -> Any:
    if len(videos) > 1:
        raise BadSample(f"{row_id}: {len(videos)} videos in the conversation; a prompt shows one video")
    return videos[0] if videos else None


def _video_column(candidates: Sequence[str], columns: set[str], mapping: Mapping[str, str], name: str) -> str | None:
    """The column holding the rows' videos: the mapped one, else the one candidate they have (two: ambiguous)."""
    if "video" in mapping:
        return mapping["video"]
    found = [c for c in candidates if c in columns]
    if len(found) > 1:
        raise ValueError(
            f"{name}: rows hold videos in both {' and '.join(map(repr, found))}; name the one the prompt shows "
            f"with data.columns.video={found[0]}"
        )
    return found[0] if found else None


def _first(candidates: Iterable[str], columns: set[str]) -> str | None:
    return next((c for c in candidates if c in columns), None)


def _flat(position: int) -> list[str]:
    """The flat layouts' column names for one field (0 image, 1 question, 2 answer), in order, once each."""
    return list(dict.fromkeys(layout[position] for layout in FLAT))


def _conversation_column(
    head: Sequence[Mapping[str, Any]], columns: set[str], mapping: Mapping[str, str]
) -> str | None:
    """The column holding a conversation: a list of messages (a `prompt` of plain text is not one)."""
    if "conversation" in mapping or "question" in mapping:
        return mapping.get("conversation")
    for column in CONVERSATIONS:
        values = [row[column] for row in head if row.get(column) is not None]
        if values and all(isinstance(v, (list, tuple)) for v in values):
            return column
    return None


def _chat_columns(
    conversation: str, head: Sequence[Mapping[str, Any]], columns: set[str], mapping: Mapping[str, str], name: str
) -> Columns:
    answer = mapping.get("answer") or _first(CHAT_ANSWERS, columns)
    if answer is None and not any(has_answer_turn(row.get(conversation)) for row in head):
        raise ValueError(
            f"{name}: no answer: no {' or '.join(CHAT_ANSWERS)} column and no assistant turn in {conversation!r}; "
            "name the answer's column with data.columns.answer=COLUMN"
        )
    image = mapping.get("image") or _first(CHAT_IMAGES, columns)
    video = _video_column(CHAT_VIDEOS, columns, mapping, name)
    return Columns(image, None, answer, mapping.get("choices", "choices"), conversation, video)


def _flat_columns(columns: set[str], mapping: Mapping[str, str], name: str) -> Columns:
    video = _video_column(VIDEOS, columns, mapping, name)
    needed = FIELDS[:3] if video is None else FIELDS[1:3]  # rows with a video may have no image
    for layout in FLAT:
        names = {**dict(zip(FIELDS, layout)), **mapping}
        if all(names[field] in columns for field in needed):
            image = names["image"] if names["image"] in columns else None
            return Columns(image, names["question"], names["answer"], names.get("choices", "choices"), video=video)
    found = {field: mapping.get(field) or _first(_flat(FIELDS.index(field)), columns) for field in needed}
    absent = [field for field, column in found.items() if column is None]
    if absent:
        fixes = " ".join(f"data.columns.{field}=COLUMN" for field in absent)
        raise ValueError(f"{name}: no {' or '.join(absent)} column among {sorted(columns)}; name it with {fixes}")
    fixes = " ".join(f"data.columns.{field}={column}" for field, column in found.items())
    raise ValueError(f"{name}: columns {sorted(columns)} mix known layouts; name them with {fixes}")
