#!/bin/sh
# Seeds of fuzz_hf_config: the committed HF config.json fixtures and a variant with
# every classification key.
set -e
out=$1
cp tests/data/config/whisper_*.json "$out"/
printf '%s' '{"model_type": "whisper", "d_model": 64, "encoder_layers": 2,
 "encoder_attention_heads": 4, "encoder_ffn_dim": 128, "num_mel_bins": 80,
 "max_source_positions": 1500, "classifier_proj_size": 16, "use_weighted_layer_sum": true,
 "num_labels": 3, "id2label": {"0": "a", "1": "b", "2": "c"},
 "label2id": {"a": 0, "b": 1, "c": "2"}, "activation_function": "gelu"}' >"$out"/cls3.json
