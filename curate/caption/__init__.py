"""Captions from a vision-language model: frames -> one chat request per sample -> captions/<run>/ tables."""
