"""`phenaki sample` and `phenaki story`: videos from a trained Phenaki folder."""

from __future__ import annotations

import math
from pathlib import Path

from .common import (
    CommandError,
    add_sampling_flags,
    check_device,
    check_output_path,
    finite_float,
    load_pretrained,
    non_negative_float,
    non_negative_int,
    positive_int,
    seeded_generator,
)

SECONDS_PER_HOUR = 3600


def register(sub) -> None:
    sample = sub.add_parser("sample", help="sample a video for a prompt")
    sample.add_argument("prompt", help="the text prompt")
    sample.add_argument("--frames", type=positive_int, default=17, help="frames to generate (default 17)")
    sample.add_argument("--out", default="sample.gif", help="output .gif / .mp4 / .webm (default sample.gif)")
    sample.add_argument("--batch-size", type=positive_int, default=1, help="videos to sample (laid out as a grid)")
    sample.add_argument("--temperature", type=non_negative_float, default=None, help="sampling temperature (default: the model's)")
    sample.add_argument("--prime", default=None, help="a video file whose last --prime-frames frames are continued")
    sample.add_argument(
        "--prime-frames", type=non_negative_int, default=3, help="frames of --prime to continue (default 3; 0: no priming)"
    )
    add_sampling_flags(sample)
    sample.set_defaults(func=cmd_sample)

    story = sub.add_parser("story", help="sample one long video from a story file (one scene a line: DURATION PROMPT)")
    story.add_argument("story", help="text file; DURATION in frames (16) or seconds (2s)")
    story.add_argument("--out", default="story.mp4", help="output .mp4 / .gif / .webm or a folder of PNGs (default story.mp4)")
    story.add_argument(
        "--prime-frames", type=non_negative_int, default=None,
        help="frames of context carried between windows (default: about half a window; 0: windows are independent)",
    )
    story.add_argument(
        "--max-frames", type=positive_int, default=None,
        help="refuse stories longer than this many frames (default: one hour at --fps)",
    )
    add_sampling_flags(story)
    story.add_argument(
        "--continuation-cond-scale", type=finite_float, default=None,
        help="guidance of the windows that continue from context (default: --cond-scale)",
    )
    story.set_defaults(func=cmd_story)


def _load_phenaki(args):
    from ..phenaki import Phenaki

    device = check_device(args.device)
    overrides = {"text_encoder": args.text_encoder} if args.text_encoder else {}
    return load_pretrained(Phenaki, args.checkpoint, "--checkpoint", map_location=device, **overrides).eval()


def _check_prompt(prompt: str, where: str) -> str:
    if not prompt.strip():
        raise CommandError(f"{where}: the prompt is empty")
    return prompt


# ---------------------------------------------------------------------- sample


def cmd_sample(args) -> int:
    from ..data import read_video, save_video

    _check_prompt(args.prompt, "prompt")
    check_output_path(args.out)
    if args.prime is not None and not Path(args.prime).is_file():
        raise CommandError(f"--prime {args.prime!r} does not exist or is not a file")
    phenaki = _load_phenaki(args)
    prime = None
    if args.prime is not None and args.prime_frames > 0:  # --prime-frames 0: no priming
        video = read_video(args.prime, image_size=phenaki.cvivit.image_size)
        if video.shape[1] < args.prime_frames:
            raise CommandError(
                f"--prime-frames {args.prime_frames}: {args.prime!r} has only {video.shape[1]} frames"
            )
        prime = video[:, video.shape[1] - args.prime_frames :][None]
    video = phenaki.sample(
        texts=[args.prompt] * args.batch_size,
        num_frames=args.frames,
        cond_scale=args.cond_scale,
        steps=args.steps,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        prime_frames=prime,
        generator=seeded_generator(args.seed),
        show_progress=True,
    )
    path = save_video(video, args.out, fps=args.fps)
    print(f"wrote {path} ({video.shape[0]} x {video.shape[2]} frames of {video.shape[3]}x{video.shape[4]})")
    return 0


# ---------------------------------------------------------------------- story


def parse_story(path: str) -> list[tuple[str, int | float]]:
    """One scene a line: `DURATION PROMPT`, DURATION in frames (`16`) or seconds (`2s`, `2.5s`).
    Blank lines and lines starting with # are skipped. Durations are finite and positive."""
    return [(prompt, duration) for prompt, duration, _ in _read_story(path)]


def _read_story(path: str) -> list[tuple[str, int | float, int]]:
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"story file {path!r} does not exist")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise CommandError(f"story file {path!r} is not UTF-8 text") from None
    scenes: list[tuple[str, int | float, int]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        duration, _, prompt = line.partition(" ")
        prompt = prompt.strip()
        value = _duration(duration)
        if value is None or not prompt:
            raise CommandError(
                f"{path}:{number}: expected 'DURATION PROMPT' with DURATION a positive number of frames (16) or "
                f"seconds (2s), got {raw.strip()!r}"
            )
        scenes.append((prompt, value, number))
    if not scenes:
        raise CommandError(f"story file {path!r} holds no scenes")
    return scenes


def _duration(text: str) -> int | float | None:
    """`16` -> 16 frames, `2.5s` -> 2.5 seconds; None unless finite and positive."""
    try:
        value: int | float = float(text[:-1]) if text.endswith("s") else int(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return value


def plan_story(path: str, fps: float, max_frames: int | None) -> list[tuple[str, int]]:
    """Scenes of a story file as (prompt, frames), bounded by `max_frames` (default: one hour at `fps`)."""
    limit = max_frames if max_frames is not None else max(1, math.floor(SECONDS_PER_HOUR * fps))
    planned, total = [], 0
    for prompt, duration, number in _read_story(path):
        frames = duration if isinstance(duration, int) else round(duration * fps)
        if frames < 1:
            raise CommandError(f"{path}:{number}: {duration}s at --fps {fps:g} is less than one frame")
        total += frames
        if total > limit:
            bound = "--max-frames" if max_frames is not None else f"the default --max-frames (one hour at --fps {fps:g})"
            raise CommandError(
                f"{path}:{number}: the story reaches {total} frames here, more than {bound} = {limit}; "
                "pass a larger --max-frames to make it anyway"
            )
        planned.append((prompt, int(frames)))
    return planned


def cmd_story(args) -> int:
    from ..data.video_writer import VideoWriter
    from ..story import sample_story

    scenes = plan_story(args.story, args.fps, args.max_frames)
    check_output_path(args.out, allow_image=False)
    phenaki = _load_phenaki(args)
    with VideoWriter(args.out, fps=args.fps) as writer:  # frames go to the file as they are made
        story = sample_story(
            phenaki,
            scenes,
            prime_frames=args.prime_frames,
            cond_scale=args.cond_scale,
            continuation_cond_scale=args.continuation_cond_scale,
            steps=args.steps,
            top_k=args.top_k,
            top_p=args.top_p,
            generator=seeded_generator(args.seed),
            frame_sink=writer.write,
        )
    print(f"wrote {writer.path}: {story.num_frames} frames, {len(story.scenes)} scenes")
    for scene in story.scenes:
        print(f"  frames {scene.start:5d}-{scene.end - 1:5d}  {scene.prompt}")
    return 0

