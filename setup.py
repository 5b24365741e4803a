from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("slicer_compile/__init__.py").read_text(), version)

setup(
    name="slicer-compile",
    version=version["__version__"],
    description="ONNX/TensorRT model-splitting compiler and runtime for split computing (SLICER codec)",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["slicer_compile", "slicer_compile.*"]),
    package_data={"slicer_compile.profile": ["devices.json"], "slicer_compile.select": ["codec_times.json"]},
    install_requires=[
        "numpy>=1.26",
        "click>=8.1",
        "rich>=13",
        "zstandard>=0.22",
        "onnx>=1.16",
        "onnxruntime>=1.18",
        "onnxruntime-extensions>=0.12",
        # graph surgery (codec nodes, engine contracts), as TensorRT's own samples do it
        "onnx-graphsurgeon>=0.5",
        "matplotlib>=3.7",
        # serve: HTTP parsing, limits and keep-alive from a well-kept server (llhttp inside)
        "aiohttp>=3.9",
        # the dense codec's entropy coder (ANS), rather than a hand-written one
        "constriction>=0.4",
    ],
    extras_require={
        # torch is pinned: an unpinned torch pulls a multi-GB CUDA build. The
        # dynamo exporter needs onnxscript.
        # transformers: LLM configs and weights (Llama family) for `slicer-compile llm`
        "torch": ["torch==2.13.0", "onnxscript>=0.3", "transformers>=4.45"],
        "test": ["pytest>=8", "hypothesis>=6.100", "torch==2.13.0", "onnxscript>=0.3", "transformers>=4.45",
                 "scikit-learn>=1.3", "tritonclient[http,grpc]>=2.40"],
        "gpu": ["cuda-python>=12"],
        # tritonclient: the KServe v2 client, and Triton's ModelConfig schema (in its grpc part)
        "triton": ["tritonclient[http,grpc]>=2.40"],
    },
    entry_points={"console_scripts": ["slicer-compile=slicer_compile.cli:main"]},
)
