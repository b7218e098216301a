"""The captioning engine: config, data reading, models' weights, training, decoding, metrics, object scores, word maps
and figures. It reads datasets through their files, in COCO's formats (captions, instances, stuff), and imports no
dataset producer (prepare/); docs/DESIGN.md maps its modules."""
