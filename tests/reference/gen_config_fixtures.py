#!/usr/bin/python3
"""Writes the JSON fixtures of tests/test_config.c the way the Python side writes them.

The adapters library is not installed here, so the adapter_config.json files are
built from the dataclass defaults of adapters v1.2 (adapter_config.py: BnConfig,
SeqBnConfig, LoRAConfig, IA3Config) and saved exactly as the library's
save_weights_config does: json.dump(config, f, indent=2, sort_keys=True), with
build_full_config's keys (config, hidden_size, model_class, model_name,
model_type, name, version). config.json mirrors openai/whisper-tiny's file on the
Hub plus the classification keys of WhisperForAudioClassification.
"""
import json
import os

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "config")

BN = dict(
    original_ln_before=False, original_ln_after=True, ln_before=False, ln_after=False,
    init_weights="bert", init_weights_seed=None, is_parallel=False, scaling=1.0, use_gating=False,
    residual_before_ln=True, adapter_residual_before_ln=False, inv_adapter=None,
    inv_adapter_reduction_factor=None, cross_adapter=False, leave_out=[], dropout=0.0,
    phm_layer=False, phm_dim=4, factorized_phm_W=True, shared_W_phm=False, shared_phm_rule=True,
    factorized_phm_rule=False, phm_c_init="normal", phm_init_range=0.0001, learn_phm=True,
    hypercomplex_nonlinearity="glorot-uniform", phm_rank=1, phm_bias=True, stochastic_depth=0.0,
)
SEQ_BN = dict(BN, original_ln_before=True, mh_adapter=False, output_adapter=True,
              non_linearity="relu", reduction_factor=16)
LORA = dict(architecture="lora", selfattn_lora=True, intermediate_lora=False, output_lora=False,
            leave_out=[], r=8, alpha=8, dropout=0.0, attn_matrices=["q", "v"], composition_mode="add",
            init_weights="lora", init_weights_seed=None, use_gating=False, vera_d=None, vera_b=None,
            dtype=None)
IA3 = dict(LORA, intermediate_lora=True, r=1, alpha=1, attn_matrices=["k", "v"],
           composition_mode="scale", init_weights="ia3")


def adapter_file(config, name, hidden):
    return {"config": config, "hidden_size": hidden, "model_class": "WhisperForAudioClassification",
            "model_name": "openai/whisper-tiny", "model_type": "whisper", "name": name,
            "version": "adapters.1.2.0"}


def dump(obj, *parts):
    with open(os.path.join(HERE, *parts), "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


dump(adapter_file(dict(SEQ_BN, leave_out=[3]), "speech_cls", 384), "adapter_seq_bn", "adapter_config.json")
dump(adapter_file(IA3, "ia3_cls", 384), "adapter_ia3", "adapter_config.json")

tiny = {
    "_name_or_path": "openai/whisper-tiny", "activation_dropout": 0.0, "activation_function": "gelu",
    "architectures": ["WhisperForConditionalGeneration"], "attention_dropout": 0.0,
    "begin_suppress_tokens": [220, 50257], "bos_token_id": 50257, "d_model": 384,
    "decoder_attention_heads": 6, "decoder_ffn_dim": 1536, "decoder_layerdrop": 0.0, "decoder_layers": 4,
    "decoder_start_token_id": 50258, "dropout": 0.0, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536,
    "encoder_layerdrop": 0.0, "encoder_layers": 4, "eos_token_id": 50257,
    "forced_decoder_ids": [[1, 50259], [2, 50359], [3, 50363]], "init_std": 0.02, "is_encoder_decoder": True,
    "max_length": 448, "max_source_positions": 1500, "max_target_positions": 448, "model_type": "whisper",
    "num_hidden_layers": 4, "num_mel_bins": 80, "pad_token_id": 50257, "scale_embedding": False,
    "torch_dtype": "float32", "transformers_version": "4.27.0.dev0", "use_cache": True, "vocab_size": 51865,
}
dump(tiny, "whisper_tiny.json")
cls = dict(tiny, architectures=["WhisperForAudioClassification"], use_weighted_layer_sum=True,
           classifier_proj_size=64, id2label={"0": "dog", "1": "rain", "2": "speech"},
           label2id={"dog": 0, "rain": 1, "speech": 2}, num_mel_bins=128, vocab_size=51866)
dump(cls, "whisper_cls.json")
print("fixtures written to", HERE)
