"""Producers of COCO-format data: the synthetic sets (synthetic/) and the MS COCO download (coco_download.py).

The engine (captioning/) reads what they write and imports none of them."""
