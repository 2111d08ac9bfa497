#!/bin/sh
# Seeds of fuzz_audio: short clips in every format wisp synth writes (WAV 16/24-bit
# and float, FLAC, Ogg Vorbis, MP3, AIFF; 8-48 kHz, mono and stereo) and its corrupt
# kinds (truncated FLAC, text, empty, header only).
set -e
out=$1
tmp=$(mktemp -d)
"$BUILD"/bin/wisp synth -o "$tmp" --classes 8 --per-class 4 --min-seconds 0.05 \
    --max-seconds 0.2 --corrupt 4 --quiet
find "$tmp" -type f \( -name '*.wav' -o -name '*.flac' -o -name '*.ogg' -o -name '*.mp3' \
    -o -name '*.aiff' \) | while read -r f; do
    cp "$f" "$out/$(echo "$f" | sed "s|^$tmp/||; s|/|_|g")"
done
rm -rf "$tmp"
