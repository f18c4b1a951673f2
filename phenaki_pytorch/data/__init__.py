"""Video/image I/O, datasets and synthetic toy data for phenaki_pytorch."""

from .datasets import CaptionedVideoDataset, ImageDataset, UnreadableFileWarning, VideoDataset, collate_videos
from .mixed import MixedImageVideoDataset, MixedImageVideoStream, image_as_clip
from .pretokenize import PretokenizedDataset, collate_tokens, pretokenize
from .shards import SHARDS_META_FILE, ShardedDataset, write_shards
from .synthetic import (
    COLORS,
    DIRECTIONS,
    GLYPH_COLORS,
    GLYPH_HELD_OUT,
    GLYPH_HELD_OUT_COLOR_SHAPE,
    GLYPH_HELD_OUT_SHAPE_DIRECTION,
    GLYPH_SHAPES,
    SHAPES,
    GlyphSplits,
    SyntheticCaptionedVideos,
    SyntheticGlyphVideos,
    glyph_benchmark_splits,
)
from .video_io import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    VideoReadError,
    read_image,
    read_video,
    read_video_clip,
    save_image,
    save_video,
    video_encoder_for,
    video_grid,
)
from .video_writer import VideoWriter

__all__ = [
    "COLORS",
    "DIRECTIONS",
    "GLYPH_COLORS",
    "GLYPH_HELD_OUT",
    "GLYPH_HELD_OUT_COLOR_SHAPE",
    "GLYPH_HELD_OUT_SHAPE_DIRECTION",
    "GLYPH_SHAPES",
    "IMAGE_EXTS",
    "SHARDS_META_FILE",
    "SHAPES",
    "VIDEO_EXTS",
    "CaptionedVideoDataset",
    "GlyphSplits",
    "ImageDataset",
    "MixedImageVideoDataset",
    "MixedImageVideoStream",
    "PretokenizedDataset",
    "ShardedDataset",
    "SyntheticCaptionedVideos",
    "SyntheticGlyphVideos",
    "UnreadableFileWarning",
    "VideoDataset",
    "VideoReadError",
    "VideoWriter",
    "collate_tokens",
    "collate_videos",
    "glyph_benchmark_splits",
    "image_as_clip",
    "pretokenize",
    "read_image",
    "read_video",
    "read_video_clip",
    "save_image",
    "save_video",
    "video_encoder_for",
    "video_grid",
    "write_shards",
]
