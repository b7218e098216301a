"""A small COCO-format set written by hand, as another program would: captions, instances (polygons, compressed and
uncompressed RLE, a crowd, an image with no objects, a category no caption names) and stuff, for the readers' tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

WIDTH, HEIGHT = 80, 60  # wider than tall: the centre crop leaves out 10 columns each side
CATEGORIES = [{"id": 5, "name": "dog", "supercategory": "animal"}, {"id": 9, "name": "red car",
                                                                    "supercategory": "vehicle"},
              {"id": 12, "name": "zebra", "supercategory": "animal"}]  # no caption names a zebra
STUFF = [{"id": 101, "name": "grass", "supercategory": "plant"}, {"id": 102, "name": "sky", "supercategory": "sky"}]
CAPTIONS = {1: ["a dog on the grass", "a brown dog", "one dog outside"],
            2: ["two red cars and a dog", "cars and a dog", "a dog near red cars"],
            3: ["an empty lawn", "grass and sky", "nothing but grass"],
            4: ["a crowd of dogs", "many dogs", "dogs everywhere"]}


def _rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (as crowd annotations use): run lengths of the column-major pixels, zeros first."""
    flat, counts, value, run = mask.flatten(order="F"), [], 0, 0
    for pixel in flat:
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def box_mask(x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[y:y + h, x:x + w] = 1
    return mask


def write_object_set(data_dir: Path, splits=("train", "val", "test"), stuff: bool = True) -> Path:
    """Four images per split: 1 a dog (polygon), 2 two red cars (compressed RLE) and a dog, 3 no objects, 4 a crowd
    of dogs (uncompressed RLE, iscrowd 1) whose centre lies outside the centre crop."""
    annotations = data_dir / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    for split in splits:
        folder = data_dir / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        images = []
        for image_id in CAPTIONS:
            name = f"{split}_{image_id}.png"
            Image.fromarray(np.full((HEIGHT, WIDTH, 3), 40 * image_id, dtype=np.uint8)).save(folder / name)
            images.append({"id": image_id, "file_name": name, "width": WIDTH, "height": HEIGHT})
        captions = [{"id": 10 * image_id + k, "image_id": image_id, "caption": text}
                    for image_id, texts in CAPTIONS.items() for k, text in enumerate(texts)]
        (annotations / f"captions_{split}.json").write_text(json.dumps({"images": images, "annotations": captions}))
        objects = [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [30, 20, 20, 20], "area": 400.0, "iscrowd": 0,
             "segmentation": [[30, 20, 50, 20, 50, 40, 30, 40]]},
            {"id": 2, "image_id": 2, "category_id": 9, "bbox": [12, 4, 16, 12], "area": 192.0, "iscrowd": 0,
             "segmentation": _rle(box_mask(12, 4, 16, 12))},
            {"id": 3, "image_id": 2, "category_id": 9, "bbox": [52, 40, 16, 12], "area": 192.0, "iscrowd": 0,
             "segmentation": _rle(box_mask(52, 40, 16, 12))},
            {"id": 4, "image_id": 2, "category_id": 5, "bbox": [34, 24, 12, 12], "area": 144.0, "iscrowd": 0,
             "segmentation": [[34, 24, 46, 24, 46, 36, 34, 36]]},
            {"id": 5, "image_id": 4, "category_id": 5, "bbox": [0, 0, 9, 60], "area": 540.0, "iscrowd": 1,
             "segmentation": _uncompressed(box_mask(0, 0, 9, 60))},
        ]
        (annotations / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": objects, "categories": CATEGORIES}))
        if stuff:
            backgrounds = [{"id": 100 + image_id, "image_id": image_id, "category_id": 101 if image_id != 3 else 102,
                            "bbox": [0, 0, WIDTH, HEIGHT], "area": float(WIDTH * HEIGHT), "iscrowd": 0,
                            "segmentation": _rle(box_mask(0, 0, WIDTH, HEIGHT))} for image_id in CAPTIONS]
            (annotations / f"stuff_{split}.json").write_text(json.dumps(
                {"images": images, "annotations": backgrounds, "categories": STUFF}))
    return data_dir
