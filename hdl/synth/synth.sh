#!/usr/bin/env bash
# Synthesises the NPU for a Xilinx 7-series part with Yosys and prints its resource counts.
#
#   hdl/synth/synth.sh [ROWSxCOLS]        (default 8x8)
#
# Buffer depths default to the RTL defaults (those of the ISA package); override them with
# ACT_DEPTH, WGT_DEPTH, ACC_DEPTH, OUT_DEPTH in the environment to synthesise a smaller part
# faster. The full log and the stat JSON land in $OUT (default hdl/synth/out/ROWSxCOLS).
set -euo pipefail

cfg="${1:-8x8}"
if [[ ! "$cfg" =~ ^([0-9]+)[xX]([0-9]+)$ ]]; then
  echo "usage: $0 ROWSxCOLS (e.g. 8x8)" >&2
  exit 2
fi
rows="${BASH_REMATCH[1]}"
cols="${BASH_REMATCH[2]}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rtl="$here/../rtl"
out="${OUT:-$here/out/${rows}x${cols}}"
mkdir -p "$out"

command -v yosys >/dev/null || { echo "yosys not found: apt-get install yosys" >&2; exit 1; }

# The package first: the modules refer to it by name.
files="$rtl/sinter_isa_pkg.sv"
for f in "$rtl"/*.sv; do
  [[ "$(basename "$f")" == sinter_isa_pkg.sv ]] || files="$files $f"
done

params="-set ROWS $rows -set COLS $cols"
for p in ACT_DEPTH WGT_DEPTH ACC_DEPTH OUT_DEPTH BUS_BYTES; do
  if [[ -n "${!p:-}" ]]; then params="$params -set $p ${!p}"; fi
done

cat > "$out/synth.ys" <<YS
read_verilog -sv $files
chparam $params sinter_npu
synth_xilinx -top sinter_npu -flatten
tee -q -o $out/stat.json stat -json
YS

start=$(date +%s)
if ! yosys -q -l "$out/yosys.log" -s "$out/synth.ys" >/dev/null 2>"$out/yosys.stderr"; then
  cat "$out/yosys.stderr" >&2
  echo "yosys failed; log in $out/yosys.log" >&2
  exit 1
fi
end=$(date +%s)

python3 - "$out/stat.json" "$rows" "$cols" "$((end - start))" <<'PY'
import json, re, sys
path, rows, cols, secs = sys.argv[1:]
text = open(path).read()
stat = json.loads(text[text.index("{"):])
design = stat.get("design") or next(iter(stat["modules"].values()))
cells = design.get("num_cells_by_type", {})
def count(pred):
    return sum(n for t, n in cells.items() if pred(t.lstrip("\\$")))
lut = count(lambda t: re.fullmatch(r"LUT[1-6]", t) is not None)
ff = count(lambda t: re.fullmatch(r"FD[RSCP]E(_1)?", t) is not None)
dsp = count(lambda t: t.startswith("DSP48"))
b36 = count(lambda t: t.startswith("RAMB36"))
b18 = count(lambda t: t.startswith("RAMB18"))
lutram = count(lambda t: re.fullmatch(r"RAM(32|64|128|256)[MX].*", t) is not None)
carry = count(lambda t: t.startswith("CARRY"))
print(f"config {rows}x{cols}: LUT {lut}  FF {ff}  DSP {dsp}  BRAM {b36 + b18 / 2:g} "
      f"(RAMB36 {b36}, RAMB18 {b18})  LUTRAM cells {lutram}  CARRY4 {carry}  [{secs} s]")
PY
