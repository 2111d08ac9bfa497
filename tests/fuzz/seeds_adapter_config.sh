#!/bin/sh
# Seeds of fuzz_adapter_config: the committed adapter directories' configs and the
# adapters library's LoRA / IA3 / bottleneck dicts (v1.2 and main-branch field sets).
set -e
out=$1
cp tests/data/config/adapter_seq_bn/adapter_config.json "$out"/seq_bn.json
cp tests/data/config/adapter_ia3/adapter_config.json "$out"/ia3.json
printf '%s' '{"config": {"architecture": "lora", "selfattn_lora": true, "intermediate_lora": true,
 "output_lora": true, "leave_out": [1], "r": 4, "alpha": 8, "dropout": 0.0,
 "attn_matrices": ["q", "k", "v"], "composition_mode": "add", "init_weights": "lora",
 "init_weights_seed": null, "use_gating": false, "use_dora": false, "vera_d": null,
 "vera_b": null, "dtype": null}, "hidden_size": 64, "model_class": "WhisperForAudioClassification",
 "model_name": null, "model_type": "whisper", "name": "lora_cls", "version": "adapters.1.2.0"}' \
    >"$out"/lora.json
printf '%s' '{"mh_adapter": true, "output_adapter": true, "reduction_factor": {"0": 8, "default": 16},
 "non_linearity": "swish", "original_ln_before": false, "is_parallel": true, "scaling": 2.0,
 "leave_out": [0, 3], "init_weights": "mam_adapter", "phm_dim": 4}' >"$out"/bn_dict.json
