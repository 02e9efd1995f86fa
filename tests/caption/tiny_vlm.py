"""A tiny randomly initialised Qwen2-VL saved with save_pretrained (weights, config, a byte-level BPE tokenizer
trained here on a few sentences, the image processor, a Qwen-style chat template), so the hf backend's real
loading path (`from_pretrained(folder)`) runs offline. Its captions are gibberish: tests check the mechanics."""

from __future__ import annotations

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
                 "{% for part in message['content'] %}"
                 "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
                 "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
                 "{% endfor %}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = ["Describe this video in one factual paragraph: the subjects, their actions and motion, the setting, "
          "the camera's movement and the visual style.", "A red ball rolls across a green field under a blue sky.",
          "Two people walk along a beach at sunset while the camera pans slowly to the left."]
PIXELS_PER_FRAME = 56 * 56  # frames are resized to at most this: 4x4 patches of 14 px, merged 2x2 into 4 tokens


def save_tiny_qwen2_vl(folder: str, seed: int = 0) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIAL_TOKENS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ids = {token: bpe.token_to_id(token) for token in SPECIAL_TOKENS}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=PIXELS_PER_FRAME),
                                 video_processor=Qwen2VLVideoProcessor(), tokenizer=tokenizer,
                                 chat_template=CHAT_TEMPLATE)
    # initializer_range 0.2 (not 0.02): the logits lie far apart, so a greedy pick never hinges on float rounding
    # (which differs with the batch's padding and the thread count)
    text = dict(vocab_size=bpe.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024, initializer_range=0.2,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
