#!/bin/sh
# Seeds of fuzz_manifest: CSV and JSONL manifests under each option byte (see the harness).
set -e
out=$1
printf '\000path,label,duration\na.wav,x,1.5\nsub/b.flac,y,\n"c,d.wav",x,2\n' >"$out"/csv_keep
printf '\002path,label\na.wav,\nb.wav,10\n' >"$out"/csv_error
printf '\004file_name,label\na.wav,11\nb.wav,12\nc.wav,\n' >"$out"/csv_skip
printf '\010path,label\na.wav,a\nb.wav,10\n' >"$out"/csv_fixed
printf '\001{"path": "a.wav", "label": "x", "duration": 1.5}\n{"path": "b.wav", "label": 3}\n' \
    >"$out"/jsonl_keep
printf '\011{"path": "a.wav", "label": "b"}\n\n{"path": "c.wav", "label": null}\n' >"$out"/jsonl_fixed
printf '\005{"file_name": "a.wav", "label": 1e10}\n{"path": "b.wav", "duration": "inf"}\n' \
    >"$out"/jsonl_hostile
