#!/bin/sh
# Seeds of fuzz_json: every JSON file of the tree's fixtures and configs, plus the
# corner cases the parser has rules for (duplicate keys, trailing text, escapes).
set -e
out=$1
cp tests/data/config/*.json configs/*.json "$out"/
for d in tests/data/config/adapter_*; do cp "$d/adapter_config.json" "$out/${d##*/}.json"; done
printf '{"a": 1, "b": {"c": [1, 2.5, -3e-7, true, false, null]}, "a": 2}' >"$out"/dup.json
printf '{"s": "\\u00e9\\ud83d\\ude00\\n\\t\\"\\\\", "n": 1e308, "m": -0.0}' >"$out"/escapes.json
printf '[1, [2, [3, [4, {"x": {}}]]]] \n ' >"$out"/nested.json
printf '{"a": 1} {"b": 2}' >"$out"/trailing.json
