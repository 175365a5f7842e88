"""Captioning one image or many: finding images, batched captioning, writing captions safely."""
