#!/bin/sh
# Seeds of fuzz_head_config: head_config.json as wisp writes it.
set -e
out=$1
printf '%s' '{"classifier_proj_size": 16, "d_model": 64, "id2label": {"0": "cat", "1": "dog",
 "2": "rain"}, "label2id": {"cat": 0, "dog": 1, "rain": 2}, "num_hidden_layers": 2,
 "num_labels": 3, "use_weighted_layer_sum": true}' >"$out"/head3.json
printf '%s' '{"classifier_proj_size": 256, "d_model": 384, "num_hidden_layers": 4,
 "num_labels": 2, "use_weighted_layer_sum": false}' >"$out"/head2.json
