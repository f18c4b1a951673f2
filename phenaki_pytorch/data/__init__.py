"""Video/image I/O, datasets and synthetic toy data for phenaki_pytorch."""

from .datasets import CaptionedVideoDataset, ImageDataset, UnreadableFileWarning, VideoDataset, collate_videos
from .pretokenize import PretokenizedDataset, collate_tokens, pretokenize
from .synthetic import COLORS, DIRECTIONS, SHAPES, SyntheticCaptionedVideos
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

__all__ = [
    "COLORS",
    "DIRECTIONS",
    "IMAGE_EXTS",
    "SHAPES",
    "VIDEO_EXTS",
    "CaptionedVideoDataset",
    "ImageDataset",
    "PretokenizedDataset",
    "SyntheticCaptionedVideos",
    "UnreadableFileWarning",
    "VideoDataset",
    "VideoReadError",
    "collate_tokens",
    "collate_videos",
    "pretokenize",
    "read_image",
    "read_video",
    "read_video_clip",
    "save_image",
    "save_video",
    "video_encoder_for",
    "video_grid",
]
