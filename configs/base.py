"""Every config field the trainer reads, with its default. Other config files start from `base_config()`.

Not a runnable recipe by itself (see configs/default.py and configs/medmnist.py); listing every field here
is what lets `--config.a.b=value` overrides be checked, and typos be caught, before anything runs.
"""

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
    """All fields with neutral defaults."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic"           # 'synthetic' | 'medmnist' | 'drive' | 'chase_db1' | 'isbi2012' | 'seg_folders'
    c.data.subset = "default"           # medmnist subset (e.g. 'pneumoniamnist') or synthetic variant
    # 'custom': your own images built by `python -m launch.prepare_data --name NAME` (subset = NAME)
    c.data.source_size = 28             # stored image size to read (MedMNIST: 28, 64, 128, 224)
    c.data.input_size = 0               # model input size after resizing; 0 = the model's default
    c.data.resize_method = "bilinear"   # 'bilinear' | 'nearest' (the MedMNIST "(224)" rows use nearest)
    c.data.manual_dir = config_dict.placeholder(str)  # folder with <subset>.npz ($MEDTL_MEDMNIST_DIR)
    c.data.data_dir = config_dict.placeholder(str)    # TFDS folder ($MEDTL_DATA_DIR, ~/.cache/medtl_jax/tfds)
    c.data.val_count = -1               # segmentation folders: training images held out for validation; -1 = default
    # Training subsets (medtl_jax/data/subsets/training_subset.py): sites first, then a nested stratified fraction.
    c.data.train_fraction = 1.0         # share of training examples (images for segmentation) used, per class
    c.data.fraction_seed = 0            # which subset; independent of c.seed, so seeds vary training only
    c.data.train_sites = ()             # site names or ids for training AND validation; () = all; test stays whole

    c.augment = ml_collections.ConfigDict()
    c.augment.enabled = True
    c.augment.flip = True
    c.augment.rotate_degrees = 10.0
    c.augment.crop_scale = 1.0          # random-resized-crop minimum area fraction; 1.0 = no crop
    c.augment.brightness = 0.0
    c.augment.contrast = 0.0
    # Segmentation only, for robustness to another site's camera (0 = off): gamma in [1-v, 1+v], one gain
    # per colour channel in [1-v, 1+v], Gaussian blur of sigma up to v pixels on half the patches.
    c.augment.gamma = 0.0
    c.augment.channel_gain = 0.0
    c.augment.blur = 0.0

    c.model = ml_collections.ConfigDict()
    c.model.name = "efficientnet_lite0"
    c.model.init = "imagenet"           # 'imagenet' | 'scratch' | 'mean_var' | weight-store name | file path
    c.model.in_channels = 3             # 1: gray images into a folded RGB stem (medtl_jax.weights.channels)
    c.model.aux_loss_weight = 0.0       # inception_v3 only: weight of the auxiliary classifier's loss (0.4)
    c.model.stem = "imagenet"           # ResNets only: 'imagenet' (7x7/2 + max-pool) | 'cifar' (3x3/1)
    c.model.weights_file = config_dict.placeholder(str)  # local source weights (.pth) instead of a download
    c.model.weights_dir = config_dict.placeholder(str)   # weight store ($MEDTL_WEIGHTS_DIR)
    c.model.dropout_rate = -1.0         # before the head; -1 = the model's default
    c.model.dtype = "float32"

    c.task = ml_collections.ConfigDict()
    c.task.ordinal_head = "coral"       # ordinal datasets: 'coral' (rank-consistent K-1 logits) | 'dense' (softmax)

    c.loss = ml_collections.ConfigDict()
    c.loss.imbalance = "none"           # medtl_jax.tasks.classification.losses.IMBALANCE_STRATEGIES (e.g. 'focal', 'balanced_sampling')
    c.loss.focal_gamma = 2.0
    c.loss.focal_alpha = "none"         # focal's class weights: 'none' | 'inverse' | 'effective_number'
    c.loss.cb_beta = 0.999              # class-balanced loss: effective-number beta
    c.loss.la_tau = 1.0                 # logit adjustment temperature
    c.loss.segmentation = "dice_ce"     # 'ce' | 'dice' | 'dice_ce' | 'focal'

    c.transfer = ml_collections.ConfigDict()
    c.transfer.mode = "finetune"        # 'finetune' | 'linear_probe' | 'freeze_stages'
    c.transfer.freeze_stages = 0        # freeze_stages: the first k stages (stem first) stay fixed
    c.transfer.layer_decay = 1.0        # layer-wise lr decay per stage below the head; 1.0 = off
    c.transfer.bn = "train"             # 'train' (batch statistics) | 'frozen' (running statistics, not updated)
    c.transfer.transfusion_stages = 0   # partial transfusion: pretrained stages < k, random above; 0 = all

    c.segmentation = ml_collections.ConfigDict()
    c.segmentation.decoder = "unet"     # 'unet' | 'fcn'
    c.segmentation.patch_size = 96      # training crop side
    c.segmentation.patches_per_image = 8  # random patches per training image per epoch
    c.segmentation.foreground_fraction = 0.5  # chance a patch is centred on a foreground pixel
    c.segmentation.scale = 1.0          # resize whole images by this factor first (masks nearest)
    c.segmentation.fov_diameter = 0     # >0: resize each image so its field of view is this wide (replaces scale)
    c.segmentation.intensity = "none"   # per-image mapping: 'none' | 'standardize' | 'clahe' | 'green_clahe'
    c.segmentation.overlap = 0.5        # sliding-window inference overlap
    c.segmentation.window = 0           # inference window; 0 = patch_size

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"          # 'sgd' | 'adam' | 'adamw'
    c.optimizer.lr = 1e-3
    c.optimizer.weight_decay = 0.01
    c.optimizer.momentum = 0.9          # sgd only
    c.optimizer.nesterov = False        # sgd only
    c.optimizer.grad_clip_norm = 0.0    # 0 = off

    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "warmup_cosine"   # 'constant' | 'warmup_cosine' | 'multistep'
    c.schedule.warmup_epochs = 1.0
    c.schedule.warmup_steps = -1        # warm-up in optimizer steps; -1 = warmup_epochs' worth
    c.schedule.final_lr_fraction = 0.0  # warmup_cosine: end lr as a fraction of the peak
    c.schedule.milestones_epochs = (50, 75)  # multistep: epochs where lr is multiplied by decay_factor
    c.schedule.decay_factor = 0.1

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 10
    c.train.steps = 0                   # >0: a recipe in optimizer steps; epochs = ceil(steps / steps per epoch)
    c.train.patience = 0                # early stopping after this many validations without improvement; 0 = off
    c.train.ema_decay = 0.0             # >0: EMA of params and BN statistics, validated beside the raw weights
    c.train.batch_size = 32             # global batch, split over devices and processes
    c.train.eval_batch_size = 128
    c.train.log_every_steps = 20
    c.train.grad_accum_steps = 1        # micro-batches per step: same update as the full batch, less memory
    c.train.checkpoint_every_steps = 0  # extra 'latest' checkpoints mid-epoch (0 = at epoch ends only)
    c.train.select_metric = "auto"      # validation metric picking the tested checkpoint; auto = auc (dice for masks)

    c.eval = ml_collections.ConfigDict()
    c.eval.threshold = 0.5              # binary/multilabel decision threshold for accuracy
    c.eval.bootstrap_samples = 1000     # for the 95% CIs in results.json
    c.eval.tta_flips = False            # test-time augmentation: average with the horizontally flipped image

    c.mesh = ml_collections.ConfigDict()
    c.mesh.num_devices = 0              # 0 = all devices
    c.mesh.batch_norm = "global"        # BN batch statistics: 'global' (whole batch, = SyncBN) | 'per_device'
    return c
