"""The in-process caption backend: a Hugging Face vision-language model (Qwen2-VL / Qwen2.5-VL) from a local
folder or the hub cache, answering batches of samples' frames with greedy decoding.

Finding the model (`model_folder`, `weights_sha256`) needs no transformers: the driver checks and hashes the
weights before anything is written; `HFCaptioner` loads them where the work runs (a GPU actor, or the CPU).
Nothing is downloaded: a missing model is a WeightsMissing naming it and the command that fetches it.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from curate.caption.client import Answer, CaptionFailure
from curate.weightfile import WeightsMissing, file_digest, hf_cached, hf_hub_cache_dir

MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")  # config.json model_type of the families this backend is tested on
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def model_folder(model: str) -> Path:
    """The folder holding `model`: a local folder, else a hub id's snapshot in the Hugging Face cache. Raises
    WeightsMissing (naming the model and how to get it) when neither has it, ValueError for another family."""
    path = Path(model).expanduser()
    if path.is_dir():
        folder = path.resolve()
    elif REPO_ID.match(model) and not path.exists():
        config = hf_cached(model, ("config.json",))
        if config is None:
            raise WeightsMissing(
                f"--model {model} is not a local folder and not in the Hugging Face cache {hf_hub_cache_dir()}; "
                f"nothing is downloaded here: fetch it with `hf download {model}` (huggingface_hub's CLI; set "
                f"HF_HOME or HF_HUB_CACHE where the cache lives), or pass the folder of a saved model")
        folder = config.parent
    else:
        raise WeightsMissing(f"--model {model}: no such model folder (a folder saved with save_pretrained, or a "
                             f"Hugging Face id such as Qwen/Qwen2.5-VL-7B-Instruct in the hub cache)")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise WeightsMissing(f"--model {model}: {folder} has no config.json (not a saved transformers model)")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"--model {model} is a {model_type!r} model; --backend hf runs {', '.join(MODEL_TYPES)} "
                         f"(Qwen2-VL, Qwen2.5-VL); serve other models behind --endpoint")
    weight_files(folder, model)
    return folder


def weight_files(folder: Path, model: str) -> list[Path]:
    """The model's weight files; WeightsMissing when there are none or an index names a shard that is absent
    (an interrupted download)."""
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)})
    for index in INDEX_FILES:
        if (folder / index).is_file():
            shards = set(json.loads((folder / index).read_text())["weight_map"].values())
            absent = sorted(s for s in shards if not (folder / s).is_file())
            if absent:
                raise WeightsMissing(f"--model {model}: {folder} lacks {', '.join(absent)} listed in {index} (an "
                                     f"interrupted download? fetch it again with `hf download {model}`)")
    if not files:
        raise WeightsMissing(f"--model {model}: {folder} holds no weights ({' or '.join(WEIGHT_PATTERNS)})")
    return files


def weights_sha256(folder: str | Path) -> dict[str, str]:
    """SHA-256 of every weight file, by file name (hashed once per process: curate.weightfile.file_digest)."""
    return {p.name: file_digest(p) for p in weight_files(Path(folder), str(folder))}


def _images(jpegs: list[bytes]):
    from PIL import Image

    return [Image.open(io.BytesIO(jpeg)).convert("RGB") for jpeg in jpegs]


class HFCaptioner:
    """A loaded model and its processor: `answer(samples)` captions a batch of samples (each a list of JPEG
    frames) in one generate call, greedy. bf16 on a GPU, fp32 on the CPU. A batch that fails (out of memory, a
    frame the processor refuses) is retried one sample at a time, so a bad sample fails alone."""

    def __init__(self, folder: str | Path, prompt: str, max_tokens: int, device):
        import torch
        import transformers
        from transformers import AutoModelForImageTextToText, AutoProcessor

        transformers.logging.set_verbosity_error()  # load reports and generation notes are not the run's output
        transformers.utils.logging.disable_progress_bar()
        self.device = torch.device(device)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.prompt, self.max_tokens = prompt, max_tokens
        self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        self.processor.tokenizer.padding_side = "left"  # decoder-only batches: the answers start where prompts end
        # loaded on the CPU, then moved: a device_map would need accelerate
        self.model = AutoModelForImageTextToText.from_pretrained(folder, dtype=self.dtype, local_files_only=True)
        self.model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self.stop_ids = set(eos if isinstance(eos, list) else [eos]) - {None}

    def chat_text(self, frames: int) -> str:
        """The prompt in the model's chat template: the frames as images, then the instruction."""
        content = [{"type": "image"}] * frames + [{"type": "text", "text": self.prompt}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                  add_generation_prompt=True)

    def answer(self, samples: list[list[bytes]]) -> list[Answer | CaptionFailure]:
        try:
            return self._generate(samples)
        except Exception as error:  # noqa: BLE001 - narrowed below to the sample that causes it
            self._release()
            if len(samples) == 1:
                return [CaptionFailure("model_error", f"{type(error).__name__}: {str(error)[:300]}")]
            return [result for sample in samples for result in self.answer([sample])]

    def _generate(self, samples: list[list[bytes]]) -> list[Answer | CaptionFailure]:
        import torch

        inputs = self.processor(text=[self.chat_text(len(jpegs)) for jpegs in samples],
                                images=[_images(jpegs) for jpegs in samples], padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_tokens, do_sample=False)
        answers: list[Answer | CaptionFailure] = []
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        for row, new in enumerate(out[:, inputs["input_ids"].shape[1]:].tolist()):
            stop = next((i for i, token in enumerate(new) if token in self.stop_ids), None)
            tokens = new if stop is None else new[:stop]
            text = self.processor.decode(tokens, skip_special_tokens=True).strip()
            if not text:
                answers.append(CaptionFailure("empty_answer", "the model answered with no text"))
                continue
            answers.append(Answer(text, int(prompt_tokens[row]), len(tokens) + (stop is not None),
                                  "length" if stop is None else "stop", attempts=1))
        return answers

    def _release(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # after an out-of-memory batch: what it held goes back before the next one
