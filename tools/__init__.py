"""Developer tools beside the engine: the benchmark (bench.py), the COCO-scale rehearsal (rehearse_coco.py), the
notebooks' runner (demo.py) and an independent second generator of COCO-format sets (other_generator.py)."""
