#!/usr/bin/env bash
# Makes sure the tools Sinter builds and tests with are installed: Rust (cargo), a C++ compiler,
# Verilator and zlib's headers (the RTL simulator and its waveform writer, needed to build the
# `sinter-sim` crate), Yosys (synthesis check, SINTER_NEED_YOSYS=1) and the Python packages the
# tests compare against (SINTER_NEED_PYTHON=1). Installs the missing Debian packages with apt-get
# when run as root (or with sudo); otherwise says exactly what is missing and stops.
set -euo pipefail

missing=()
command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v verilator >/dev/null 2>&1 || missing+=(verilator)
# The RTL models are built with FST waveform tracing, whose writer compresses with zlib.
[ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
if [ "${SINTER_NEED_YOSYS:-0}" = 1 ]; then
  command -v yosys >/dev/null 2>&1 || missing+=(yosys)
fi

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "error: missing ${missing[*]}; install them with: apt-get install ${missing[*]}" >&2
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${missing[*]} and no apt-get here; install them with your package manager" >&2
    exit 1
  fi
  echo "installing ${missing[*]} ..." >&2
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

verilator --version >/dev/null

# Python packages the tests use as independent references (ONNX's own test data and models,
# onnxruntime). Only needed for tests: SINTER_NEED_PYTHON=1.
if [ "${SINTER_NEED_PYTHON:-0}" = 1 ]; then
  command -v python3 >/dev/null 2>&1 || { echo "error: python3 not found (apt-get install python3 python3-pip)" >&2; exit 1; }
  if ! python3 -c "import numpy, onnx, onnxruntime" >/dev/null 2>&1; then
    echo "installing Python packages numpy onnx onnxruntime ..." >&2
    python3 -m pip install -q numpy onnx onnxruntime >&2 || {
      echo "error: could not install numpy onnx onnxruntime: run python3 -m pip install numpy onnx onnxruntime" >&2
      exit 1
    }
  fi
  if ! python3 -c "import tritonclient.http" >/dev/null 2>&1; then
    echo "installing Python package tritonclient[http] ..." >&2
    python3 -m pip install -q "tritonclient[http]" >&2 || {
      echo "error: could not install tritonclient: run python3 -m pip install 'tritonclient[http]'" >&2
      exit 1
    }
  fi
fi
