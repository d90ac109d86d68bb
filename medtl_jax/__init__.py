"""medtl-jax: transfer learning for medical imaging in JAX/Flax.

The package is layered; each folder imports only the folders above it in this list
(tests/test_layers.py checks it):

  runtime/    atomic writes, downloads, multi-process start-up, mesh and shardings, preemption (SIGTERM,
              Ctrl-C), orbax checkpoints, metric logs, the run folder's files, one-line CLI errors
  models/     backbones, one file per family (resnet, vgg, alexnet, densenet, inception, efficientnet,
              efficientnet_lite, cbr), each exporting SPECS: one ModelSpec (spec) per name with everything
              about it (input, depth stages, stem, ImageNet checkpoint); the registry (MODELS, their union),
              stage lookups (stages), the U-Net/FCN segmenter; layers/ holds what families share (fast
              convolutions, pooling, the classifier head)
  weights/    foreign checkpoints -> flax variables (torch .pth without torch, Keras .h5), one name map per
              family, the weight store (LAYOUTS: a spec's checkpoint layout -> its converter), init
              sources, gray-input stem folding (channels, model_input)
  data/       types (DataInfo, DataBundle) and the registry (DATASETS, load_data); sources/ (MedMNIST,
              synthetic, segmentation folders, users' datasets), pipeline/ (grain batches, patches,
              balanced sampling), subsets/ (fractions, sites), ingest/ (image files, DICOM, manifests,
              grouped splits, prepare_custom)
  tasks/      the Task/Evaluator protocols and TaskFamily facts (base), label kind -> family (families);
              classification/ (task, ordinal CORAL, imbalance losses, metrics, evaluator) and
              segmentation/ (task, Dice/IoU/HD95, sliding-window prediction, evaluator)
  transfer/   init modes and parameter partitions (modes), the optimizer and schedule (optimizer)
  config/     a config file's k=v arguments (arguments), the one validation pass over a config (validate)
  train/      the trainer, what it takes from a task family (run_parts, families: classification_run,
              segmentation_run), one run's report.md
  inference/  restore a finished run, predict files and folders, Grad-CAM, cross-site evaluation
  sweep/      sweep specs, planning, status of run folders, the subprocess runner
  report/     study reports over a sweep folder: tables, statistics, figures

Add a backbone in models/ (a family file exporting SPECS + one MODELS line; its name map and LAYOUTS
entry in weights/), a dataset in data/sources/, a head or loss in tasks/, a transfer mode in transfer/, a
report figure in report/.
"""
