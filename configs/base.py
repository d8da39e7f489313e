"""Defaults shared by every config. A model config starts from ``get_config()`` here
and overrides what its paper's recipe says. Names follow the Flax ImageNet example
where they overlap. Every key is checked by ``cnn_arch.validate`` before compiling.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # Model: a name from cnn_arch.models.names() and constructor overrides.
    c.model = "lenet5"
    c.model_kwargs = ml_collections.ConfigDict()  # e.g. {'norm': 'batch'}
    # BN statistics under data parallelism: 'global' = over the whole global batch (sync
    # BN, what SPMD jit gives); 'per_device' = each device's shard on its own, as in
    # classic multi-GPU training. For fixed sub-batches use model_kwargs.norm='ghost_batch'.
    c.bn_statistics = "global"
    c.half_precision = False  # bfloat16 compute, float32 params and BN statistics

    # Data: any TFDS image-classification dataset by name.
    c.dataset = "mnist"
    c.num_classes = -1  # -1 = from the dataset's label feature; segmentation must set it
    c.data_dir = ""  # '' = $TFDS_DATA_DIR or TFDS' default (~/tensorflow_datasets)
    c.train_split = "train"
    c.eval_split = "test"
    c.augment = "default"  # 'default' = the dataset's standard recipe, or 'none'
    c.shuffle_buffer = 50_000
    c.cache = True  # cache decoded examples in host memory (small datasets)
    c.image_size = 224  # side of the crops for variable-size images (ImageNet)
    c.download = False  # let TFDS download and prepare a missing dataset

    # Optimization.
    c.batch_size = 128  # global, over all devices and hosts
    c.eval_batch_size = 1000
    c.num_epochs = 10.0
    c.num_train_steps = -1  # -1 = from num_epochs
    c.optimizer = "sgd"  # sgd | adam | adamw | rmsprop
    c.learning_rate = 0.1
    c.lr_scaling = "none"  # 'linear' = learning_rate * batch_size / 256 (Goyal et al. 2017)
    c.schedule = "constant"  # constant | step | exponential | cosine
    c.warmup_epochs = 0.0
    c.lr_decay_epochs = ()  # 'step': epochs at which the rate is multiplied by lr_decay_factor
    c.lr_decay_factor = 0.1
    c.lr_decay_every_epochs = 1.0  # 'exponential': multiply by lr_decay_factor this often
    c.momentum = 0.9  # sgd momentum; rmsprop momentum
    c.nesterov = False
    c.adam_b1 = 0.9
    c.adam_b2 = 0.999
    c.rmsprop_decay = 0.9
    c.optimizer_eps = 1e-8
    c.weight_decay = 0.0
    c.weight_decay_mode = "l2"  # 'l2' = coupled (gradient term) | 'decoupled' (AdamW-style)
    c.weight_decay_on_norm_and_bias = False  # by default BN params and biases are not decayed
    c.label_smoothing = 0.0

    # Loop.
    c.log_every_steps = 100
    c.steps_per_eval = -1  # evaluate every this many steps; -1 = once per epoch
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.seed = 0
    c.on_nonfinite = "stop"  # inf/nan loss or gradient: "stop" with a message, or "skip" the update
    return c
