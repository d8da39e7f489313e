"""ImageNet (ILSVRC-2012) data settings shared by the ImageNet configs; not a config.

TFDS 'imagenet2012' needs the ILSVRC2012 tars in <data_dir>/downloads/manual and
`tfds build imagenet2012 --data_dir=<data_dir>` once; it is not downloadable.
"""

IMAGENET_TRAIN_EXAMPLES = 1_281_167


def use_imagenet(c, *, batch_size: int, image_size: int = 224):
    """Points ``c`` at ImageNet with global ``batch_size`` and ``image_size`` crops."""
    c.dataset = "imagenet2012"
    c.train_split = "train"
    c.eval_split = "validation"  # the 50,000 labelled validation images
    c.cache = False  # ~140 GB of JPEGs: read from disk every epoch
    c.shuffle_buffer = 10_000  # of encoded JPEGs (~1 GB); images decode after shuffling
    c.image_size = image_size
    c.augment = "default"  # random-resized crop + flip; center crop for eval
    c.batch_size = batch_size
    c.eval_batch_size = 1024  # divisible by any power-of-two device count up to 1024
    c.steps_per_eval = -1  # once per epoch
    c.checkpoint_every_steps = IMAGENET_TRAIN_EXAMPLES // batch_size  # once per epoch
    c.log_every_steps = 100
    return c
