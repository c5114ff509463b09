"""STAND-IN (tests): the official TranformerConfig's name and fields."""


class TranformerConfig:
    def __init__(self):
        self.raw_feat_dim = [32, 64, 128, 256]
        self.hidden_size = 128
        self.num_attention_heads = 4
        self.sampling_radius = 4
