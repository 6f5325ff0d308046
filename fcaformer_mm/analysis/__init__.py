"""The laboratory: code that measures FcaFormer, apart from the product.

Nothing else in :mod:`fcaformer_mm` imports this package, and importing it
imports none of its modules; the tools of ``tools/analysis_tools`` and
``tools/misc`` are command lines over them:

- :mod:`.models`: the measured models (dense backbones with their UperNet
  recipes, whole models of a config) and the calls the metrics time;
- :mod:`.benchmark`: latency, throughput, training step, ``torch.compile``
  and memory, models interleaved (``benchmark.py``);
- :mod:`.edge_table`: the paper's edge-device table of classifiers, the
  published figures and the inference memory;
- :mod:`.runtimes`: eager, ONNX Runtime and ``torch.compile`` runners of a
  model (``benchmark.py --runtime``);
- :mod:`.rss`: peak resident memory of a process (Linux);
- :mod:`.flops`: parameters and MACs, mmcv 1.x's nn-module rules and
  ``mmengine.analysis.FlopAnalyzer`` (``get_flops.py``);
- :mod:`.profile`: saved activations and operator profiles of a training
  step, inference profiles (``profile_train_step.py``,
  ``profile_inference.py``);
- :mod:`.official`: the official code, loaded from a local checkout;
- :mod:`.seeded`: deterministic weights, inputs and models;
- :mod:`.compare`: ours against the official code (``compare_official.py``);
- :mod:`.golden`: the golden fixtures of the tests, remade from the
  official code (``make_golden_fixtures.py``).
"""
