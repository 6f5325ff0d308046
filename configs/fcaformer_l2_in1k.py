# FcaFormer-L2 on ImageNet-1k, 224x224, the official 300-epoch recipe on
# 8 GPUs x 128 images (see _base_/fcaformer_in1k_recipe.py).
_base_ = ['./_base_/fcaformer_in1k_recipe.py']

model = dict(
    backbone=dict(arch='l2', drop_path_rate=0.1),
    head=dict(in_channels=480))
