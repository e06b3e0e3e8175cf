"""Image tools: the strict call reader on literal (and hostile) strings, crop and zoom on literal
boxes, and the runner's bounds on a user's tool that errs, raises, loops or allocates."""

import time

import pytest
from PIL import Image

from vlm_grpo.tools import TOOLS, Arg, Tool, ToolError, ToolOutput, get_tool, get_tools, register_tool
from vlm_grpo.tools.calls import CallError, has_call, parse_call
from vlm_grpo.tools.crop import crop, pixel_box, zoom
from vlm_grpo.tools.runner import run_tool

TOOLSET = get_tools(["crop", "zoom"])
CALL = '<tool_call>{"name": "crop", "arguments": {"box": [0.25, 0, 0.75, 0.5]}}</tool_call>'


def image(width=200, height=100):
    picture = Image.new("RGB", (width, height), "white")
    picture.putpixel((width - 1, height - 1), (255, 0, 0))
    return picture


def test_a_well_formed_call_is_read_with_the_tools_defaults():
    text = "<think>the objects are small</think>" + CALL + " trailing words"
    call = parse_call(text, TOOLSET)
    assert call.name == "crop" and call.arguments == {"box": [0.25, 0, 0.75, 0.5]}
    assert text[: call.end].endswith("</tool_call>") and has_call(text)
    body = '{"name": "zoom", "arguments": {"box": [1, 2, 30, 40], "coordinates": "pixel"}}'
    spaced = f"<tool_call>\n  {body}\n</tool_call>"
    assert parse_call(spaced, TOOLSET).arguments["coordinates"] == "pixel"


@pytest.mark.parametrize(
    "text, says",
    [
        ("I count 3 objects.", "no tool call"),
        ('<tool_call>{"name": "crop", "arguments": {"box": [0, 0, 1, 1]}}', "not closed"),
        ("<tool_call>{'name': 'crop', 'arguments': {}}</tool_call>", "not valid JSON"),
        ('<tool_call>{"name": "crop", "arguments": {"box": [0, 0, 1, 1],}}</tool_call>', "not valid JSON"),
        ('<tool_call>{"name": "crop", "arguments": {"box": [0, 0, 1, 1]}} extra</tool_call>', "not valid JSON"),
        ('<tool_call>["crop", {"box": [0, 0, 1, 1]}]</tool_call>', "JSON object"),
        ('<tool_call>{"name": "crop"}</tool_call>', "exactly the keys"),
        ('<tool_call>{"name": "crop", "arguments": {}, "why": 1}</tool_call>', "exactly the keys"),
        ('<tool_call>{"name": "crop", "name": "zoom", "arguments": {}}</tool_call>', "duplicate key in the tool call"),
        ('<tool_call>{"name": "rm -rf /", "arguments": {}}</tool_call>', "unknown tool 'rm -rf /'"),
        ('<tool_call>{"name": 7, "arguments": {}}</tool_call>', "unknown tool 7"),
        ('<tool_call>{"name": "crop", "arguments": [0, 0, 1, 1]}</tool_call>', "must be a JSON object"),
        ('<tool_call>{"name": "crop", "arguments": {}}</tool_call>', "needs the argument 'box'"),
        ('<tool_call>{"name": "crop", "arguments": {"box": [0, 0, 1, 1], "path": "/etc"}}</tool_call>', "no argument"),
        ('<tool_call>{"name": "crop", "arguments": {"box": [0, 0, 1]}}</tool_call>', "4 elements"),
        ('<tool_call>{"name": "crop", "arguments": {"box": "0 0 1 1"}}</tool_call>', "must be a list"),
        ('<tool_call>{"name": "crop", "arguments": {"box": [0, 0, true, 1]}}</tool_call>', "must be a number"),
        ('<tool_call>{"name": "crop", "arguments": {"box": [0, 0, NaN, 1]}}</tool_call>', "NaN is not a number"),
        ('<tool_call>{"name": "crop", "arguments": {"box": [0, 0, 1e999, 1]}}</tool_call>', "finite"),
        ('<tool_call>{"name": "crop", "arguments": {"box": [0,0,1,1], "image": 0.5}}</tool_call>', "integer"),
        ('<tool_call>{"name": "crop", "arguments": {"box": [0,0,1,1], "coordinates": "mm"}}</tool_call>', "one of"),
        ("<tool_call><tool_call>{}</tool_call></tool_call>", "another tool-call tag"),
        (CALL + CALL, "one tool call per turn"),
        ("</tool_call>" + CALL, "one pair of tags"),
        (CALL + "</tool_call>", "one pair of tags"),
        ("<tool_call>\u3000" + CALL[len("<tool_call>") :], "not valid JSON"),  # not JSON's whitespace
        ('<tool_call>{"name": "crop", "arguments": {"box": [0, 0, 1' + "9" * 400 + ", 1]}}</tool_call>", "digits"),
        ("<tool_call>" + "[" * 5000 + "</tool_call>", "characters long"),
        ("<tool_call>" + "[" * 1500 + "]" * 1500 + "</tool_call>", "characters long"),
        ("<tool_call>" + '{"a":' * 300 + "1" + "}" * 300 + "</tool_call>", "exactly the keys"),
    ],
)
def test_a_malformed_call_is_an_error_that_says_why(text, says):
    with pytest.raises(CallError, match=None) as caught:
        parse_call(text, TOOLSET)
    assert says in str(caught.value), str(caught.value)


def test_boxes_are_clamped_and_bad_ones_refused():
    assert pixel_box((200, 100), [0.25, 0, 0.75, 0.5]) == (50, 0, 150, 50)
    assert pixel_box((200, 100), [-10, -5, 500, 80], "pixel") == (0, 0, 200, 80)  # clamped to the image
    assert pixel_box((200, 100), [-0.5, 0.5, 1.5, 2.0]) == (0, 50, 200, 100)
    assert pixel_box((200, 100), [-1e308, 0, 1e308, 1]) == (0, 0, 200, 100)  # clamped before scaling
    for box, says in (
        ([0.75, 0, 0.25, 0.5], "empty"),  # inverted
        ([0.5, 0.5, 0.5, 0.9], "empty"),  # zero width
        ([1.2, 0, 1.5, 1], "empty"),  # wholly outside, clamped to nothing
        ([10, 10, 12, 50], "at least 4"),  # pixel box 2 wide
        ([0, 0, float("nan"), 1], "not finite"),
    ):
        coordinates = "pixel" if box[0] == 10 else "relative"
        with pytest.raises(ToolError, match=says):
            pixel_box((200, 100), box, coordinates)


def test_crop_and_zoom_return_the_region_and_say_where_it_is():
    picture = image()
    out = crop([picture], [0.5, 0.5, 1, 1])
    (region,) = out.images
    assert region.size == (100, 50) and region.getpixel((99, 49)) == (255, 0, 0)
    assert out.text == "crop of image 0 at pixels [100, 50, 200, 100] (100x50)"
    zoomed = zoom([picture], [0.5, 0.5, 1, 1], factor=3)
    assert zoomed.images[0].size == (300, 150) and zoomed.text.endswith("scaled 3x to 300x150")
    large = crop([image(2000, 1000)], [0, 0, 1, 1])  # 2e6 px: scaled down to the cap, and it says so
    assert large.images[0].width * large.images[0].height <= 1024 * 1024 and "scaled 0.72x" in large.text
    assert run_tool(TOOLS.get("crop"), [image(2000, 1000)], {"box": [0, 0, 1, 1]}).ok
    with pytest.raises(ToolError, match="there is no image 2"):
        crop([picture, picture], [0, 0, 1, 1], image=2)
    with pytest.raises(ToolError, match="outside 1 to 4"):
        zoom([picture], [0, 0, 1, 1], factor=9)


def test_the_runner_turns_every_failure_into_an_error_turn():
    picture = image()
    assert run_tool(TOOLS.get("crop"), [picture], {"box": [0, 0, 0.5, 0.5]}).output.images[0].size == (100, 50)
    refused = run_tool(TOOLS.get("crop"), [picture], {"box": [0.9, 0, 0.1, 1]})
    assert not refused.ok and "empty" in refused.error and not refused.raised


def _slow(images, seconds):
    time.sleep(seconds)
    return ToolOutput("done")


def _greedy(images, megabytes):
    return ToolOutput(str(len(bytearray(megabytes * 2**20))))


def _wrong(images):
    return "not an output"


def _buggy(images):
    raise ToolError("the caption service said no")


def _crashes(images):
    return 1 / 0


class _NotAnImage:
    size = (1, 1)


def _fake_image(images):
    return ToolOutput("", (_NotAnImage(),))


def test_a_users_tool_runs_isolated_with_bounded_time_and_memory():
    slow = Tool("slow", "sleeps", {"seconds": Arg("number")}, _slow)
    assert run_tool(slow, [], {"seconds": 0.0}).output.text == "done"
    timed_out = run_tool(slow, [], {"seconds": 30}, timeout_s=0.5)
    assert timed_out.raised and "longer than 0.5 s" in timed_out.error
    greedy = Tool("greedy", "allocates", {"megabytes": Arg("integer")}, _greedy)
    assert run_tool(greedy, [], {"megabytes": 1}, memory_mb=2048).ok
    starved = run_tool(greedy, [], {"megabytes": 8000}, memory_mb=2048)
    assert starved.raised and "MemoryError" in starved.error
    assert "not a ToolOutput" in run_tool(Tool("wrong", "", {}, _wrong), [], {}).error
    said_no = run_tool(Tool("buggy", "", {}, _buggy), [], {})
    assert said_no.error == "the caption service said no" and not said_no.raised
    crashed = run_tool(Tool("crashes", "", {}, _crashes), [], {})
    assert crashed.raised and "ZeroDivisionError" in crashed.error
    assert "not a PIL image" in run_tool(Tool("fake", "", {}, _fake_image), [], {}).error


def test_a_tools_schema_is_checked_when_it_is_declared():
    with pytest.raises(ValueError, match="kind is one of"):
        Arg("tuple")
    with pytest.raises(ValueError, match="not one of its arguments"):
        Tool("t", "", {"box": Arg("array")}, _crashes, defaults={"colour": "red"})


def users_tool() -> Tool:
    return Tool("caption", "a fixed caption", {}, lambda images: ToolOutput("a red dot"))


def test_a_users_tool_plugs_in_by_registration_or_by_import_path():
    assert get_tool("tests.tools.test_tools:users_tool").name == "caption"
    with pytest.raises(ValueError, match="unknown tool 'caption'"):
        get_tool("caption")
    register_tool(users_tool())
    try:
        assert set(get_tools(["caption", "crop", "crop"])) == {"caption", "crop"}
        assert parse_call('<tool_call>{"name": "caption", "arguments": {}}</tool_call>', get_tools(["caption"]))
    finally:
        TOOLS._entries.pop("caption")
    with pytest.raises(ValueError, match="must return a vlm_grpo.tools.Tool"):
        get_tool("tests.tools.test_tools:image")
    assert TOOLS.get("zoom").signature().startswith("zoom(box: array, coordinates: string?, image: integer?")


def test_a_written_call_reads_back_as_the_same_call():
    from vlm_grpo.tools.calls import write_call

    call = {"name": "crop", "arguments": {"box": [0.5, 0.0, 1.0, 0.5]}}
    text = write_call(call)
    assert text == '<tool_call>{"name": "crop", "arguments": {"box": [0.5, 0.0, 1.0, 0.5]}}</tool_call>'
    read = parse_call(text, get_tools(["crop"]))
    assert (read.name, read.arguments["box"], read.end) == ("crop", [0.5, 0.0, 1.0, 0.5], len(text))


@pytest.mark.parametrize(
    "text, answer",
    [
        ('<tool_call>{"name": "crop", "arguments": {"box": [0, 0.5, 0.5, 1]}}</tool_call>', ""),
        ('I look. <tool_call>{"box": [1, 2]}</tool_call> <answer>3</answer>', "I look.  <answer>3</answer>"),
        ('<answer>4</answer><tool_call>{"name": "crop", "arguments": {"box": [0, 0', "<answer>4</answer>"),
        ("<tool_call>a</tool_call>5<tool_call>b</tool_call>6", "56"),
        ("no call at all: 7", "no call at all: 7"),
        ("</tool_call>8", "</tool_call>8"),  # a stray closing tag opens nothing
        ("<tool_call><tool_call>9</tool_call>10", "10"),  # the first closing tag ends the block
        ("", ""),
    ],
)
def test_an_answer_is_never_read_from_inside_a_call(text, answer):
    from vlm_grpo.tools.calls import outside_calls

    assert outside_calls(text) == answer


def test_where_a_policy_looked_is_read_from_its_transcripts():
    import importlib.util

    from support import ROOT

    path = ROOT / "scripts" / "tool_cells.py"
    spec = importlib.util.spec_from_file_location("tool_cells", path)
    cells = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cells)
    crop_only = get_tools(["crop"])
    turn = "\n<|im_start|>user\n<tool_response>crop of image 0</tool_response><|im_end|>\n<answer>4</answer>"
    assert cells.first_box(CALL + turn, crop_only) == [0.25, 0, 0.75, 0.5]
    assert cells.first_box("<answer>4</answer>", crop_only) is None  # no call
    assert cells.first_box('<tool_call>{"name": "crop", "arguments": {"box": [0, 0', crop_only) is None  # cut
    assert cells.first_box('<tool_call>{"name": "rm", "arguments": {}}</tool_call>', crop_only) is None
    assert cells.first_box(CALL + CALL, crop_only) == [0.25, 0, 0.75, 0.5]  # the first of two turns' calls
    quarter = [0.5, 0.5, 1.0, 1.0]
    assert cells.inside(quarter, quarter) and cells.inside([0.55, 0.6, 0.9, 0.95], quarter)
    assert cells.inside([0.4, 0.5, 1.0, 1.0], quarter)  # most of it in the cell
    assert not cells.inside([0.25, 0.25, 0.75, 0.75], quarter)  # across four cells: in none
    assert not cells.inside([0, 0, 0.5, 0.5], quarter) and not cells.inside([0.6, 0.6, 0.6, 0.9], quarter)
    records = [
        {"sample_id": "a", "tool_calls": 1, "transcript": CALL + turn, "answer_present": True, "correct": True},
        {"sample_id": "b", "tool_calls": 1, "transcript": CALL + turn, "answer_present": False, "correct": False},
        {
            "sample_id": "b",
            "tool_calls": 0,
            "transcript": "<answer>4</answer>",
            "answer_present": True,
            "correct": True,
        },
    ]
    # CALL crops [0.25, 0, 0.75, 0.5]: half of it lies in cell a, none in cell b.
    tally = cells.count(records, {"a": [0.0, 0.0, 0.5, 0.5], "b": [0.5, 0.5, 1.0, 1.0]}, crop_only)
    assert tally["right_cell"] == {"answers": 1, "answered": 1, "correct": 1}
    assert tally["elsewhere"] == {"answers": 1, "answered": 0, "correct": 0}
    assert tally["no_valid_call"] == {"answers": 1, "answered": 1, "correct": 1}
    assert tally["top_boxes"] == [("[0.25, 0, 0.75, 0.5]", 2)]
    with pytest.raises(ValueError, match="no transcript"):  # records evaluated before transcripts were kept
        cells.count([{"sample_id": "a", "tool_calls": 1, "answer_present": True, "correct": True}], {}, crop_only)
