"""HunyuanVideo 1.0 (text-to-video, HunyuanVideo-I2V, SkyReels-I2V): the first family."""
