from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version = {}
exec((ROOT / "marker_ls_plugin" / "__init__.py").read_text(), version)

setup(
    name="marker-ls-plugin",
    version=version["__version__"],
    description="Label Studio plugin: surya OCR pre-annotation, fine-tuning dataset export and fine-tuning runs",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    python_requires=">=3.10",
    packages=find_packages(include=["marker_ls_plugin", "marker_ls_plugin.*"]),
    include_package_data=True,
    package_data={"marker_ls_plugin": ["templates/marker_ls_plugin/*.html", "static/marker_ls_plugin/*"]},
    install_requires=[
        "label-studio>=1.23,<1.24",
        "label-studio-sdk>=2.1,<3",
        # As Label Studio 1.23 pins them.
        "django-rq>=3.1,<3.2",
        "rq>=2.6,<2.7",
        "redis>=5.2,<5.3",
        "torch>=2.7,<3",
        "transformers>=4.57,<4.58",
        # surya-ocr 0.17.1's own run-time needs. surya itself is installed with --no-deps (README,
        # Installation): its Pillow<11 and opencv 4.11 pins contradict Label Studio's.
        "einops",
        "filetype",
        "platformdirs",
        "pydantic-settings>=2",
        "pypdfium2==4.30.0",
        "python-dotenv",
        "click",
        # The offline CPU engine: its PP-OCR models ship inside the rapidocr wheel, which does not declare onnxruntime.
        "rapidocr>=3,<4",
        "onnxruntime",
        # Fine-tune runs score CER/WER with it (training/metrics.py).
        "jiwer>=3",
        # Imported by the package directly; the packages above already require them (versions are theirs).
        "Django",
        "djangorestframework",
        "huggingface-hub",
        "httpx",
        "numpy",
        "opencv-python-headless",
        "Pillow",
        "requests",
        "safetensors",
    ],
    extras_require={
        # dataset.export.load_hf_dataset: an exported dataset as a Hugging Face DatasetDict.
        "hf": ["datasets"],
        "dev": [
            "pytest>=8",
            "pytest-timeout",
            "rapidfuzz",
            "datasets",
            "playwright>=1.50,<2",
            "ruff",
        ],
    },
    entry_points={"console_scripts": ["marker-ls=marker_ls_plugin.cli:main"]},
    classifiers=[
        "Framework :: Django",
        "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
        "Programming Language :: Python :: 3",
    ],
)
